/* The depthwise inner loops for one (element type, instruction set), instantiated by depthwise_tile.h.
 * Parameters (macros): DW_T element type, DW_NAME prefix, DW_VBYTES vector bytes, DW_ATTR target attribute,
 * DW_WB pixels per register block of the channel kernel, DW_GWT taps per weight-gradient pass, DW_RB vectors
 * per register block of the row kernel. Pointers need only the element type's alignment. */

typedef DW_T DW_CAT(DW_NAME, vec) __attribute__((vector_size(DW_VBYTES), aligned(sizeof(DW_T)), __may_alias__));

#define DW_VL ((int)(DW_VBYTES / sizeof(DW_T)))
#define DW_VPB ((int)(DW_BLOCK_BYTES / DW_VBYTES))
#define DW_INLINE DW_ATTR static inline __attribute__((always_inline))

/* One vector to memory; with stream, a non-temporal store (p aligned to the vector size): outputs larger than
 * the caches go to memory without first being read into them. */
DW_INLINE void DW_CAT(DW_NAME, store)(DW_T *p, DW_CAT(DW_NAME, vec) v, int stream)
{
#if DW_HAVE_STREAM
    if (stream) {
#if DW_VBYTES == 64
        if (sizeof(DW_T) == 4)
            _mm512_stream_ps((float *)p, (__m512)v);
        else
            _mm512_stream_pd((double *)p, (__m512d)v);
#elif DW_VBYTES == 32
        if (sizeof(DW_T) == 4)
            _mm256_stream_ps((float *)p, (__m256)v);
        else
            _mm256_stream_pd((double *)p, (__m256d)v);
#else
        if (sizeof(DW_T) == 4)
            _mm_stream_ps((float *)p, (__m128)v);
        else
            _mm_stream_pd((double *)p, (__m128d)v);
#endif
        return;
    }
#endif
    (void)stream;
    *(DW_CAT(DW_NAME, vec) *)p = v;
}

/* ---- channel kernels: lanes over 64 bytes of consecutive channels ---- */

/* nb pixels: out[j*ldo + l] = init[l] + sum_t a[t][a_off + j*a_step + l] * b[t][b_off + l]. */
DW_INLINE void DW_CAT(DW_NAME, channels_block)(const int nb, dw_index n_taps, const DW_T *const *a, dw_index a_off,
                                               dw_index a_step, const DW_T *const *b, dw_index b_off,
                                               const DW_T *init, DW_T *out, dw_index ldo, int stream)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    vec acc[DW_WB][DW_VPB];
    dw_index t;
    int j, v;

#pragma GCC unroll 16
    for (j = 0; j < nb; j++)
#pragma GCC unroll 4
        for (v = 0; v < DW_VPB; v++)
            acc[j][v] = *(const vec *)(init + v * DW_VL);
    for (t = 0; t < n_taps; t++) {
        const DW_T *ap = a[t] + a_off;
        const DW_T *bp = b[t] + b_off;
        vec w[DW_VPB];
        /* Keep ap in one register so the block's pixels are constant displacements from it (otherwise gcc hoists
         * one offset register per pixel out of the tap loop and runs out of registers). */
        __asm__("" : "+r"(ap));
#pragma GCC unroll 4
        for (v = 0; v < DW_VPB; v++)
            w[v] = *(const vec *)(bp + v * DW_VL);
#pragma GCC unroll 16
        for (j = 0; j < nb; j++)
#pragma GCC unroll 4
            for (v = 0; v < DW_VPB; v++)
                acc[j][v] += *(const vec *)(ap + j * a_step + v * DW_VL) * w[v];
    }
#pragma GCC unroll 16
    for (j = 0; j < nb; j++) {
#pragma GCC unroll 4
        for (v = 0; v < DW_VPB; v++)
            DW_CAT(DW_NAME, store)(out + v * DW_VL, acc[j][v], stream);
        out += ldo;
    }
}

/* count pixels, in ceil(count / DW_WB) register blocks of (nearly) equal size: every block keeps enough
 * independent accumulators to hide the FMA latency. a_step is a compile-time constant after inlining where the
 * callers below specialise it, so the addresses of a block's pixels are constant displacements. */
DW_INLINE void DW_CAT(DW_NAME, channels_run)(dw_index n_taps, const DW_T *const *a, dw_index a_off, dw_index a_step,
                                             const DW_T *const *b, dw_index b_off, const DW_T *init, dw_index count,
                                             DW_T *out, dw_index ldo, int stream)
{
    dw_index n_blocks = (count + DW_WB - 1) / DW_WB, i, j = 0;
    dw_index size = n_blocks ? count / n_blocks : 0, larger = n_blocks ? count % n_blocks : 0;
    for (i = 0; i < n_blocks; i++) {
        dw_index nb = size + (i < larger);
#define DW_BLOCK_CASE(n)                                                                                          \
    case n:                                                                                                       \
        if (n <= DW_WB)                                                                                           \
            DW_CAT(DW_NAME, channels_block)(n <= DW_WB ? n : 1, n_taps, a, a_off + j * a_step, a_step, b, b_off,  \
                                            init, out + j * ldo, ldo, stream);                                    \
        break;
        switch (nb) {
            DW_BLOCK_CASE(1)
            DW_BLOCK_CASE(2)
            DW_BLOCK_CASE(3)
            DW_BLOCK_CASE(4)
            DW_BLOCK_CASE(5)
            DW_BLOCK_CASE(6)
            DW_BLOCK_CASE(7)
            DW_BLOCK_CASE(8)
            DW_BLOCK_CASE(9)
            DW_BLOCK_CASE(10)
            DW_BLOCK_CASE(11)
            DW_BLOCK_CASE(12)
            DW_BLOCK_CASE(13)
            DW_BLOCK_CASE(14)
            DW_BLOCK_CASE(15)
            DW_BLOCK_CASE(16)
        default:
            break;
        }
#undef DW_BLOCK_CASE
        j += nb;
    }
}

DW_ATTR static void DW_CAT(DW_NAME, channels)(dw_index n_taps, const DW_T *const *a, dw_index a_off,
                                              dw_index a_step, const DW_T *const *b, dw_index b_off,
                                              const DW_T *init, dw_index count, DW_T *out, dw_index ldo, int stream)
{
    enum { LB = DW_BLOCK_BYTES / sizeof(DW_T) };
    if (a_step == LB)
        DW_CAT(DW_NAME, channels_run)(n_taps, a, a_off, LB, b, b_off, init, count, out, ldo, stream);
    else if (a_step == 2 * LB)
        DW_CAT(DW_NAME, channels_run)(n_taps, a, a_off, 2 * LB, b, b_off, init, count, out, ldo, stream);
    else
        DW_CAT(DW_NAME, channels_run)(n_taps, a, a_off, a_step, b, b_off, init, count, out, ldo, stream);
}

/* nt taps (compile-time after inlining): acc[t][acc_off + l] += sum_j a[t][a_off + j*a_step + l] * g[j*g_step + l],
 * summed over j in order. */
DW_INLINE void DW_CAT(DW_NAME, channels_gw_taps)(const int nt, const DW_T *const *a, dw_index a_off, dw_index a_step,
                                                 const DW_T *g, dw_index g_step, dw_index count, DW_T *const *acc,
                                                 dw_index acc_off)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    vec sum[DW_GWT][DW_VPB];
    const DW_T *ap[DW_GWT];
    dw_index j, off = 0;
    int t, v;

#pragma GCC unroll 16
    for (t = 0; t < nt; t++) {
        ap[t] = a[t] + a_off;
#pragma GCC unroll 4
        for (v = 0; v < DW_VPB; v++)
            sum[t][v] = *(const vec *)(acc[t] + acc_off + v * DW_VL);
    }
    for (j = 0; j < count; j++) {
        vec gv[DW_VPB];
#pragma GCC unroll 4
        for (v = 0; v < DW_VPB; v++)
            gv[v] = *(const vec *)(g + j * g_step + v * DW_VL);
#pragma GCC unroll 16
        for (t = 0; t < nt; t++)
#pragma GCC unroll 4
            for (v = 0; v < DW_VPB; v++)
                sum[t][v] += *(const vec *)(ap[t] + off + v * DW_VL) * gv[v];
        off += a_step;
    }
#pragma GCC unroll 16
    for (t = 0; t < nt; t++)
#pragma GCC unroll 4
        for (v = 0; v < DW_VPB; v++)
            *(vec *)(acc[t] + acc_off + v * DW_VL) = sum[t][v];
}

/* n_taps <= DW_GWT taps. */
DW_INLINE void DW_CAT(DW_NAME, channels_gw_run)(dw_index n_taps, const DW_T *const *a, dw_index a_off,
                                                dw_index a_step, const DW_T *g, dw_index g_step, dw_index count,
                                                DW_T *const *acc, dw_index acc_off)
{
#define DW_GW_CASE(n)                                                                                             \
    case n:                                                                                                       \
        if (n <= DW_GWT)                                                                                          \
            DW_CAT(DW_NAME, channels_gw_taps)(n <= DW_GWT ? n : 1, a, a_off, a_step, g, g_step, count, acc,       \
                                              acc_off);                                                           \
        break;
    switch (n_taps) {
        DW_GW_CASE(1)
        DW_GW_CASE(2)
        DW_GW_CASE(3)
        DW_GW_CASE(4)
        DW_GW_CASE(5)
        DW_GW_CASE(6)
        DW_GW_CASE(7)
        DW_GW_CASE(8)
        DW_GW_CASE(9)
        DW_GW_CASE(10)
        DW_GW_CASE(11)
        DW_GW_CASE(12)
    default:
        break;
    }
#undef DW_GW_CASE
}

DW_ATTR static void DW_CAT(DW_NAME, channels_gw)(dw_index n_taps, const DW_T *const *a, dw_index a_off,
                                                 dw_index a_step, const DW_T *g, dw_index g_step, dw_index count,
                                                 DW_T *const *acc, dw_index acc_off)
{
    enum { LB = DW_BLOCK_BYTES / sizeof(DW_T) };
    if (a_step == LB)
        DW_CAT(DW_NAME, channels_gw_run)(n_taps, a, a_off, LB, g, g_step, count, acc, acc_off);
    else if (a_step == 2 * LB)
        DW_CAT(DW_NAME, channels_gw_run)(n_taps, a, a_off, 2 * LB, g, g_step, count, acc, acc_off);
    else
        DW_CAT(DW_NAME, channels_gw_run)(n_taps, a, a_off, a_step, g, g_step, count, acc, acc_off);
}

/* ---- packing ---- */

/* Columns c0 <= cc < c1 of one packed row, lane block by lane block (blocks LB elements, n_cols*LB apart):
 * dst[(b*n_cols + cc)*LB + l] = src[(cc - pad_left)*C + (k_lo + b*LB + l) / M] for b*LB + l < width, zero past width
 * and where cc - pad_left is outside [0, W). */
DW_ATTR static void DW_CAT(DW_NAME, pack)(const DW_T *src, dw_index C, dw_index W, dw_index M, dw_index pad_left,
                                          dw_index n_cols, dw_index k_lo, dw_index width, dw_index n_blocks,
                                          dw_index c0, dw_index c1, DW_T *dst)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    enum { LB = DW_BLOCK_BYTES / sizeof(DW_T) };
    const dw_index full = M == 1 ? (width / LB < n_blocks ? width / LB : n_blocks) : 0;
    dw_index cc, b, l;
    int v;

    for (cc = c0; cc < c1; cc++) {
        dw_index iw = cc - pad_left;
        DW_T *d = dst + cc * LB;
        if (iw < 0 || iw >= W) {
            for (b = 0; b < n_blocks; b++)
#pragma GCC unroll 4
                for (v = 0; v < DW_VPB; v++)
                    *(vec *)(d + b * n_cols * LB + v * DW_VL) = (vec){0};
            continue;
        }
        const DW_T *s = src + iw * C + k_lo;
        for (b = 0; b < full; b++)
#pragma GCC unroll 4
            for (v = 0; v < DW_VPB; v++)
                *(vec *)(d + b * n_cols * LB + v * DW_VL) = *(const vec *)(s + b * LB + v * DW_VL);
        for (; b < n_blocks; b++) {
            DW_T *db = d + b * n_cols * LB;
            dw_index k0 = k_lo + b * LB, w = width - b * LB;
            if (w > LB)
                w = LB;
            if (w < 0)
                w = 0;
            if (M == 1) {
                for (l = 0; l < w; l++)
                    db[l] = s[b * LB + l];
            } else {
                dw_index c = k0 / M, m = k0 - c * M;
                const DW_T *sp = src + iw * C;
                for (l = 0; l < w; l++) {
                    db[l] = sp[c];
                    if (++m == M) {
                        m = 0;
                        c++;
                    }
                }
            }
            for (l = w; l < LB; l++)
                db[l] = 0;
        }
    }
}

/* ---- kernel-row kernels: the S taps of a kernel row read S consecutive packed columns (dilation 1), so each
 * column is loaded once per register block and used by every tap that reads it; compile-time S and SW ---- */

/* nb pixels (vector pass by vector pass): out[j*ldo + l] = init[l]
 *     + sum_{i < n_rows} sum_{s < S} a[i][a_off + (j*SW + s)*cs + l] * b[i][b_off + s*LB + l],
 * cs the distance between consecutive columns (LB in packed rows, the channel count reading NHWC directly). */
DW_INLINE void DW_CAT(DW_NAME, rowtaps_block)(const int nb, const int S, const int SW, dw_index n_rows,
                                              const DW_T *const *a, dw_index a_off, dw_index cs,
                                              const DW_T *const *b, dw_index b_off, const DW_T *init, DW_T *out,
                                              dw_index ldo, int stream)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    enum { LB = DW_BLOCK_BYTES / sizeof(DW_T) };
    vec acc[DW_WBT];
    dw_index i;
    int j, v, s, c;

#pragma GCC unroll 4
    for (v = 0; v < DW_VPB; v++) {
        DW_T *o = out + v * DW_VL;
#pragma GCC unroll 16
        for (j = 0; j < nb; j++)
            acc[j] = *(const vec *)(init + v * DW_VL);
        for (i = 0; i < n_rows; i++) {
            const DW_T *ap = a[i] + a_off + v * DW_VL;
            const DW_T *bp = b[i] + b_off + v * DW_VL;
            vec w[8];
            __asm__("" : "+r"(ap));
#pragma GCC unroll 8
            for (s = 0; s < S; s++)
                w[s] = *(const vec *)(bp + s * LB);
#pragma GCC unroll 64
            for (c = 0; c < (nb - 1) * SW + S; c++) {
                vec xv = *(const vec *)ap;
#if DW_NREG > 16
                /* One load per column: without this gcc folds the load into every FMA that uses it. (With 16
                 * registers, folding measured faster.) */
                __asm__("" : "+v"(xv));
#endif
#pragma GCC unroll 8
                for (s = 0; s < S; s++)
                    if (c - s >= 0 && (c - s) % SW == 0 && (c - s) / SW < nb)
                        acc[(c - s) / SW] += xv * w[s];
                ap += cs;
            }
        }
#pragma GCC unroll 16
        for (j = 0; j < nb; j++) {
            DW_CAT(DW_NAME, store)(o, acc[j], stream);
            o += ldo;
        }
    }
}

/* count pixels in ceil(count / max) blocks of (nearly) equal size, for n_blocks lane blocks (a_off, b_off, init
 * and out advancing by a_bstep, b_bstep, i_bstep and o_bstep from block to block). */
DW_INLINE void DW_CAT(DW_NAME, rowtaps_run)(const int S, const int SW, dw_index n_rows, const DW_T *const *a,
                                            dw_index a_off, dw_index cs, const DW_T *const *b, dw_index b_off,
                                            const DW_T *init, dw_index count, DW_T *out, dw_index ldo, int stream,
                                            dw_index n_blocks, dw_index a_bstep, dw_index b_bstep, dw_index i_bstep,
                                            dw_index o_bstep)
{
    const int most = DW_WBT < DW_NREG - 1 - S ? DW_WBT : DW_NREG - 1 - S;
    dw_index n_pix_blocks = (count + most - 1) / most, i, j, kb;
    dw_index size = n_pix_blocks ? count / n_pix_blocks : 0, larger = n_pix_blocks ? count % n_pix_blocks : 0;
    for (kb = 0; kb < n_blocks; kb++) {
        j = 0;
        for (i = 0; i < n_pix_blocks; i++) {
            dw_index nb = size + (i < larger);
#define DW_BLOCK_CASE(n)                                                                                          \
    case n:                                                                                                       \
        if (n <= DW_WBT)                                                                                          \
            DW_CAT(DW_NAME, rowtaps_block)(n <= DW_WBT ? n : 1, S, SW, n_rows, a, a_off + j * SW * cs, cs, b,     \
                                           b_off, init, out + j * ldo, ldo, stream);                              \
        break;
            switch (nb) {
                DW_BLOCK_CASE(1)
                DW_BLOCK_CASE(2)
                DW_BLOCK_CASE(3)
                DW_BLOCK_CASE(4)
                DW_BLOCK_CASE(5)
                DW_BLOCK_CASE(6)
                DW_BLOCK_CASE(7)
                DW_BLOCK_CASE(8)
                DW_BLOCK_CASE(9)
                DW_BLOCK_CASE(10)
                DW_BLOCK_CASE(11)
                DW_BLOCK_CASE(12)
                DW_BLOCK_CASE(13)
                DW_BLOCK_CASE(14)
            default:
                break;
            }
#undef DW_BLOCK_CASE
            j += nb;
        }
        a_off += a_bstep;
        b_off += b_bstep;
        init += i_bstep;
        out += o_bstep;
    }
}

/* The (S, SW) pairs with a kernel-row kernel; rowtaps returns 0 (and does nothing) for the others. */
DW_ATTR static int DW_CAT(DW_NAME, rowtaps)(int S, int SW, dw_index n_rows, const DW_T *const *a, dw_index a_off,
                                            dw_index cs, const DW_T *const *b, dw_index b_off, const DW_T *init,
                                            dw_index count, DW_T *out, dw_index ldo, int stream, dw_index n_blocks,
                                            dw_index a_bstep, dw_index b_bstep, dw_index i_bstep, dw_index o_bstep)
{
#define DW_ROWTAPS_CASE(s_, sw_)                                                                                  \
    if (S == s_ && SW == sw_) {                                                                                   \
        DW_CAT(DW_NAME, rowtaps_run)(s_, sw_, n_rows, a, a_off, cs, b, b_off, init, count, out, ldo, stream,      \
                                     n_blocks, a_bstep, b_bstep, i_bstep, o_bstep);                               \
        return 1;                                                                                                 \
    }
    DW_ROWTAPS_CASE(3, 1)
    DW_ROWTAPS_CASE(3, 2)
    DW_ROWTAPS_CASE(5, 1)
    DW_ROWTAPS_CASE(5, 2)
    DW_ROWTAPS_CASE(2, 1)
    DW_ROWTAPS_CASE(1, 1)
    DW_ROWTAPS_CASE(4, 1)
#undef DW_ROWTAPS_CASE
    return 0;
}

/* Weight gradient for NR kernel rows of S taps: acc[i][acc_off + s*acc_step + l] += sum_j
 * a[i][a_off + (j*SW + s)*LB + l] * g[j*g_step + l], summed over j in order. The S columns a pixel reads stay in
 * registers and slide by SW columns from pixel to pixel. */
DW_INLINE void DW_CAT(DW_NAME, rowtaps_gw_body)(const int NR, const int S, const int SW, const DW_T *const *a,
                                                dw_index a_off, const DW_T *g, dw_index g_step, dw_index count,
                                                DW_T *const *acc, dw_index acc_off, dw_index acc_step)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    enum { LB = DW_BLOCK_BYTES / sizeof(DW_T) };
    vec sum[3][5], win[3][5];
    const DW_T *ap[3];
    dw_index j;
    int i, s, v;

    if (count <= 0)
        return;
#pragma GCC unroll 4
    for (v = 0; v < DW_VPB; v++) {
        const DW_T *gp = g + v * DW_VL;
#pragma GCC unroll 3
        for (i = 0; i < NR; i++) {
            ap[i] = a[i] + a_off + v * DW_VL;
#pragma GCC unroll 5
            for (s = 0; s < S; s++) {
                sum[i][s] = *(const vec *)(acc[i] + acc_off + s * acc_step + v * DW_VL);
                win[i][s] = *(const vec *)(ap[i] + s * LB);
            }
        }
        for (j = 0;; j++) {
            vec gv = *(const vec *)gp;
#pragma GCC unroll 3
            for (i = 0; i < NR; i++)
#pragma GCC unroll 5
                for (s = 0; s < S; s++)
                    sum[i][s] += win[i][s] * gv;
            if (j + 1 == count)
                break;
            gp += g_step;
#pragma GCC unroll 3
            for (i = 0; i < NR; i++) {
                ap[i] += SW * LB;
#pragma GCC unroll 5
                for (s = 0; s < S; s++)
                    win[i][s] = s + SW < S ? win[i][s + SW < S ? s + SW : 0] : *(const vec *)(ap[i] + s * LB);
            }
        }
#pragma GCC unroll 3
        for (i = 0; i < NR; i++)
#pragma GCC unroll 5
            for (s = 0; s < S; s++)
                *(vec *)(acc[i] + acc_off + s * acc_step + v * DW_VL) = sum[i][s];
    }
}

/* Kernel rows one weight-gradient call takes at most, for S taps per row (0: no kernel for S). */
static int DW_CAT(DW_NAME, rowtaps_gw_rows)(int S)
{
    int rows = (DW_NREG - 1) / (2 * S);
    if (S != 3 && S != 5)
        return 0;
    return rows > 3 ? 3 : rows;
}

DW_ATTR static int DW_CAT(DW_NAME, rowtaps_gw)(int S, int SW, dw_index n_rows, const DW_T *const *a, dw_index a_off,
                                               const DW_T *g, dw_index g_step, dw_index count, DW_T *const *acc,
                                               dw_index acc_off, dw_index acc_step)
{
#define DW_GW_CASE(nr_, s_, sw_)                                                                                  \
    if (n_rows == nr_ && S == s_ && SW == sw_) {                                                                  \
        if (nr_ * 2 * s_ < DW_NREG)                                                                               \
            DW_CAT(DW_NAME, rowtaps_gw_body)(nr_ * 2 * s_ < DW_NREG ? nr_ : 1, s_, sw_, a, a_off, g, g_step,      \
                                             count, acc, acc_off, acc_step);                                      \
        return 1;                                                                                                 \
    }
    DW_GW_CASE(1, 3, 1)
    DW_GW_CASE(2, 3, 1)
    DW_GW_CASE(3, 3, 1)
    DW_GW_CASE(1, 3, 2)
    DW_GW_CASE(2, 3, 2)
    DW_GW_CASE(3, 3, 2)
    DW_GW_CASE(1, 5, 1)
    DW_GW_CASE(2, 5, 1)
    DW_GW_CASE(3, 5, 1)
    DW_GW_CASE(1, 5, 2)
    DW_GW_CASE(2, 5, 2)
    DW_GW_CASE(3, 5, 2)
#undef DW_GW_CASE
    return 0;
}

/* ---- row kernels: lanes along a row of one channel plane, scalar weights ---- */

/* nv vectors: out[i] = init + sum_t a[t][i] * w[t] for i < nv * VL. */
DW_INLINE void DW_CAT(DW_NAME, rows_block)(const int nv, dw_index n_taps, const DW_T *const *a, dw_index off,
                                           const DW_T *w, DW_T init, DW_T *out)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    vec acc[DW_RB];
    dw_index t;
    int v;

#pragma GCC unroll 16
    for (v = 0; v < nv; v++)
        acc[v] = (vec){0} + init;
    for (t = 0; t < n_taps; t++) {
        const DW_T *ap = a[t] + off;
        vec wv = (vec){0} + w[t];
#pragma GCC unroll 16
        for (v = 0; v < nv; v++)
            acc[v] += *(const vec *)(ap + v * DW_VL) * wv;
    }
#pragma GCC unroll 16
    for (v = 0; v < nv; v++)
        *(vec *)(out + off + v * DW_VL) = acc[v];
}

/* count (a multiple of the vector lanes) outputs along a row. */
DW_ATTR static void DW_CAT(DW_NAME, rows)(dw_index n_taps, const DW_T *const *a, const DW_T *w, DW_T init,
                                          dw_index count, DW_T *out)
{
    dw_index i = 0;
    for (; i + DW_RB * DW_VL <= count; i += DW_RB * DW_VL)
        DW_CAT(DW_NAME, rows_block)(DW_RB, n_taps, a, i, w, init, out);
    for (; i + 2 * DW_VL <= count; i += 2 * DW_VL)
        DW_CAT(DW_NAME, rows_block)(2, n_taps, a, i, w, init, out);
    for (; i < count; i += DW_VL)
        DW_CAT(DW_NAME, rows_block)(1, n_taps, a, i, w, init, out);
}

/* nt taps: acc[t*VL + l] += sum_v a[t][v*VL + l] * g[v*VL + l], count a multiple of VL. */
DW_INLINE void DW_CAT(DW_NAME, rows_gw_taps)(const int nt, const DW_T *const *a, const DW_T *g, dw_index count,
                                             DW_T *acc)
{
    typedef DW_CAT(DW_NAME, vec) vec;
    vec sum[DW_GWT];
    const DW_T *ap[DW_GWT];
    dw_index i;
    int t;

#pragma GCC unroll 16
    for (t = 0; t < nt; t++) {
        ap[t] = a[t];
        sum[t] = *(const vec *)(acc + t * DW_VL);
    }
    for (i = 0; i < count; i += DW_VL) {
        vec gv = *(const vec *)(g + i);
#pragma GCC unroll 16
        for (t = 0; t < nt; t++)
            sum[t] += *(const vec *)(ap[t] + i) * gv;
    }
#pragma GCC unroll 16
    for (t = 0; t < nt; t++)
        *(vec *)(acc + t * DW_VL) = sum[t];
}

DW_ATTR static void DW_CAT(DW_NAME, rows_gw)(dw_index n_taps, const DW_T *const *a, const DW_T *g, dw_index count,
                                             DW_T *acc)
{
#define DW_GW_CASE(n)                                                                                             \
    case n:                                                                                                       \
        if (n <= DW_GWT)                                                                                          \
            DW_CAT(DW_NAME, rows_gw_taps)(n <= DW_GWT ? n : 1, a, g, count, acc);                                 \
        break;
    switch (n_taps) {
        DW_GW_CASE(1)
        DW_GW_CASE(2)
        DW_GW_CASE(3)
        DW_GW_CASE(4)
        DW_GW_CASE(5)
        DW_GW_CASE(6)
        DW_GW_CASE(7)
        DW_GW_CASE(8)
        DW_GW_CASE(9)
        DW_GW_CASE(10)
        DW_GW_CASE(11)
        DW_GW_CASE(12)
    default:
        break;
    }
#undef DW_GW_CASE
}

#undef DW_VL
#undef DW_VPB
#undef DW_INLINE

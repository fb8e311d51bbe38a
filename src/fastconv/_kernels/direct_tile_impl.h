/* One register tile of the direct convolution kernels, instantiated once per (dtype, instruction set, tile shape)
 * by direct_tile.h. Parameters (macros): FC_T element type, FC_NAME function name, FC_VBYTES vector bytes,
 * FC_WB rows of the tile, FC_NV vectors per row, FC_ATTR target attribute.
 *
 * The tile is FC_WB rows x FC_NV vectors (FC_NV*VL lanes), held in registers for the whole reduction: each
 * vector of the second operand is loaded once and used FC_WB times, each scalar of the first is broadcast once
 * and used for all FC_NV vectors.
 *
 *   out[j, 0:NV*VL] += sum_{t < n_taps} sum_{i < count} a[t*FC_WB + j][a_off + i*a_step] * b[t][i*b_step + (0:NV*VL)]
 *
 * Forward: rows j are output pixels, a = the pixels' input channels (a_step 1), b = packed weights.
 * Weight gradient: rows j are input channels, a = input pixels (a_step = pixel stride), b = output gradient
 * pixels. out rows are ldo apart; a pointer may point at zeros to stand for padding. With `init` (not NULL) the
 * sums start at that one row of NV*VL values for every j instead of at out's contents, which are then only
 * written: the forward's first channel block starts at the bias without a pass filling out with it first
 * (a 7x7 RGB stem: that fill pass and the reloads took 5-8% of the call). */

typedef FC_T FC_CAT(FC_NAME, vec) __attribute__((vector_size(FC_VBYTES), aligned(sizeof(FC_T)), __may_alias__));

FC_ATTR static void FC_NAME(fc_index n_taps, const FC_T *const *a, fc_index a_off, fc_index a_step,
                            const FC_T *const *b, fc_index b_step, fc_index count, FC_T *out, fc_index ldo,
                            const FC_T *init)
{
    typedef FC_CAT(FC_NAME, vec) vec;
    enum { VL = FC_VBYTES / sizeof(FC_T) };
    vec acc[FC_WB][FC_NV], wv[FC_NV];
    const FC_T *x[FC_WB];
    fc_index t, i, xi;
    int j, v;

    if (init) {
#pragma GCC unroll 16
        for (j = 0; j < FC_WB; j++)
#pragma GCC unroll 4
            for (v = 0; v < FC_NV; v++)
                acc[j][v] = *(const vec *)(init + v * VL);
    } else {
#pragma GCC unroll 16
        for (j = 0; j < FC_WB; j++)
#pragma GCC unroll 4
            for (v = 0; v < FC_NV; v++)
                acc[j][v] = *(const vec *)(out + j * ldo + v * VL);
    }
    for (t = 0; t < n_taps; t++) {
        const FC_T *w = b[t];
#pragma GCC unroll 16
        for (j = 0; j < FC_WB; j++)
            x[j] = a[t * FC_WB + j] + a_off;
        xi = 0;
        for (i = 0; i < count; i++) {
#pragma GCC unroll 4
            for (v = 0; v < FC_NV; v++)
                wv[v] = *(const vec *)(w + v * VL);
            w += b_step;
#pragma GCC unroll 16
            for (j = 0; j < FC_WB; j++) {
                FC_T xv = x[j][xi];
#pragma GCC unroll 4
                for (v = 0; v < FC_NV; v++)
                    acc[j][v] += xv * wv[v];
            }
            xi += a_step;
        }
    }
#pragma GCC unroll 16
    for (j = 0; j < FC_WB; j++)
#pragma GCC unroll 4
        for (v = 0; v < FC_NV; v++)
            *(vec *)(out + j * ldo + v * VL) = acc[j][v];
}

/* One register tile of the direct NHWC convolution, instantiated once per (dtype, instruction set) by
 * direct_tile.h. Parameters (macros): FC_T element type, FC_NAME function name, FC_VBYTES vector bytes,
 * FC_WB output pixels per tile, FC_ATTR target attribute.
 *
 * The tile is FC_WB output pixels x 2 vectors of output channels, held in registers for the whole reduction
 * over taps (r, s) and input channels: each weight vector is loaded once and used FC_WB times, each input value
 * is broadcast once and used for both vectors.
 *
 *   out[j, 0:2*VL] += sum_t sum_c xptrs[t*FC_WB + j][c] * wptrs[t][c*2*VL : (c+1)*2*VL]
 *
 * xptrs holds, per tap and pixel, the first input channel of that pixel's group (or a row of zeros where the
 * tap falls into padding); wptrs holds per tap the packed weights [cg][2*VL]. out rows are ldo apart. */

typedef FC_T FC_CAT(FC_NAME, vec) __attribute__((vector_size(FC_VBYTES), aligned(sizeof(FC_T)), __may_alias__));

FC_ATTR static void FC_NAME(fc_index n_taps, const FC_T *const *xptrs, const FC_T *const *wptrs, fc_index cg,
                            FC_T *out, fc_index ldo)
{
    typedef FC_CAT(FC_NAME, vec) vec;
    enum { VL = FC_VBYTES / sizeof(FC_T) };
    vec acc0[FC_WB], acc1[FC_WB];
    const FC_T *x[FC_WB];
    fc_index t, c;
    int j;

#pragma GCC unroll 16
    for (j = 0; j < FC_WB; j++) {
        acc0[j] = *(const vec *)(out + j * ldo);
        acc1[j] = *(const vec *)(out + j * ldo + VL);
    }
    for (t = 0; t < n_taps; t++) {
        const FC_T *w = wptrs[t];
#pragma GCC unroll 16
        for (j = 0; j < FC_WB; j++)
            x[j] = xptrs[t * FC_WB + j];
        for (c = 0; c < cg; c++) {
            vec w0 = *(const vec *)(w);
            vec w1 = *(const vec *)(w + VL);
            w += 2 * VL;
#pragma GCC unroll 16
            for (j = 0; j < FC_WB; j++) {
                FC_T xv = x[j][c];
                acc0[j] += xv * w0;
                acc1[j] += xv * w1;
            }
        }
    }
#pragma GCC unroll 16
    for (j = 0; j < FC_WB; j++) {
        *(vec *)(out + j * ldo) = acc0[j];
        *(vec *)(out + j * ldo + VL) = acc1[j];
    }
}

/* One register tile of the direct convolution kernels, instantiated once per (dtype, instruction set) by
 * direct_tile.h. Parameters (macros): FC_T element type, FC_NAME function name, FC_VBYTES vector bytes,
 * FC_WB rows of the tile, FC_ATTR target attribute.
 *
 * The tile is FC_WB rows x 2 vectors (2*VL lanes), held in registers for the whole reduction: each vector of
 * the second operand is loaded once and used FC_WB times, each scalar of the first is broadcast once and used
 * for both vectors.
 *
 *   out[j, 0:2*VL] += sum_{t < n_taps} sum_{i < count} a[t*FC_WB + j][a_off + i*a_step] * b[t][i*b_step + (0:2*VL)]
 *
 * Forward: rows j are output pixels, a = the pixels' input channels (a_step 1), b = packed weights.
 * Weight gradient: rows j are input channels, a = input pixels (a_step = pixel stride), b = output gradient
 * pixels. out rows are ldo apart; a pointer may point at zeros to stand for padding. */

typedef FC_T FC_CAT(FC_NAME, vec) __attribute__((vector_size(FC_VBYTES), aligned(sizeof(FC_T)), __may_alias__));

FC_ATTR static void FC_NAME(fc_index n_taps, const FC_T *const *a, fc_index a_off, fc_index a_step,
                            const FC_T *const *b, fc_index b_step, fc_index count, FC_T *out, fc_index ldo)
{
    typedef FC_CAT(FC_NAME, vec) vec;
    enum { VL = FC_VBYTES / sizeof(FC_T) };
    vec acc0[FC_WB], acc1[FC_WB];
    const FC_T *x[FC_WB];
    fc_index t, i, xi;
    int j;

#pragma GCC unroll 16
    for (j = 0; j < FC_WB; j++) {
        acc0[j] = *(const vec *)(out + j * ldo);
        acc1[j] = *(const vec *)(out + j * ldo + VL);
    }
    for (t = 0; t < n_taps; t++) {
        const FC_T *w = b[t];
#pragma GCC unroll 16
        for (j = 0; j < FC_WB; j++)
            x[j] = a[t * FC_WB + j] + a_off;
        xi = 0;
        for (i = 0; i < count; i++) {
            vec w0 = *(const vec *)(w);
            vec w1 = *(const vec *)(w + VL);
            w += b_step;
#pragma GCC unroll 16
            for (j = 0; j < FC_WB; j++) {
                FC_T xv = x[j][xi];
                acc0[j] += xv * w0;
                acc1[j] += xv * w1;
            }
            xi += a_step;
        }
    }
#pragma GCC unroll 16
    for (j = 0; j < FC_WB; j++) {
        *(vec *)(out + j * ldo) = acc0[j];
        *(vec *)(out + j * ldo + VL) = acc1[j];
    }
}

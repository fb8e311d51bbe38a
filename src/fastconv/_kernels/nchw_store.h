/* The tiled forward's NCHW write-out (conv_direct.pyx): a block of n_px pixels x n_k channels, pixel rows ldb
 * apart in the unit's buffer, goes to n_k channel rows of NCHW ldd apart, with the fused ReLU if asked
 * (max(v, 0), NaN kept). Scalar, it cost as much as the arithmetic of a 3-channel layer with a 90 MB output; at
 * AVX-512 it moves 16 x 16 blocks through the registers, at AVX2 8 x 8 blocks. Chosen at run time like the
 * tiles (direct_tile.h). */
#ifndef FASTCONV_NCHW_STORE_H
#define FASTCONV_NCHW_STORE_H

#include <stddef.h>

#include "direct_tile.h"
#include "transpose_tile.h"

#define FC_NCHW_STORE_SCALAR(T, NAME)                                                                            \
    static void NAME(const T *buf, fc_index ldb, T *dst, fc_index ldd, fc_index n_px, fc_index n_k, int relu)  \
    {                                                                                                            \
        fc_index k, j;                                                                                           \
        for (k = 0; k < n_k; k++)                                                                                \
            for (j = 0; j < n_px; j++) {                                                                         \
                T v = buf[j * ldb + k];                                                                          \
                dst[k * ldd + j] = (relu && v < 0) ? (T)0 : v;                                                   \
            }                                                                                                    \
    }

FC_NCHW_STORE_SCALAR(float, fc_nchw_store_f32_scalar)
FC_NCHW_STORE_SCALAR(double, fc_nchw_store_f64_scalar)

#if FC_HAVE_X86_DISPATCH
#include <immintrin.h>

/* B channels x B pixels at a time through the registers (transpose_tile.h); the edges scalar. At AVX-512, each
 * channel's 16 pixels in one gather instead ran at a fraction of this on AMD Zen 4 (small_c1 channels_first: 18-21
 * ms against 15-16 scalar and 10-11 with an NHWC output). */
#define FC_NCHW_STORE_BLOCKED(NAME, ATTR, B, TRANSPOSE)                                                           \
    ATTR static void NAME(const float *buf, fc_index ldb, float *dst, fc_index ldd, fc_index n_px, fc_index n_k, \
                          int relu)                                                                              \
    {                                                                                                            \
        fc_index k, j;                                                                                           \
        for (k = 0; k + B <= n_k; k += B) {                                                                      \
            for (j = 0; j + B <= n_px; j += B)                                                                   \
                TRANSPOSE(buf + j * ldb + k, ldb, dst + k * ldd + j, ldd, relu);                                 \
            if (j < n_px)                                                                                        \
                fc_nchw_store_f32_scalar(buf + j * ldb + k, ldb, dst + k * ldd + j, ldd, n_px - j, B, relu);     \
        }                                                                                                        \
        if (k < n_k)                                                                                             \
            fc_nchw_store_f32_scalar(buf + k, ldb, dst + k * ldd, ldd, n_px, n_k - k, relu);                     \
    }

FC_NCHW_STORE_BLOCKED(fc_nchw_store_f32_avx512, __attribute__((target("avx512f"))), 16, fc_transpose16_f32_avx512)
FC_NCHW_STORE_BLOCKED(fc_nchw_store_f32_avx2, __attribute__((target("avx2,fma"))), 8, fc_transpose8_f32_avx2)

__attribute__((target("avx512f"))) static void fc_nchw_store_f64_avx512(const double *buf, fc_index ldb,
                                                                         double *dst, fc_index ldd, fc_index n_px,
                                                                         fc_index n_k, int relu)
{
    const __m256i rows = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)ldb));
    const __m512d zero = _mm512_setzero_pd();
    fc_index k, j;
    if ((fc_index)(int)(8 * ldb) != 8 * ldb) {
        fc_nchw_store_f64_scalar(buf, ldb, dst, ldd, n_px, n_k, relu);
        return;
    }
    for (k = 0; k < n_k; k++) {
        for (j = 0; j + 8 <= n_px; j += 8) {
            __m512d v = _mm512_i32gather_pd(rows, buf + j * ldb + k, 8);
            if (relu)
                v = _mm512_max_pd(zero, v);
            _mm512_storeu_pd(dst + k * ldd + j, v);
        }
        for (; j < n_px; j++) {
            double v = buf[j * ldb + k];
            dst[k * ldd + j] = (relu && v < 0) ? 0.0 : v;
        }
    }
}
#endif

typedef void (*fc_nchw_store_f32)(const float *, fc_index, float *, fc_index, fc_index, fc_index, int);
typedef void (*fc_nchw_store_f64)(const double *, fc_index, double *, fc_index, fc_index, fc_index, int);

static fc_nchw_store_f32 fc_nchw_store_for_f32(int isa)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return fc_nchw_store_f32_avx512;
    if (isa == FC_ISA_AVX2)
        return fc_nchw_store_f32_avx2;
#endif
    (void)isa;
    return fc_nchw_store_f32_scalar;
}

static fc_nchw_store_f64 fc_nchw_store_for_f64(int isa)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return fc_nchw_store_f64_avx512;
#endif
    (void)isa;
    return fc_nchw_store_f64_scalar;
}

#endif

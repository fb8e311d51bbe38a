/* A strided 2-D transpose for the weight packing (weight_packing.pyx), the layout transposes (layout_transpose.pyx)
 * and the NCHW write-out (nchw_store.h): dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols. At AVX-512,
 * 16 x 16 float32 blocks go through the registers (16 loads, 64 shuffles, 16 stores), at AVX2 8 x 8 blocks; the
 * edges, float64 and the baseline level are scalar. Scalar, element by element, the input gradient's
 * flipped VGG conv5 kernel (9 MiB) took 0.5 ms on 2 threads (0.33 so) and a quarter of the gradient's time on
 * one; OIHW weights go through it too. */
#ifndef FASTCONV_TRANSPOSE_TILE_H
#define FASTCONV_TRANSPOSE_TILE_H

#include <stddef.h>

#include "direct_tile.h"

#define FC_TRANSPOSE_SCALAR(T, NAME)                                                                             \
    static void NAME(const T *src, fc_index lds, T *dst, fc_index ldd, fc_index rows, fc_index cols)            \
    {                                                                                                            \
        fc_index i, j;                                                                                           \
        for (i = 0; i < rows; i++)                                                                               \
            for (j = 0; j < cols; j++)                                                                           \
                dst[j * ldd + i] = src[i * lds + j];                                                             \
    }

FC_TRANSPOSE_SCALAR(float, fc_transpose_f32_scalar)
FC_TRANSPOSE_SCALAR(double, fc_transpose_f64_scalar)

#if FC_HAVE_X86_DISPATCH
#include <immintrin.h>

/* One 16 x 16 block, with max(v, 0) on the way if relu (NaN kept: the NCHW write-out of nchw_store.h). After the
 * two unpack stages, v[4a + b] holds in its 128-bit lane q column 4q + b of rows 4a .. 4a + 3; output row
 * c = 4q + b gathers lane q of v[b], v[4 + b], v[8 + b], v[12 + b]. */
__attribute__((target("avx512f"))) static inline void fc_transpose16_f32_avx512(const float *src, fc_index lds,
                                                                                 float *dst, fc_index ldd, int relu)
{
    __m512 r[16], t[16];
    int i, b;
    for (i = 0; i < 16; i++)
        r[i] = _mm512_loadu_ps(src + i * lds);
    if (relu)
        for (i = 0; i < 16; i++)
            r[i] = _mm512_max_ps(_mm512_setzero_ps(), r[i]);  /* (0 > v) ? 0 : v: NaN stays NaN */
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; i++) {
        __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (b = 0; b < 4; b++) {
        __m512 ab_lo = _mm512_shuffle_f32x4(r[b], r[4 + b], 0x44), ab_hi = _mm512_shuffle_f32x4(r[b], r[4 + b], 0xEE);
        __m512 cd_lo = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], 0x44);
        __m512 cd_hi = _mm512_shuffle_f32x4(r[8 + b], r[12 + b], 0xEE);
        _mm512_storeu_ps(dst + (0 + b) * ldd, _mm512_shuffle_f32x4(ab_lo, cd_lo, 0x88));
        _mm512_storeu_ps(dst + (4 + b) * ldd, _mm512_shuffle_f32x4(ab_lo, cd_lo, 0xDD));
        _mm512_storeu_ps(dst + (8 + b) * ldd, _mm512_shuffle_f32x4(ab_hi, cd_hi, 0x88));
        _mm512_storeu_ps(dst + (12 + b) * ldd, _mm512_shuffle_f32x4(ab_hi, cd_hi, 0xDD));
    }
}

/* One 8 x 8 block at AVX2, with the same optional ReLU. After the unpacks and shuffles, v[i] holds column i in
 * its low 128-bit lane and column 4 + i in its high one, for rows 0-3 (v[i]) and rows 4-7 (v[4 + i]). */
__attribute__((target("avx2,fma"))) static inline void fc_transpose8_f32_avx2(const float *src, fc_index lds,
                                                                               float *dst, fc_index ldd, int relu)
{
    __m256 r[8], t[8];
    int i;
    for (i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(src + i * lds);
    if (relu)
        for (i = 0; i < 8; i++)
            r[i] = _mm256_max_ps(_mm256_setzero_ps(), r[i]);  /* (0 > v) ? 0 : v: NaN stays NaN */
    for (i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 2; i++) {
        r[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (i = 0; i < 4; i++) {
        _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[4 + i], 0x20));
        _mm256_storeu_ps(dst + (4 + i) * ldd, _mm256_permute2f128_ps(r[i], r[4 + i], 0x31));
    }
}

/* Whole B x B blocks through the registers, the edges scalar. */
#define FC_TRANSPOSE_BLOCKED(NAME, ATTR, B, BLOCK)                                                                \
    ATTR static void NAME(const float *src, fc_index lds, float *dst, fc_index ldd, fc_index rows, fc_index cols) \
    {                                                                                                            \
        fc_index i, j, full_rows = rows / B * B, full_cols = cols / B * B;                                       \
        for (i = 0; i < full_rows; i += B)                                                                       \
            for (j = 0; j < full_cols; j += B)                                                                   \
                BLOCK(src + i * lds + j, lds, dst + j * ldd + i, ldd, 0);                                        \
        if (full_cols < cols)                                                                                    \
            fc_transpose_f32_scalar(src + full_cols, lds, dst + full_cols * ldd, ldd, full_rows, cols - full_cols); \
        if (full_rows < rows)                                                                                    \
            fc_transpose_f32_scalar(src + full_rows * lds, lds, dst + full_rows, ldd, rows - full_rows, cols);   \
    }

FC_TRANSPOSE_BLOCKED(fc_transpose_f32_avx512, __attribute__((target("avx512f"))), 16, fc_transpose16_f32_avx512)
FC_TRANSPOSE_BLOCKED(fc_transpose_f32_avx2, __attribute__((target("avx2,fma"))), 8, fc_transpose8_f32_avx2)
#endif

typedef void (*fc_transpose_f32)(const float *, fc_index, float *, fc_index, fc_index, fc_index);
typedef void (*fc_transpose_f64)(const double *, fc_index, double *, fc_index, fc_index, fc_index);

static inline fc_transpose_f32 fc_transpose_for_f32(int isa)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return fc_transpose_f32_avx512;
    if (isa == FC_ISA_AVX2)
        return fc_transpose_f32_avx2;
#endif
    (void)isa;
    return fc_transpose_f32_scalar;
}

static inline fc_transpose_f64 fc_transpose_for_f64(int isa)
{
    (void)isa;
    return fc_transpose_f64_scalar;
}

#endif

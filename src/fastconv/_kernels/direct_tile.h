/* Register-tiled inner loop of the direct convolution, compiled for several instruction sets in one binary and
 * chosen at run time (cpu_dispatch.pyx), so that one wheel uses AVX-512 or AVX2+FMA where the CPU has them and
 * still runs on any x86-64 (SSE2). Other architectures get the portable version only. */
#ifndef FASTCONV_DIRECT_TILE_H
#define FASTCONV_DIRECT_TILE_H

#include <stddef.h>

typedef ptrdiff_t fc_index;
typedef void (*fc_tile_f32)(fc_index, const float *const *, fc_index, fc_index, const float *const *, fc_index,
                            fc_index, float *, fc_index);
typedef void (*fc_tile_f64)(fc_index, const double *const *, fc_index, fc_index, const double *const *, fc_index,
                            fc_index, double *, fc_index);

#define FC_CAT_(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT_(a, b)

enum { FC_ISA_BASELINE = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2 };

/* Baseline: 16-byte vectors (SSE2 on x86-64). 6 pixels x 2 vectors = 12 accumulators of 16 registers. */
#define FC_ATTR
#define FC_VBYTES 16
#define FC_WB 6
#define FC_T float
#define FC_NAME fc_tile_f32_baseline
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#define FC_T double
#define FC_NAME fc_tile_f64_baseline
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#undef FC_ATTR
#undef FC_VBYTES
#undef FC_WB

#if defined(__x86_64__) && defined(__GNUC__)
#define FC_HAVE_X86_DISPATCH 1
/* AVX2 + FMA: 32-byte vectors, 16 registers: 6 x 2 accumulators. */
#define FC_ATTR __attribute__((target("avx2,fma")))
#define FC_VBYTES 32
#define FC_WB 6
#define FC_T float
#define FC_NAME fc_tile_f32_avx2
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#define FC_T double
#define FC_NAME fc_tile_f64_avx2
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#undef FC_ATTR
#undef FC_VBYTES
#undef FC_WB

/* AVX-512: 64-byte vectors, 32 registers: 14 x 2 accumulators + the 2 weight vectors. Against 8 x 2 it issues 16
 * loads per 28 FMAs instead of 10 per 16: forward +8-20% on the VGG and small-convnet layers (vgg_conv3_2 even). */
#define FC_ATTR __attribute__((target("avx512f,fma")))
#define FC_VBYTES 64
#define FC_WB 14
#define FC_T float
#define FC_NAME fc_tile_f32_avx512
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#define FC_T double
#define FC_NAME fc_tile_f64_avx512
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#undef FC_ATTR
#undef FC_VBYTES
#undef FC_WB
#else
#define FC_HAVE_X86_DISPATCH 0
#endif

/* The best level this CPU (and its OS) supports. */
static int fc_cpu_best_isa(void)
{
#if FC_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return FC_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FC_ISA_AVX2;
#endif
    return FC_ISA_BASELINE;
}

/* Tile shape at a level: rows per tile (output pixels in the forward pass, input channels in the weight
 * gradient) and channel lanes per tile (2 vectors). */
static int fc_tile_pixels(int isa)
{
    return isa == FC_ISA_AVX512 ? 14 : 6;
}

static int fc_tile_lanes(int isa, int itemsize)
{
    int vbytes = isa == FC_ISA_AVX512 ? 64 : isa == FC_ISA_AVX2 ? 32 : 16;
    return 2 * vbytes / itemsize;
}

static fc_tile_f32 fc_tile_for_f32(int isa)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return fc_tile_f32_avx512;
    if (isa == FC_ISA_AVX2)
        return fc_tile_f32_avx2;
#endif
    return fc_tile_f32_baseline;
}

static fc_tile_f64 fc_tile_for_f64(int isa)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return fc_tile_f64_avx512;
    if (isa == FC_ISA_AVX2)
        return fc_tile_f64_avx2;
#endif
    return fc_tile_f64_baseline;
}

#endif

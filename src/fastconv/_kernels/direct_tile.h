/* Register-tiled inner loop of the direct convolution, compiled for several instruction sets in one binary and
 * chosen at run time (cpu_dispatch.pyx), so that one wheel uses AVX-512 or AVX2+FMA where the CPU has them and
 * still runs on any x86-64 (SSE2). Other architectures get the portable version only. */
#ifndef FASTCONV_DIRECT_TILE_H
#define FASTCONV_DIRECT_TILE_H

#include <stddef.h>

typedef ptrdiff_t fc_index;
typedef void (*fc_tile_f32)(fc_index, const float *const *, fc_index, fc_index, const float *const *, fc_index,
                            fc_index, float *, fc_index, const float *);
typedef void (*fc_tile_f64)(fc_index, const double *const *, fc_index, fc_index, const double *const *, fc_index,
                            fc_index, double *, fc_index, const double *);

#define FC_CAT_(a, b) a##_##b
#define FC_CAT(a, b) FC_CAT_(a, b)

enum { FC_ISA_BASELINE = 0, FC_ISA_AVX2 = 1, FC_ISA_AVX512 = 2 };

/* Baseline: 16-byte vectors (SSE2 on x86-64). 6 pixels x 2 vectors = 12 accumulators of 16 registers. */
#define FC_ATTR
#define FC_VBYTES 16
#define FC_WB 6
#define FC_NV 2
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
#undef FC_NV

#if defined(__x86_64__) && defined(__GNUC__)
#define FC_HAVE_X86_DISPATCH 1
/* AVX2 + FMA: 32-byte vectors, 16 registers: 6 x 2 accumulators. */
#define FC_ATTR __attribute__((target("avx2,fma")))
#define FC_VBYTES 32
#define FC_WB 6
#define FC_NV 2
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
#undef FC_NV

/* AVX-512: 64-byte vectors, 32 registers. Two tile shapes:
 * - narrow, 14 pixels x 2 vectors (32 float lanes): for groups of 32 or fewer output channels;
 * - wide, 6 pixels x 4 vectors (64 float lanes): 10 loads per 24 FMAs instead of 16 per 28, and 6 row pointers
 *   that fit in the general registers (GCC keeps 4 of the narrow tile's 14 on the stack). 24 accumulators + 4
 *   weight vectors + the broadcast use 29 registers; 7 x 4 needed 33, and GCC spilled an accumulator every step.
 *   Microbenchmark (9 taps, 64 channels, one core): 6x4 173-178 GFLOP/s, 7x4 158-170, 14x2 140-143. */
#define FC_ATTR __attribute__((target("avx512f,fma")))
#define FC_VBYTES 64
#define FC_WB 14
#define FC_NV 2
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
#undef FC_WB
#undef FC_NV
#define FC_WB 6
#define FC_NV 4
#define FC_T float
#define FC_NAME fc_tile_f32_avx512_wide
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#define FC_T double
#define FC_NAME fc_tile_f64_avx512_wide
#include "direct_tile_impl.h"
#undef FC_T
#undef FC_NAME
#undef FC_ATTR
#undef FC_VBYTES
#undef FC_WB
#undef FC_NV
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

/* The wide tile shape exists at AVX-512 only; elsewhere `wide` asks for the one shape there is. */
static int fc_tile_is_wide(int isa, int wide)
{
    return wide && isa == FC_ISA_AVX512;
}

/* Tile shape at a level: rows per tile (output pixels in the forward pass, input channels in the weight
 * gradient) and channel lanes per tile. */
static int fc_tile_pixels(int isa, int wide)
{
    if (fc_tile_is_wide(isa, wide))
        return 6;
    return isa == FC_ISA_AVX512 ? 14 : 6;
}

static int fc_tile_lanes(int isa, int itemsize, int wide)
{
    int vbytes = isa == FC_ISA_AVX512 ? 64 : isa == FC_ISA_AVX2 ? 32 : 16;
    return (fc_tile_is_wide(isa, wide) ? 4 : 2) * vbytes / itemsize;
}

/* Whether a reduction over `channels` output lanes (a group's output channels) takes the wide tile: where the
 * CPU has it and it pads those channels to no more lanes than the narrow one (64 channels yes, 32 or 96 no). */
static int fc_tile_wide_for(int isa, int itemsize, fc_index channels)
{
    fc_index narrow = fc_tile_lanes(isa, itemsize, 0), wide = fc_tile_lanes(isa, itemsize, 1);
    if (wide == narrow)
        return 0;
    return (channels + wide - 1) / wide * wide == (channels + narrow - 1) / narrow * narrow;
}

static fc_tile_f32 fc_tile_for_f32(int isa, int wide)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return wide ? fc_tile_f32_avx512_wide : fc_tile_f32_avx512;
    if (isa == FC_ISA_AVX2)
        return fc_tile_f32_avx2;
#endif
    (void)wide;
    return fc_tile_f32_baseline;
}

static fc_tile_f64 fc_tile_for_f64(int isa, int wide)
{
#if FC_HAVE_X86_DISPATCH
    if (isa == FC_ISA_AVX512)
        return wide ? fc_tile_f64_avx512_wide : fc_tile_f64_avx512;
    if (isa == FC_ISA_AVX2)
        return fc_tile_f64_avx2;
#endif
    (void)wide;
    return fc_tile_f64_baseline;
}

#endif

/* Inner loops of the depthwise convolution kernels (conv_depthwise.pyx), compiled for several instruction sets in
 * one binary and chosen at run time by cpu_dispatch's active level (the same numbering as direct_tile.h:
 * 0 baseline, 1 AVX2+FMA, 2 AVX-512), so FASTCONV_ISA selects them too.
 *
 * Two layouts of vector lanes:
 * - "channel" kernels (NHWC): a lane block is 64 bytes of consecutive channels (16 floats, 8 doubles) whatever
 *   the instruction set (1 AVX-512 vector, 2 AVX2 vectors, 4 SSE vectors), so packed buffers never depend on it;
 * - "row" kernels (NCHW): lanes run along a row of one channel plane; weights are broadcast scalars.
 * Every output element is produced by one call, summing its taps in the order given: results never depend on
 * how the caller shares the work between threads. */
#ifndef FASTCONV_DEPTHWISE_TILE_H
#define FASTCONV_DEPTHWISE_TILE_H

#include <stddef.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DW_HAVE_STREAM 1
#else
#define DW_HAVE_STREAM 0
#endif

typedef ptrdiff_t dw_index;

/* cpu_dispatch's levels (direct_tile.h's FC_ISA_*; tests/kernels/test_depthwise.py checks they agree). */
enum { DW_ISA_BASELINE = 0, DW_ISA_AVX2 = 1, DW_ISA_AVX512 = 2 };
/* Bytes of one lane block of the channel kernels. */
enum { DW_BLOCK_BYTES = 64 };

#define DW_CAT_(a, b) a##_##b
#define DW_CAT(a, b) DW_CAT_(a, b)

/* DW_WB: output pixels per register block of the channel kernels; DW_GWT: taps per weight-gradient pass;
 * DW_RB: vectors per register block of the row kernels; DW_WBT: most pixels per block of the kernel-row
 * kernels; DW_NREG: vector registers. */
#define DW_ATTR
#define DW_VBYTES 16
#define DW_WB 3
#define DW_GWT 3
#define DW_RB 6
#define DW_WBT 10
#define DW_NREG 16
#define DW_T float
#define DW_NAME dw_f32_baseline
#include "depthwise_tile_impl.h"
#undef DW_T
#undef DW_NAME
#define DW_T double
#define DW_NAME dw_f64_baseline
#include "depthwise_tile_impl.h"
#undef DW_T
#undef DW_NAME
#undef DW_ATTR
#undef DW_VBYTES
#undef DW_WB
#undef DW_GWT
#undef DW_RB
#undef DW_WBT
#undef DW_NREG

#if defined(__x86_64__) && defined(__GNUC__)
#define DW_HAVE_X86_DISPATCH 1
#define DW_ATTR __attribute__((target("avx2,fma")))
#define DW_VBYTES 32
#define DW_WB 6
#define DW_GWT 6
#define DW_RB 6
#define DW_WBT 12
#define DW_NREG 16
#define DW_T float
#define DW_NAME dw_f32_avx2
#include "depthwise_tile_impl.h"
#undef DW_T
#undef DW_NAME
#define DW_T double
#define DW_NAME dw_f64_avx2
#include "depthwise_tile_impl.h"
#undef DW_T
#undef DW_NAME
#undef DW_ATTR
#undef DW_VBYTES
#undef DW_WB
#undef DW_GWT
#undef DW_RB
#undef DW_WBT
#undef DW_NREG

#define DW_ATTR __attribute__((target("avx512f,fma")))
#define DW_VBYTES 64
#define DW_WB 12
#define DW_GWT 12
#define DW_RB 8
#define DW_WBT 14
#define DW_NREG 32
#define DW_T float
#define DW_NAME dw_f32_avx512
#include "depthwise_tile_impl.h"
#undef DW_T
#undef DW_NAME
#define DW_T double
#define DW_NAME dw_f64_avx512
#include "depthwise_tile_impl.h"
#undef DW_T
#undef DW_NAME
#undef DW_ATTR
#undef DW_VBYTES
#undef DW_WB
#undef DW_GWT
#undef DW_RB
#undef DW_WBT
#undef DW_NREG
#else
#define DW_HAVE_X86_DISPATCH 0
#endif

/* Orders this thread's non-temporal stores before whatever follows (call once at the end of its work). */
static void dw_store_fence(void)
{
#if DW_HAVE_STREAM
    _mm_sfence();
#endif
}

/* Taps one weight-gradient pass of the channel kernel accumulates at a level. */
static int dw_gw_taps(int isa)
{
    return isa == DW_ISA_AVX512 ? 12 : isa == DW_ISA_AVX2 ? 6 : 3;
}

/* Lanes of one vector of the row kernels at a level, for an element size. */
static int dw_row_lanes(int isa, int itemsize)
{
    return (isa == DW_ISA_AVX512 ? 64 : isa == DW_ISA_AVX2 ? 32 : 16) / itemsize;
}

#if DW_HAVE_X86_DISPATCH
#define DW_DISPATCH(T, fn, args, ...)                                                                             \
    do {                                                                                                          \
        if (isa == DW_ISA_AVX512)                                                                                 \
            __VA_ARGS__ DW_CAT(dw_##T##_avx512, fn) args;                                                         \
        else if (isa == DW_ISA_AVX2)                                                                              \
            __VA_ARGS__ DW_CAT(dw_##T##_avx2, fn) args;                                                           \
        else                                                                                                      \
            __VA_ARGS__ DW_CAT(dw_##T##_baseline, fn) args;                                                       \
    } while (0)
#else
#define DW_DISPATCH(T, fn, args, ...)                                                                             \
    do {                                                                                                          \
        __VA_ARGS__ DW_CAT(dw_##T##_baseline, fn) args;                                                           \
    } while (0)
#endif

#define DW_ENTRY_POINTS(T, TN)                                                                                    \
    static void dw_channels_##TN(int isa, dw_index n_taps, const T *const *a, dw_index a_off, dw_index a_step,    \
                                 const T *const *b, dw_index b_off, const T *init, dw_index count, T *out,        \
                                 dw_index ldo, int stream)                                                        \
    {                                                                                                             \
        DW_DISPATCH(TN, channels, (n_taps, a, a_off, a_step, b, b_off, init, count, out, ldo, stream));           \
    }                                                                                                             \
    static void dw_channels_gw_##TN(int isa, dw_index n_taps, const T *const *a, dw_index a_off, dw_index a_step, \
                                    const T *g, dw_index g_step, dw_index count, T *const *acc, dw_index acc_off) \
    {                                                                                                             \
        DW_DISPATCH(TN, channels_gw, (n_taps, a, a_off, a_step, g, g_step, count, acc, acc_off));                 \
    }                                                                                                             \
    static int dw_rowtaps_##TN(int isa, int S, int SW, dw_index n_rows, const T *const *a, dw_index a_off,     \
                               dw_index cs, const T *const *b, dw_index b_off, const T *init, dw_index count,     \
                               T *out, dw_index ldo, int stream, dw_index n_blocks, dw_index a_bstep,             \
                               dw_index b_bstep, dw_index i_bstep, dw_index o_bstep)                              \
    {                                                                                                             \
        int done;                                                                                                 \
        DW_DISPATCH(TN, rowtaps, (S, SW, n_rows, a, a_off, cs, b, b_off, init, count, out, ldo, stream, n_blocks, \
                                  a_bstep, b_bstep, i_bstep, o_bstep), done =);                                   \
        return done;                                                                                              \
    }                                                                                                             \
    static int dw_rowtaps_gw_rows_##TN(int isa, int S)                                                            \
    {                                                                                                             \
        int rows;                                                                                                 \
        DW_DISPATCH(TN, rowtaps_gw_rows, (S), rows =);                                                            \
        return rows;                                                                                              \
    }                                                                                                             \
    static int dw_rowtaps_gw_##TN(int isa, int S, int SW, dw_index n_rows, const T *const *a, dw_index a_off,  \
                                  const T *g, dw_index g_step, dw_index count, T *const *acc, dw_index acc_off,   \
                                  dw_index acc_step)                                                              \
    {                                                                                                             \
        int done;                                                                                                 \
        DW_DISPATCH(TN, rowtaps_gw, (S, SW, n_rows, a, a_off, g, g_step, count, acc, acc_off, acc_step),          \
                    done =);                                                                                      \
        return done;                                                                                              \
    }                                                                                                             \
    static void dw_pack_##TN(int isa, const T *src, dw_index C, dw_index W, dw_index M, dw_index pad_left,        \
                             dw_index n_cols, dw_index k_lo, dw_index width, dw_index n_blocks, dw_index c0,      \
                             dw_index c1, T *dst)                                                                 \
    {                                                                                                             \
        DW_DISPATCH(TN, pack, (src, C, W, M, pad_left, n_cols, k_lo, width, n_blocks, c0, c1, dst));              \
    }                                                                                                             \
    static void dw_rows_##TN(int isa, dw_index n_taps, const T *const *a, const T *w, T init, dw_index count,    \
                             T *out)                                                                              \
    {                                                                                                             \
        DW_DISPATCH(TN, rows, (n_taps, a, w, init, count, out));                                                  \
    }                                                                                                             \
    static void dw_rows_gw_##TN(int isa, dw_index n_taps, const T *const *a, const T *g, dw_index count, T *acc) \
    {                                                                                                             \
        DW_DISPATCH(TN, rows_gw, (n_taps, a, g, count, acc));                                                     \
    }

DW_ENTRY_POINTS(float, f32)
DW_ENTRY_POINTS(double, f64)

#endif

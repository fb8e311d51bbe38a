/* Channel loops of the channels_last max-pooling kernels (pooling.pyx), compiled for several instruction sets in
 * one binary and chosen at run time by cpu_dispatch's active level (direct_tile.h's numbering: 0 baseline,
 * 1 AVX2+FMA, 2 AVX-512), so FASTCONV_ISA selects them too. Pooling is memory-bound, but only wide vectors keep
 * up with memory: SSE2's compare-and-select runs at a third of the copy bandwidth on 2 cores.
 *
 * One call handles one output row (forward) or one input row (backward): the caller shares rows between threads,
 * and a call's result never depends on how. */
#ifndef FASTCONV_POOL_ROWS_H
#define FASTCONV_POOL_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef ptrdiff_t pr_index;

/* One image's pooling geometry (the caller's ConvGeometry without batch, groups and dilation). */
typedef struct {
    pr_index in_h, in_w, channels, out_h, out_w;
    pr_index kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;
} pr_dims;

/* Windows o in [*lo, *hi) that contain input index i: o * stride - pad <= i < o * stride - pad + size. */
static inline void pr_windows_covering(pr_index i, pr_index size, pr_index stride, pr_index pad, pr_index n_out,
                                       pr_index *lo, pr_index *hi)
{
    pr_index first = i + pad - size + 1; /* smallest window start that still reaches i */
    pr_index last = (i + pad) / stride;  /* i + pad >= 0 always */
    *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
    *hi = last + 1 < n_out ? last + 1 : n_out;
}

typedef void (*pr_max_row_f32)(const float *, float *, int64_t *, int32_t *, const pr_dims *, pr_index);
typedef void (*pr_max_row_f64)(const double *, double *, int64_t *, int32_t *, const pr_dims *, pr_index);
typedef int64_t (*pr_max_grad_row_f32)(const float *, const int64_t *, float *, const pr_dims *, pr_index);
typedef int64_t (*pr_max_grad_row_f64)(const double *, const int64_t *, double *, const pr_dims *, pr_index);
/* The same with window positions (uint8) for indices. */
typedef void (*pr_max_row_w_f32)(const float *, float *, uint8_t *, int32_t *, const pr_dims *, pr_index);
typedef void (*pr_max_row_w_f64)(const double *, double *, uint8_t *, int32_t *, const pr_dims *, pr_index);
typedef int64_t (*pr_max_grad_row_w_f32)(const float *, const uint8_t *, float *, const pr_dims *, pr_index);
typedef int64_t (*pr_max_grad_row_w_f64)(const double *, const uint8_t *, double *, const pr_dims *, pr_index);

#define PR_CAT_(a, b) a##_##b
#define PR_CAT(a, b) PR_CAT_(a, b)

#define PR_ATTR
#define PR_T float
#define PR_NARROW 1
#define PR_BASE pr_f32_baseline
#include "pool_rows_formats.h"
#undef PR_T
#undef PR_NARROW
#undef PR_BASE
#define PR_T double
#define PR_NARROW 0
#define PR_BASE pr_f64_baseline
#include "pool_rows_formats.h"
#undef PR_T
#undef PR_NARROW
#undef PR_BASE
#undef PR_ATTR

#if defined(__x86_64__) && defined(__GNUC__)
#define PR_HAVE_X86_DISPATCH 1
#define PR_ATTR __attribute__((target("avx2,fma")))
#define PR_T float
#define PR_NARROW 1
#define PR_BASE pr_f32_avx2
#include "pool_rows_formats.h"
#undef PR_T
#undef PR_NARROW
#undef PR_BASE
#define PR_T double
#define PR_NARROW 0
#define PR_BASE pr_f64_avx2
#include "pool_rows_formats.h"
#undef PR_T
#undef PR_NARROW
#undef PR_BASE
#undef PR_ATTR

/* 512-bit vectors asked for explicitly: gcc's generic tuning otherwise stops at 256 bits. */
#define PR_ATTR __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,prefer-vector-width=512")))
#define PR_T float
#define PR_NARROW 1
#define PR_BASE pr_f32_avx512
#include "pool_rows_formats.h"
#undef PR_T
#undef PR_NARROW
#undef PR_BASE
#define PR_T double
#define PR_NARROW 0
#define PR_BASE pr_f64_avx512
#include "pool_rows_formats.h"
#undef PR_T
#undef PR_NARROW
#undef PR_BASE
#undef PR_ATTR
#else
#define PR_HAVE_X86_DISPATCH 0
#endif

/* The kernels at a cpu_dispatch level. */
#if PR_HAVE_X86_DISPATCH
#define PR_PICK(isa, kind, dtype)                                                                                \
    ((isa) == 2 ? pr_##dtype##_avx512_##kind : (isa) == 1 ? pr_##dtype##_avx2_##kind : pr_##dtype##_baseline_##kind)
#else
#define PR_PICK(isa, kind, dtype) ((void)(isa), pr_##dtype##_baseline_##kind)
#endif

static pr_max_row_f32 pr_max_row_for_f32(int isa) { return PR_PICK(isa, max_row, f32); }
static pr_max_row_f64 pr_max_row_for_f64(int isa) { return PR_PICK(isa, max_row, f64); }
static pr_max_grad_row_f32 pr_max_grad_row_for_f32(int isa) { return PR_PICK(isa, max_grad_row, f32); }
static pr_max_grad_row_f64 pr_max_grad_row_for_f64(int isa) { return PR_PICK(isa, max_grad_row, f64); }
static pr_max_row_w_f32 pr_max_row_w_for_f32(int isa) { return PR_PICK(isa, w_max_row, f32); }
static pr_max_row_w_f64 pr_max_row_w_for_f64(int isa) { return PR_PICK(isa, w_max_row, f64); }
static pr_max_grad_row_w_f32 pr_max_grad_row_w_for_f32(int isa) { return PR_PICK(isa, w_max_grad_row, f32); }
static pr_max_grad_row_w_f64 pr_max_grad_row_w_for_f64(int isa) { return PR_PICK(isa, w_max_grad_row, f64); }

#endif

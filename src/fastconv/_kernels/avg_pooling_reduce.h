/* Blocked reductions for the avg_pooling kernels (avg_pooling.pyx).
 *
 * Plain C with `restrict` pointers (outputs never alias inputs) so that gcc vectorises them: the window sums keep
 * their block accumulators in vector registers; the maxima keep a small running state in local arrays (L1) that
 * the loop vectoriser handles. Every reduction visits its elements in a fixed order, so results do not depend on
 * how the caller splits work between threads.
 */
#ifndef FASTCONV_AVG_POOLING_REDUCE_H
#define FASTCONV_AVG_POOLING_REDUCE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* out[j] = scale * sum over (r, s) of x[r * row_stride + s * col_stride + j] for j < n, cells in row-major order.
 * Used for pooling windows (rows x cols cells of n channels) and for whole planes (rows = H * W, cols = 1). */
#define FC_WINDOW_SUM(NAME, T, BLOCK)                                                                         \
    static inline void NAME(const T *__restrict x, Py_ssize_t rows, Py_ssize_t row_stride, Py_ssize_t cols,  \
                            Py_ssize_t col_stride, Py_ssize_t n, T scale, T *__restrict out)                \
    {                                                                                                         \
        Py_ssize_t j = 0, r, s;                                                                               \
        int k;                                                                                                \
        for (; j + BLOCK <= n; j += BLOCK) {                                                                  \
            T acc[BLOCK];                                                                                     \
            for (k = 0; k < BLOCK; k++) acc[k] = 0;                                                           \
            for (r = 0; r < rows; r++)                                                                        \
                for (s = 0; s < cols; s++) {                                                                  \
                    const T *p = x + r * row_stride + s * col_stride + j;                                     \
                    for (k = 0; k < BLOCK; k++) acc[k] += p[k];                                               \
                }                                                                                             \
            for (k = 0; k < BLOCK; k++) out[j + k] = acc[k] * scale;                                          \
        }                                                                                                     \
        for (; j < n; j++) {                                                                                  \
            T a = 0;                                                                                          \
            for (r = 0; r < rows; r++)                                                                        \
                for (s = 0; s < cols; s++) a += x[r * row_stride + s * col_stride + j];                       \
            out[j] = a * scale;                                                                               \
        }                                                                                                     \
    }

FC_WINDOW_SUM(fc_window_sum_f32, float, 16)
FC_WINDOW_SUM(fc_window_sum_f64, double, 8)

/* The maxima follow max_pool2d's rule: a value wins when it is greater than the best so far or NaN, so the first
 * maximum wins ties and a later NaN takes over (the result is NaN as soon as one NaN is seen). */

/* Running column maxima of rows [r0, rows) of a matrix with n columns (row stride `stride`) into best[0..n),
 * with the winning row in at[0..n). Positions have type I (int32 beside float32 keeps the select loop in one
 * vector width). */
#define FC_COLUMN_ARGMAX(NAME, T, I)                                                                          \
    static inline void NAME(const T *__restrict x, Py_ssize_t r0, Py_ssize_t rows, Py_ssize_t stride,         \
                            Py_ssize_t n, T *__restrict best, I *__restrict at)                               \
    {                                                                                                         \
        Py_ssize_t r, j;                                                                                      \
        for (r = r0; r < rows; r++) {                                                                         \
            const T *p = x + r * stride;                                                                      \
            for (j = 0; j < n; j++) {                                                                         \
                T v = p[j], b = best[j];                                                                      \
                int take = v > b || v != v;                                                                   \
                best[j] = take ? v : b;                                                                       \
                at[j] = take ? (I)r : at[j];                                                                  \
            }                                                                                                 \
        }                                                                                                     \
    }

/* The same without positions: the plain maximum (a maxps) and, beside it, whether a NaN was seen (M is an
 * integer type of T's width); the caller turns the columns that saw a NaN into NaN. */
#define FC_COLUMN_MAX(NAME, T, M)                                                                             \
    static inline void NAME(const T *__restrict x, Py_ssize_t r0, Py_ssize_t rows, Py_ssize_t stride,         \
                            Py_ssize_t n, T *__restrict best, M *__restrict nan)                              \
    {                                                                                                         \
        Py_ssize_t r, j;                                                                                      \
        for (r = r0; r < rows; r++) {                                                                         \
            const T *p = x + r * stride;                                                                      \
            for (j = 0; j < n; j++) {                                                                         \
                T v = p[j], b = best[j];                                                                      \
                best[j] = v > b ? v : b;                                                                      \
                nan[j] |= v != v;                                                                             \
            }                                                                                                 \
        }                                                                                                     \
    }

/* Channels per block of the channel maxima, and lanes of the plane maximum. */
#define FC_MAX_BLOCK 64
#define FC_MAX_LANES 32

/* out[j] = max over r of x[r * stride + j] for j < n and, unless where is NULL, where[j] = the winning r. */
#define FC_CHANNEL_MAX(NAME, T, I, M)                                                                         \
    FC_COLUMN_ARGMAX(NAME##_tracked, T, I)                                                                    \
    FC_COLUMN_MAX(NAME##_values, T, M)                                                                        \
    static inline void NAME(const T *__restrict x, Py_ssize_t rows, Py_ssize_t stride, Py_ssize_t n,          \
                            T *__restrict out, int64_t *__restrict where)                                     \
    {                                                                                                         \
        T best[FC_MAX_BLOCK];                                                                                 \
        I at[FC_MAX_BLOCK];                                                                                   \
        M nan[FC_MAX_BLOCK];                                                                                  \
        Py_ssize_t j0, j, m;                                                                                  \
        for (j0 = 0; j0 < n; j0 += FC_MAX_BLOCK) {                                                            \
            m = n - j0 < FC_MAX_BLOCK ? n - j0 : FC_MAX_BLOCK;                                                \
            for (j = 0; j < m; j++) {                                                                         \
                best[j] = -INFINITY;                                                                          \
                at[j] = 0;                                                                                    \
                nan[j] = 0;                                                                                   \
            }                                                                                                 \
            if (where) {                                                                                      \
                NAME##_tracked(x + j0, 0, rows, stride, m, best, at);                                            \
                for (j = 0; j < m; j++) {                                                                     \
                    out[j0 + j] = best[j];                                                                    \
                    where[j0 + j] = at[j];                                                                    \
                }                                                                                             \
            } else {                                                                                          \
                NAME##_values(x + j0, 0, rows, stride, m, best, nan);                                            \
                for (j = 0; j < m; j++) out[j0 + j] = nan[j] ? (T)NAN : best[j];                              \
            }                                                                                                 \
        }                                                                                                     \
    }

/* The maximum of n contiguous values and (through *where, unless NULL) its position. The values are read as
 * rows of FC_MAX_LANES lanes, the last row partial; merging the lanes (NaN lanes: the last NaN; otherwise the
 * largest value, ties to the smaller position) gives exactly the sequential scan's answer.
 * Lanes past a short plane keep -infinity at positions >= n and never beat a real cell. */
#define FC_PLANE_MAX(NAME, T, I, M)                                                                           \
    FC_COLUMN_ARGMAX(NAME##_tracked, T, I)                                                                    \
    FC_COLUMN_MAX(NAME##_values, T, M)                                                                        \
    static inline T NAME(const T *__restrict x, Py_ssize_t n, int64_t *__restrict where)                      \
    {                                                                                                         \
        Py_ssize_t rows = n / FC_MAX_LANES, tail = n - rows * FC_MAX_LANES;                                   \
        T best[FC_MAX_LANES];                                                                                 \
        I at[FC_MAX_LANES];                                                                                   \
        M nan[FC_MAX_LANES];                                                                                  \
        T value[FC_MAX_LANES];                                                                                \
        Py_ssize_t pos[FC_MAX_LANES], w;                                                                      \
        int k, half;                                                                                          \
        for (k = 0; k < FC_MAX_LANES; k++) {                                                                  \
            best[k] = -INFINITY;                                                                              \
            at[k] = 0;                                                                                        \
            nan[k] = 0;                                                                                       \
        }                                                                                                     \
        if (!where) {                                                                                         \
            NAME##_values(x, 0, rows, FC_MAX_LANES, FC_MAX_LANES, best, nan);                                 \
            NAME##_values(x, rows, rows + 1, FC_MAX_LANES, tail, best, nan);                                  \
            for (half = FC_MAX_LANES / 2; half > 0; half /= 2)                                                \
                for (k = 0; k < half; k++) {                                                                  \
                    best[k] = best[k + half] > best[k] ? best[k + half] : best[k];                            \
                    nan[k] |= nan[k + half];                                                                  \
                }                                                                                             \
            return nan[0] ? (T)NAN : best[0];                                                                 \
        }                                                                                                     \
        NAME##_tracked(x, 0, rows, FC_MAX_LANES, FC_MAX_LANES, best, at);                                     \
        NAME##_tracked(x, rows, rows + 1, FC_MAX_LANES, tail, best, at);                                      \
        /* The value first (a tree; a lane that saw a NaN holds NaN), then its position: the last NaN,        \
           or the first position holding the maximum. */                                                    \
        for (k = 0; k < FC_MAX_LANES; k++) {                                                                  \
            pos[k] = (Py_ssize_t)at[k] * FC_MAX_LANES + k;                                                    \
            value[k] = best[k];                                                                               \
            nan[k] = best[k] != best[k];                                                                      \
        }                                                                                                     \
        for (half = FC_MAX_LANES / 2; half > 0; half /= 2)                                                    \
            for (k = 0; k < half; k++) {                                                                      \
                value[k] = value[k + half] > value[k] ? value[k + half] : value[k];                           \
                nan[k] |= nan[k + half];                                                                      \
            }                                                                                                 \
        w = nan[0] ? -1 : n;                                                                                  \
        for (k = 0; k < FC_MAX_LANES; k++) {                                                                  \
            Py_ssize_t pk = pos[k];                                                                           \
            if (nan[0])                                                                                       \
                w = best[k] != best[k] && pk > w ? pk : w;                                                    \
            else                                                                                              \
                w = best[k] == value[0] && pk < w ? pk : w;                                                   \
        }                                                                                                     \
        *where = w;                                                                                           \
        return nan[0] ? (T)NAN : value[0];                                                                    \
    }

FC_CHANNEL_MAX(fc_channel_max_f32, float, int32_t, int32_t)
FC_CHANNEL_MAX(fc_channel_max_wide_f32, float, int64_t, int32_t) /* more than INT32_MAX rows */
FC_CHANNEL_MAX(fc_channel_max_f64, double, int64_t, int64_t)
FC_PLANE_MAX(fc_plane_max_f32, float, int32_t, int32_t)
FC_PLANE_MAX(fc_plane_max_wide_f32, float, int64_t, int32_t)     /* more than INT32_MAX rows of lanes */
FC_PLANE_MAX(fc_plane_max_f64, double, int64_t, int64_t)

#endif

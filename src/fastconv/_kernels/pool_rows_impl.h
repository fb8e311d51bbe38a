/* The channels_last max-pooling row kernels, instantiated once per (dtype, instruction set, index format) by
 * pool_rows.h. Parameters (macros): PR_T element type, PR_NAME name prefix, PR_ATTR target attribute, PR_NARROW 1
 * where the winner's position may be tracked in int32 lanes (float: same width as the values, so the select
 * vectorises), PR_WINDOW 0 for flat positions in the plane (h * W + w, int64), 1 for positions in the window
 * (dy * kernel_w + dx, padded cells counted, uint8), PR_I the index type.
 *
 * Rules (pooling.pyx's): NaN beats any number and a later NaN takes the index; among equal maxima the first in
 * row-major window order wins; padded cells never win; a window's index starts at its first real cell. The loops
 * are branch-free selects over channels so that they vectorise. */

/* The index of input cell (ih, iw) in the current window (max_row's h_start, w_start) or in the plane. */
#undef PR_POSITION
#if PR_WINDOW
#define PR_POSITION(ih, iw) (((ih) - h_start) * d->kernel_w + ((iw) - w_start))
#else
#define PR_POSITION(ih, iw) ((ih) * W + (iw))
#endif

#if PR_NARROW
typedef int32_t PR_CAT(PR_NAME, flat_t);
#else
typedef int64_t PR_CAT(PR_NAME, flat_t);
#endif

/* One window of exactly `n_taps` cells, given as pointers to their channel vectors in row-major order (and, when
 * best_at is not NULL, their flat positions). The best value and position stay in registers across the taps: the
 * running-best loop below keeps them in `out`, and on 2x2 pooling that store-to-load chain, not memory, set the
 * pace. Inlined with a constant n_taps, so the tap loop unrolls and the channel loop vectorises. */
PR_ATTR static inline __attribute__((always_inline)) void PR_CAT(PR_NAME, max_taps)(
    const PR_T *const *taps, const PR_CAT(PR_NAME, flat_t) *flat, int n_taps, PR_T *restrict best,
    PR_I *restrict best_at, pr_index C)
{
    pr_index c;
    int t;

    if (!best_at) {
        for (c = 0; c < C; c++) {
            PR_T b = taps[0][c];
            for (t = 1; t < n_taps; t++) {
                PR_T v = taps[t][c];
                b = ((v > b) | (v != v)) ? v : b;
            }
            best[c] = b;
        }
        return;
    }
    for (c = 0; c < C; c++) {
        PR_T b = taps[0][c];
        PR_CAT(PR_NAME, flat_t) w = flat[0];
        for (t = 1; t < n_taps; t++) {
            PR_T v = taps[t][c];
            int take = (v > b) | (v != v);
            b = take ? v : b;
            w = take ? flat[t] : w;
        }
        best[c] = b;
        best_at[c] = (PR_I)w;
    }
}

/* Forward, one output row `ho` of one image: out (and indices, when not NULL) of shape (out_w, channels).
 * `where`: scratch of `channels` int32, used when PR_NARROW and the plane has at most INT32_MAX cells. */
PR_ATTR static void PR_CAT(PR_NAME, max_row)(const PR_T *restrict image, PR_T *restrict out,
                                             PR_I *restrict indices, int32_t *restrict where, const pr_dims *d,
                                             pr_index ho)
{
    const pr_index C = d->channels, W = d->in_w;
    const pr_index h_start = ho * d->stride_h - d->pad_top;
    const pr_index ih0 = h_start > 0 ? h_start : 0;
    const pr_index ih1 = h_start + d->kernel_h < d->in_h ? h_start + d->kernel_h : d->in_h;
    const int narrow = PR_NARROW && d->in_h * d->in_w <= INT32_MAX;
    pr_index wo, ih, iw, c;

    for (wo = 0; wo < d->out_w; wo++) {
        const pr_index w_start = wo * d->stride_w - d->pad_left;
        const pr_index iw0 = w_start > 0 ? w_start : 0;
        const pr_index iw1 = w_start + d->kernel_w < W ? w_start + d->kernel_w : W;
        PR_T *restrict best = out + wo * C;
        PR_I *restrict best_at = indices ? indices + wo * C : NULL;

        const int n_taps = (int)((ih1 - ih0) * (iw1 - iw0));
        if ((n_taps == 4 || n_taps == 6 || n_taps == 9) && (narrow || !PR_NARROW || !indices)) {
            const PR_T *taps[9];
            PR_CAT(PR_NAME, flat_t) flat[9];
            int t = 0;
            for (ih = ih0; ih < ih1; ih++)
                for (iw = iw0; iw < iw1; iw++, t++) {
                    taps[t] = image + (ih * W + iw) * C;
                    flat[t] = (PR_CAT(PR_NAME, flat_t))PR_POSITION(ih, iw);
                }
            /* one call per constant, so that each inlined copy is specialised */
            if (n_taps == 4)
                PR_CAT(PR_NAME, max_taps)(taps, flat, 4, best, best_at, C);
            else if (n_taps == 6)
                PR_CAT(PR_NAME, max_taps)(taps, flat, 6, best, best_at, C);
            else
                PR_CAT(PR_NAME, max_taps)(taps, flat, 9, best, best_at, C);
            continue;
        }
        for (c = 0; c < C; c++)
            best[c] = -INFINITY;
        if (!indices) {
            for (ih = ih0; ih < ih1; ih++)
                for (iw = iw0; iw < iw1; iw++) {
                    const PR_T *restrict xp = image + (ih * W + iw) * C;
                    for (c = 0; c < C; c++) {
                        PR_T v = xp[c], b = best[c];
                        best[c] = ((v > b) | (v != v)) ? v : b;
                    }
                }
        } else if (narrow) {
            const int32_t first = (int32_t)PR_POSITION(ih0, iw0);
            for (c = 0; c < C; c++)
                where[c] = first;
            for (ih = ih0; ih < ih1; ih++)
                for (iw = iw0; iw < iw1; iw++) {
                    const PR_T *restrict xp = image + (ih * W + iw) * C;
                    const int32_t flat = (int32_t)PR_POSITION(ih, iw);
                    for (c = 0; c < C; c++) {
                        PR_T v = xp[c], b = best[c];
                        int take = (v > b) | (v != v);
                        best[c] = take ? v : b;
                        where[c] = take ? flat : where[c];
                    }
                }
            for (c = 0; c < C; c++)
                best_at[c] = (PR_I)where[c];
        } else {
            const PR_I first = (PR_I)PR_POSITION(ih0, iw0);
            for (c = 0; c < C; c++)
                best_at[c] = first;
            for (ih = ih0; ih < ih1; ih++)
                for (iw = iw0; iw < iw1; iw++) {
                    const PR_T *restrict xp = image + (ih * W + iw) * C;
                    const PR_I flat = (PR_I)PR_POSITION(ih, iw);
                    for (c = 0; c < C; c++) {
                        PR_T v = xp[c], b = best[c];
                        int take = (v > b) | (v != v);
                        best[c] = take ? v : b;
                        best_at[c] = take ? flat : best_at[c];
                    }
                }
        }
    }
}

/* Backward, one input row `ih` of one image, gathered: each input cell sums the gradients of the windows that
 * contain it and chose it, in row-major window order (the order a scatter over the outputs adds them), and is
 * written once -- no zeroing pass, no scatter, the channel loop vectorises, and no index can reach outside the
 * row. grad_out and indices are the image's (out_h, out_w, channels) arrays; grad_in the row (in_w, channels).
 * Returns how many (window, channel) pairs found their index in this row's cells: summed over all rows it equals
 * the number of grad_out cells exactly when every index lies inside its own window. */
PR_ATTR static int64_t PR_CAT(PR_NAME, max_grad_row)(const PR_T *restrict grad_out, const PR_I *restrict indices,
                                                     PR_T *restrict grad_in, const pr_dims *d, pr_index ih)
{
    const pr_index C = d->channels, W = d->in_w, Wo = d->out_w;
    pr_index ho_lo, ho_hi, wo_lo, wo_hi, iw, ho, wo, c;
    int64_t matches = 0;

    pr_windows_covering(ih, d->kernel_h, d->stride_h, d->pad_top, d->out_h, &ho_lo, &ho_hi);
    for (iw = 0; iw < W; iw++) {
        PR_T *restrict dst = grad_in + iw * C;
        int first = 1;

        pr_windows_covering(iw, d->kernel_w, d->stride_w, d->pad_left, Wo, &wo_lo, &wo_hi);
        for (ho = ho_lo; ho < ho_hi; ho++)
            for (wo = wo_lo; wo < wo_hi; wo++) {
                const PR_T *restrict gp = grad_out + (ho * Wo + wo) * C;
                const PR_I *restrict ip = indices + (ho * Wo + wo) * C;
#if PR_WINDOW
                const PR_I flat = (PR_I)((ih - (ho * d->stride_h - d->pad_top)) * d->kernel_w
                                         + (iw - (wo * d->stride_w - d->pad_left)));
#else
                const int64_t flat = ih * W + iw;
#endif
                if (first) {
                    for (c = 0; c < C; c++) {
                        int hit = ip[c] == flat;
                        dst[c] = hit ? gp[c] : (PR_T)0;
                        matches += hit;
                    }
                    first = 0;
                } else {
                    for (c = 0; c < C; c++) {
                        int hit = ip[c] == flat;
                        dst[c] += hit ? gp[c] : (PR_T)0;
                        matches += hit;
                    }
                }
            }
        if (first) /* a cell no window covers (beyond the last window, or skipped by a large stride) */
            for (c = 0; c < C; c++)
                dst[c] = 0;
    }
    return matches;
}

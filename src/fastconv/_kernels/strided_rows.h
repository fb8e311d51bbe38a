/* Copies n_rows rows of row_bytes each, src_stride bytes apart, into consecutive rows of dst: the tiled forward's
 * per-pass copy of one block of output channels out of HWIO, whose rows (one per tap and input channel) lie a
 * whole kernel row apart (2 KiB on VGG's 512-channel layers). Each row is one or a few cache lines from L3 or
 * memory; copied one memcpy call after another the misses came one at a time (vgg_conv5_2 on Zen 3 at one thread:
 * 17% of the call in memcpy). Rows PREFETCH_ROWS ahead are prefetched, so that many misses are in flight, and
 * the common row sizes (64, 128, 256 bytes: one block of lanes) are copied inline. */
#ifndef FASTCONV_STRIDED_ROWS_H
#define FASTCONV_STRIDED_ROWS_H

#include <stddef.h>
#include <string.h>

enum { FC_STRIDED_ROWS_PREFETCH_ROWS = 32 };

static inline void fc_prefetch_row(const char *row, ptrdiff_t row_bytes)
{
    for (ptrdiff_t b = 0; b < row_bytes; b += 64)
        __builtin_prefetch(row + b, 0, 3);
}

static inline void fc_copy_strided_rows(const void *src, ptrdiff_t src_stride, void *dst, ptrdiff_t n_rows,
                                        ptrdiff_t row_bytes)
{
    const char *s = (const char *)src;
    char *d = (char *)dst;
    ptrdiff_t i, ahead = n_rows < FC_STRIDED_ROWS_PREFETCH_ROWS ? n_rows : FC_STRIDED_ROWS_PREFETCH_ROWS;

    for (i = 0; i < ahead; i++)
        fc_prefetch_row(s + i * src_stride, row_bytes);
    for (i = 0; i < n_rows; i++) {
        if (i + FC_STRIDED_ROWS_PREFETCH_ROWS < n_rows)
            fc_prefetch_row(s + (i + FC_STRIDED_ROWS_PREFETCH_ROWS) * src_stride, row_bytes);
        const char *from = s + i * src_stride;
        char *to = d + i * row_bytes;
        switch (row_bytes) {  /* (constant sizes: copied with vector moves, no call) */
        case 64: memcpy(to, from, 64); break;
        case 128: memcpy(to, from, 128); break;
        case 256: memcpy(to, from, 256); break;
        default: memcpy(to, from, (size_t)row_bytes);
        }
    }
}

#endif

/* Work buffers aligned to 64 bytes, a cache line and an AVX-512 vector. malloc aligns to 16 only, and a vector
 * load that straddles two lines costs two: a 6x4 forward tile whose weight vectors sat 16 bytes off a line ran
 * 15-20% slower (MNIST's second conv, one thread), a weight gradient reading an output gradient 16 bytes off
 * 8-13% slower. Free with fc_aligned_free. */
#ifndef FASTCONV_ALIGNED_BUFFER_H
#define FASTCONV_ALIGNED_BUFFER_H

#include <stdlib.h>
#if defined(_WIN32)
#include <malloc.h>
#endif

enum { FC_BUFFER_ALIGN = 64 };

static inline void *fc_aligned_malloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0)
        bytes = FC_BUFFER_ALIGN;
#if defined(_WIN32)
    p = _aligned_malloc(bytes, FC_BUFFER_ALIGN);
#else
    if (posix_memalign(&p, FC_BUFFER_ALIGN, bytes) != 0)
        p = NULL;
#endif
    return p;
}

static inline void fc_aligned_free(void *p)
{
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

#endif

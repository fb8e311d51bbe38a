/* A NumPy data-memory handler that keeps recently freed large blocks for reuse (block_cache.pyx).
 *
 * Why: glibc hands out every allocation above its mmap threshold (at most 32 MiB) as fresh pages, and the first
 * write to each page faults. For a 90 MB convolution output that costs 16-20 ms, as long as the convolution
 * itself, on every call. A block kept from an earlier call of the same size is already mapped. Blocks are kept
 * from 128 KiB, glibc's default mmap threshold, up: the 0.1-1 MB activations of the MNIST convnet's training step
 * otherwise faulted about 1000 pages a step (6.3-8.1 ms a step; 5.2 ms with them kept, under one fault a step),
 * and one such step frees about 40 blocks, hence 64 slots.
 *
 * Every block carries a 64-byte header with its usable size, so the data is 64-byte aligned and a freed block's
 * size is known exactly whatever NumPy passes to free. Only blocks of at least FC_CACHE_MIN_BYTES are kept, at
 * most FC_CACHE_SLOTS of them and at most `limit` bytes together (oldest given back first); a request takes a kept
 * block of exactly its size. All entry points may run without the GIL: a PyThread lock guards the slots. */
#ifndef FASTCONV_BLOCK_CACHE_H
#define FASTCONV_BLOCK_CACHE_H

#include <Python.h>
#include <pythread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

enum { FC_CACHE_HEADER = 64, FC_CACHE_SLOTS = 64 };
#define FC_CACHE_MIN_BYTES ((size_t)128 << 10)

typedef struct {
    void *base;   /* what aligned_alloc returned; NULL for an empty slot */
    size_t size;  /* usable bytes after the header */
    uint64_t age; /* order of arrival, to give back the oldest first */
} fc_cache_slot;

typedef struct {
    PyThread_type_lock lock;
    fc_cache_slot slots[FC_CACHE_SLOTS];
    size_t held, limit;
    uint64_t clock, hits, misses;
} fc_block_cache;

static fc_block_cache fc_cache;

static int fc_cache_init(size_t limit)
{
    memset(&fc_cache, 0, sizeof fc_cache);
    fc_cache.limit = limit;
    fc_cache.lock = PyThread_allocate_lock();
    return fc_cache.lock != NULL ? 0 : -1;
}

static void *fc_block_data(void *base, size_t size)
{
    *(size_t *)base = size;
    return (char *)base + FC_CACHE_HEADER;
}

static void *fc_block_base(void *data) { return (char *)data - FC_CACHE_HEADER; }

static size_t fc_block_size(void *data) { return *(size_t *)fc_block_base(data); }

static void *fc_block_new(size_t size)
{
    size_t total;
    void *base;
    if (size > SIZE_MAX - 2 * FC_CACHE_HEADER)
        return NULL;
    total = (size + FC_CACHE_HEADER + FC_CACHE_HEADER - 1) / FC_CACHE_HEADER * FC_CACHE_HEADER;
    base = aligned_alloc(FC_CACHE_HEADER, total);
    if (base == NULL)
        return NULL;
#if defined(MADV_HUGEPAGE)
    /* As NumPy's own handler does: transparent huge pages, where the system gives them only on request, for the
     * whole 2 MiB pages inside a large block (512 times fewer first-touch faults). */
    if (total >= FC_CACHE_MIN_BYTES) {
        uintptr_t start = ((uintptr_t)base + ((uintptr_t)1 << 21) - 1) & ~(((uintptr_t)1 << 21) - 1);
        uintptr_t end = ((uintptr_t)base + total) & ~(((uintptr_t)1 << 21) - 1);
        if (end > start)
            madvise((void *)start, end - start, MADV_HUGEPAGE);
    }
#endif
    return fc_block_data(base, size);
}

/* A kept block of exactly `size` bytes, taken out of the cache, or NULL. */
static void *fc_cache_take(size_t size)
{
    void *data = NULL;
    int i;
    if (size < FC_CACHE_MIN_BYTES)
        return NULL;
    PyThread_acquire_lock(fc_cache.lock, WAIT_LOCK);
    for (i = 0; i < FC_CACHE_SLOTS; i++)
        if (fc_cache.slots[i].base != NULL && fc_cache.slots[i].size == size) {
            data = (char *)fc_cache.slots[i].base + FC_CACHE_HEADER;
            fc_cache.slots[i].base = NULL;
            fc_cache.held -= size;
            break;
        }
    if (data != NULL)
        fc_cache.hits++;
    else
        fc_cache.misses++;
    PyThread_release_lock(fc_cache.lock);
    return data;
}

/* Under the lock: takes the oldest kept block out of the cache and returns its base (NULL when none is kept). */
static void *fc_cache_evict_oldest(void)
{
    void *base;
    int i, oldest = -1;
    for (i = 0; i < FC_CACHE_SLOTS; i++)
        if (fc_cache.slots[i].base != NULL && (oldest < 0 || fc_cache.slots[i].age < fc_cache.slots[oldest].age))
            oldest = i;
    if (oldest < 0)
        return NULL;
    base = fc_cache.slots[oldest].base;
    fc_cache.held -= fc_cache.slots[oldest].size;
    fc_cache.slots[oldest].base = NULL;
    return base;
}

/* Under the lock: an empty slot, or -1. */
static int fc_cache_free_slot(void)
{
    int i;
    for (i = 0; i < FC_CACHE_SLOTS; i++)
        if (fc_cache.slots[i].base == NULL)
            return i;
    return -1;
}

/* Keeps the block when it is large and fits under the limit, after giving back the oldest blocks that stand in
 * its way; otherwise frees it. The blocks given back are freed outside the lock. */
static void fc_cache_give(void *data)
{
    void *evicted[FC_CACHE_SLOTS];
    size_t size = fc_block_size(data);
    int n_evicted = 0, i, slot;
    if (size < FC_CACHE_MIN_BYTES) {
        free(fc_block_base(data));
        return;
    }
    PyThread_acquire_lock(fc_cache.lock, WAIT_LOCK);
    if (size > fc_cache.limit) {
        PyThread_release_lock(fc_cache.lock);
        free(fc_block_base(data));
        return;
    }
    /* (size <= limit: while the block does not fit, some block is kept, so one can be given back) */
    while ((slot = fc_cache_free_slot()) < 0 || fc_cache.held + size > fc_cache.limit)
        evicted[n_evicted++] = fc_cache_evict_oldest();
    fc_cache.slots[slot].base = fc_block_base(data);
    fc_cache.slots[slot].size = size;
    fc_cache.slots[slot].age = fc_cache.clock++;
    fc_cache.held += size;
    PyThread_release_lock(fc_cache.lock);
    for (i = 0; i < n_evicted; i++)
        free(evicted[i]);
}

/* Gives back kept blocks until at most `limit` bytes are held, and makes `limit` the new cap. */
static void fc_cache_set_limit(size_t limit)
{
    void *evicted[FC_CACHE_SLOTS];
    int n_evicted = 0, i;
    PyThread_acquire_lock(fc_cache.lock, WAIT_LOCK);
    fc_cache.limit = limit;
    while (fc_cache.held > limit)
        evicted[n_evicted++] = fc_cache_evict_oldest();
    PyThread_release_lock(fc_cache.lock);
    for (i = 0; i < n_evicted; i++)
        free(evicted[i]);
}

/* The PyDataMem_Handler entry points. */
static void *fc_cache_malloc(void *ctx, size_t size)
{
    void *data = fc_cache_take(size);
    (void)ctx;
    return data != NULL ? data : fc_block_new(size);
}

static void *fc_cache_calloc(void *ctx, size_t nelem, size_t elsize)
{
    void *data;
    if (elsize != 0 && nelem > SIZE_MAX / elsize)
        return NULL;
    data = fc_cache_malloc(ctx, nelem * elsize);
    if (data != NULL)
        memset(data, 0, nelem * elsize);
    return data;
}

static void fc_cache_free(void *ctx, void *data, size_t size)
{
    (void)ctx;
    (void)size;  /* (the header's size is the one that counts) */
    if (data != NULL)
        fc_cache_give(data);
}

static void *fc_cache_realloc(void *ctx, void *data, size_t new_size)
{
    void *moved;
    size_t old_size;
    if (data == NULL)
        return fc_cache_malloc(ctx, new_size);
    old_size = fc_block_size(data);
    if (new_size <= old_size && old_size - new_size < FC_CACHE_MIN_BYTES)
        return data;  /* shrinking a little: keep the block (its header keeps the true size) */
    moved = fc_cache_malloc(ctx, new_size);
    if (moved == NULL)
        return NULL;
    memcpy(moved, data, old_size < new_size ? old_size : new_size);
    fc_cache_give(data);
    return moved;
}

#endif

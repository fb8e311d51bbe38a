"""A NumPy memory handler that reuses recently freed large blocks (block_cache.h), for the arrays fastconv allocates.

fastconv's functions allocate their outputs and work arrays under this handler (fastconv._memory); the arrays
remember it, so when they are freed, wherever that happens, their blocks come back here. NumPy's own handler stays
in force for everything else.
"""
from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport strncpy

cimport numpy as cnp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void* ctx
        void* (*malloc)(void*, size_t) noexcept nogil
        void* (*calloc)(void*, size_t, size_t) noexcept nogil
        void* (*realloc)(void*, void*, size_t) noexcept nogil
        void (*free)(void*, void*, size_t) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)

cdef extern from "pythread.h" nogil:
    ctypedef void* PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock()

cdef extern from "block_cache.h" nogil:
    ctypedef struct fc_block_cache:
        PyThread_type_lock lock
        size_t held, limit
        uint64_t hits, misses
    fc_block_cache fc_cache
    size_t FC_CACHE_MIN_BYTES
    int FC_CACHE_SLOTS
    int fc_cache_init(size_t limit)
    void fc_cache_set_limit(size_t limit)
    void* fc_cache_malloc(void* ctx, size_t size)
    void* fc_cache_calloc(void* ctx, size_t nelem, size_t elsize)
    void* fc_cache_realloc(void* ctx, void* data, size_t new_size)
    void fc_cache_free(void* ctx, void* data, size_t size)

# Default cap on the bytes kept: room for the large activations and gradients of one training step of a small
# convnet (the 150x150 one at batch 32 frees about 300 MB of blocks over 128 KiB per step).
DEFAULT_LIMIT = 512 << 20
MIN_BLOCK_BYTES = FC_CACHE_MIN_BYTES
SLOTS = FC_CACHE_SLOTS

cdef PyDataMem_Handler handler_struct
strncpy(handler_struct.name, b"fastconv_block_cache", 126)
handler_struct.version = 1
handler_struct.allocator.ctx = NULL
handler_struct.allocator.malloc = fc_cache_malloc
handler_struct.allocator.calloc = fc_cache_calloc
handler_struct.allocator.realloc = fc_cache_realloc
handler_struct.allocator.free = fc_cache_free
if fc_cache_init(DEFAULT_LIMIT) != 0:
    raise MemoryError("fastconv: could not allocate the block cache's lock")
cdef object handler_capsule = PyCapsule_New(&handler_struct, "mem_handler", NULL)

HANDLER_NAME = "fastconv_block_cache"


def install():
    """Makes this handler NumPy's for the current context; returns the one it replaces (give it to restore)."""
    return PyDataMem_SetHandler(handler_capsule)


def restore(previous):
    PyDataMem_SetHandler(previous)


def set_limit(size_t limit):
    """Caps the bytes kept (0: keep none), giving back the oldest blocks above the cap now."""
    fc_cache_set_limit(limit)


def stats():
    """(bytes held, cap, hits, misses)."""
    return fc_cache.held, fc_cache.limit, fc_cache.hits, fc_cache.misses


def _after_fork_in_child():
    """A fresh lock: another thread of the parent may have held the old one at the fork. (The kept blocks are
    the child's own copies and stay valid.)"""
    cdef PyThread_type_lock fresh = PyThread_allocate_lock()
    if fresh != NULL:
        fc_cache.lock = fresh


def misalignment(cnp.ndarray a, size_t alignment):
    """How many bytes past a multiple of `alignment` the data of `a` starts (a.ctypes.data took 1.5 us)."""
    return <size_t> cnp.PyArray_DATA(a) % alignment

"""Where fastconv's arrays get their memory: a cache of recently freed large blocks (_kernels/block_cache).

glibc maps every allocation above its mmap threshold (at most 32 MiB) as fresh pages, and the first write to
each page faults: 16-20 ms for a 90 MB convolution output on this project's test machine, as long as the
convolution. fastconv's functions therefore allocate under a NumPy memory handler that keeps freed blocks of
128 KiB and more (up to a cap, 512 MiB by default) and hands them out again for requests of the same size, as
onnxruntime's arena and PyTorch's GPU caching allocator do. The arrays remember the handler, so their blocks come
back to it however and wherever they are freed; every other NumPy allocation keeps NumPy's own handler.
The data of every array allocated this way is 64-byte aligned.

FASTCONV_BLOCK_CACHE_MB sets the cap at import; set_block_cache_limit(0) turns the cache off (kept blocks are
freed at once).
"""
import functools
import math
import os
import warnings

import numpy as np

from fastconv import _validation as check
from fastconv._kernels import block_cache


def _limit_from_environment():
    value = os.environ.get("FASTCONV_BLOCK_CACHE_MB")
    if value is None or value.strip() == "":
        return None
    try:
        mib = float(value)
    except ValueError:
        mib = -1.0
    if not 0 <= mib < float(1 << 40):
        warnings.warn(f"FASTCONV_BLOCK_CACHE_MB must be a number of MiB, at least 0; received "
                      f"FASTCONV_BLOCK_CACHE_MB={value!r}; keeping the default cap")
        return None
    return int(mib * (1 << 20))


def set_block_cache_limit(max_bytes):
    """Cap the memory fastconv keeps in freed blocks for reuse (default 512 MiB; 0 keeps none). Blocks held
    above the new cap are freed now."""
    limit = check._int(max_bytes, "max_bytes")
    if limit < 0:
        raise ValueError(f"max_bytes must be at least 0; received max_bytes={max_bytes!r}")
    block_cache.set_limit(limit)


def block_cache_info():
    """{"held_bytes", "limit_bytes", "hits", "misses", "min_block_bytes"}: what the cache keeps now, its cap, and
    how many requests of at least min_block_bytes it served from kept blocks or not."""
    held, limit, hits, misses = block_cache.stats()
    return {"held_bytes": held, "limit_bytes": limit, "hits": hits, "misses": misses,
            "min_block_bytes": block_cache.MIN_BLOCK_BYTES}


# Where the tiled kernels' vector operands should start: a cache line, and one AVX-512 vector. NumPy aligns its
# own allocations to 16 bytes only (a large array lies 16 bytes past a page), and a vector load that straddles two
# lines costs two: a forward tile reading its weights 16 bytes off a line ran 15-20% slower.
VECTOR_ALIGNMENT = 64


def vector_aligned(a):
    """Whether array `a`'s data starts on a VECTOR_ALIGNMENT boundary."""
    return block_cache.misalignment(a, VECTOR_ALIGNMENT) == 0


def empty_aligned(shape, dtype):
    """An uninitialised C-contiguous array of `shape` (or of that many elements) and `dtype` whose data starts on
    a VECTOR_ALIGNMENT boundary, whatever memory handler is active."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    plain = np.empty(shape, dtype=dtype)
    if block_cache.misalignment(plain, VECTOR_ALIGNMENT) == 0:  # (always, under the block cache's handler)
        return plain
    del plain
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + VECTOR_ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % VECTOR_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def reusing_blocks(function):
    """Decorator: `function`'s NumPy allocations (its outputs and work arrays) go through the block cache."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        previous = block_cache.install()
        try:
            return function(*args, **kwargs)
        finally:
            block_cache.restore(previous)
    return wrapper


_env_limit = _limit_from_environment()
if _env_limit is not None:
    block_cache.set_limit(_env_limit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=block_cache._after_fork_in_child)

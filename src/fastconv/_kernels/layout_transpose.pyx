"""Batched 2-D transposes for the layout changes between NCHW and NHWC.

NumPy's strided copy of (C, H*W) planes into (H*W, C) runs at 1.4-6 GB/s (VGG's 12.8 MB first activation: 18 ms
NHWC -> NCHW, as long as the convolution on it); square tiles small enough for L1 on both sides, in parallel,
bring it near the memory bandwidth. Elements are moved as unsigned integers of their size, so one instantiation
serves float16, float32 and float64 (and any other 2-, 4- or 8-byte type) bit for bit.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint16_t, uint32_t, uint64_t

ctypedef fused element:
    uint16_t
    uint32_t
    uint64_t

cdef enum:
    # Tile side: 32 x 32 elements of 8 bytes = 8 KiB read and 8 KiB written, well inside L1.
    TILE = 32


def transpose_batched(const element[:, :, ::1] src, element[:, :, ::1] dst, int n_threads):
    """dst[b, j, i] = src[b, i, j] for src (B, M, N) and dst (B, N, M), both C-contiguous and not overlapping."""
    cdef Py_ssize_t B = src.shape[0], M = src.shape[1], N = src.shape[2]
    cdef Py_ssize_t m_tiles = (M + TILE - 1) // TILE, n_tiles = (N + TILE - 1) // TILE
    cdef Py_ssize_t item, b, i0, j0, i1, j1, i, j
    cdef const element* s
    cdef element* d
    if B == 0 or M == 0 or N == 0:
        return
    with nogil:
        for item in prange(B * m_tiles * n_tiles, num_threads=n_threads, schedule="static"):
            b = item // (m_tiles * n_tiles)
            i0 = (item // n_tiles) % m_tiles * TILE
            j0 = item % n_tiles * TILE
            i1 = i0 + TILE if i0 + TILE < M else M
            j1 = j0 + TILE if j0 + TILE < N else N
            s = &src[b, 0, 0]
            d = &dst[b, 0, 0]
            for j in range(j0, j1):
                for i in range(i0, i1):
                    d[j * M + i] = s[i * N + j]

"""Batched 2-D transposes for the layout changes between NCHW and NHWC.

NumPy's strided copy of (C, H*W) planes into (H*W, C) runs at 1.4-6 GB/s (VGG's 12.8 MB first activation: 18 ms
NHWC -> NCHW, as long as the convolution on it); square tiles small enough for L1 on both sides, in parallel,
bring it near the memory bandwidth. Elements are moved as unsigned integers of their size, so one instantiation
serves float16, float32 and float64 (and any other 2-, 4- or 8-byte type) bit for bit.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint16_t, uint32_t, uint64_t

from fastconv._kernels.cpu_dispatch cimport active_isa
from fastconv._kernels.transpose_tile cimport fc_transpose_f32, fc_transpose_for_f32

cdef extern from "direct_tile.h" nogil:
    enum:
        FC_ISA_BASELINE

ctypedef fused element:
    uint16_t
    uint32_t
    uint64_t

cdef enum:
    # Tile side: 32 x 32 elements of 8 bytes = 8 KiB read and 8 KiB written, well inside L1.
    TILE = 32


def transpose_batched(const element[:, :, ::1] src, element[:, :, ::1] dst, int n_threads):
    """dst[b, j, i] = src[b, i, j] for src (B, M, N) and dst (B, N, M), both C-contiguous and not overlapping.

    4-byte elements go 16 x 16 (AVX-512) or 8 x 8 (AVX2) through the registers, in whole runs of each row;
    element by element, a tile's lines on the strided side must stay in L1 until all their elements are used,
    and rows a multiple of 4 KiB apart (a 224 x 224 plane) share one L1 set (VGG's 12.8 MB first activation,
    NCHW to NHWC, on AMD Zen 4 with 2 threads: 3.5-6.5 ms element by element, 1.5 in registers)."""
    cdef Py_ssize_t B = src.shape[0], M = src.shape[1], N = src.shape[2]
    cdef Py_ssize_t m_tiles = (M + TILE - 1) // TILE, n_tiles = (N + TILE - 1) // TILE
    cdef Py_ssize_t item, b, i0, j0, i1, j1, i, j
    cdef const element* s
    cdef element* d
    cdef fc_transpose_f32 registers = NULL
    if B == 0 or M == 0 or N == 0:
        return
    if element is uint32_t and active_isa() != FC_ISA_BASELINE:
        registers = fc_transpose_for_f32(active_isa())
    with nogil:
        for item in prange(B * m_tiles * n_tiles, num_threads=n_threads, schedule="static"):
            b = item // (m_tiles * n_tiles)
            i0 = (item // n_tiles) % m_tiles * TILE
            j0 = item % n_tiles * TILE
            i1 = i0 + TILE if i0 + TILE < M else M
            j1 = j0 + TILE if j0 + TILE < N else N
            s = &src[b, 0, 0]
            d = &dst[b, 0, 0]
            if element is uint32_t:
                if registers != NULL:  # (bits moved as they are: loads, stores and shuffles only)
                    registers(<const float*> s + i0 * N + j0, N, <float*> d + j0 * M + i0, M, i1 - i0, j1 - j0)
                    continue
            for j in range(j0, j1):
                for i in range(i0, i1):
                    d[j * M + i] = s[i * N + j]


def swap_outer(const element[:, :, ::1] src, element[:, :, ::1] dst, int n_threads):
    """dst[k, j, i] = src[i, j, k] for src (A, B, C) and dst (C, B, A), both C-contiguous and not overlapping:
    HWIO (R*S, C, K) <-> OIHW (K, C, R*S) in one pass. Two batched transposes through (K, R*S, C) wrote rows of
    R*S = 9 elements in their second pass (a VGG conv5 kernel: 3.7 ms, a quarter of copy speed). Here each work
    item moves one TILE x TILE block of (i, k) for one j, and consecutive items step along j, the axis that is
    adjacent in both arrays, so every thread reads and writes runs of whole cache lines."""
    cdef Py_ssize_t A = src.shape[0], B = src.shape[1], C = src.shape[2]
    cdef Py_ssize_t a_tiles = (A + TILE - 1) // TILE, c_tiles = (C + TILE - 1) // TILE
    cdef Py_ssize_t item, j, tile, i0, k0, i1, k1, i, k
    cdef const element* s
    cdef element* d
    if A == 0 or B == 0 or C == 0:
        return
    with nogil:
        for item in prange(a_tiles * c_tiles * B, num_threads=n_threads, schedule="static"):
            j = item % B
            tile = item // B
            i0 = tile // c_tiles * TILE
            k0 = tile % c_tiles * TILE
            i1 = i0 + TILE if i0 + TILE < A else A
            k1 = k0 + TILE if k0 + TILE < C else C
            s = &src[0, j, 0]
            d = &dst[0, j, 0]
            for k in range(k0, k1):
                for i in range(i0, i1):
                    d[k * B * A + i] = s[i * B * C + k]

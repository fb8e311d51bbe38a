"""Weights packed for the register-tiled direct kernels, in one parallel pass (NumPy's transposing copies of a
9 MiB VGG kernel took longer than the convolution's arithmetic on it). The pass reads HWIO (Keras) or OIHW
(PyTorch) weights as they are, so channels_first calls need no transposed copy, and it counts the non-finite
values, which decide the algorithm (functional._settle_algorithm) without a second pass.

Packed layout: (groups, blocks, R, S, n_in, lanes), where each block holds `lanes` consecutive output channels of
one group for every input channel, zero-padded past the group's last output channel.
"""
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cython cimport floating

from fastconv._kernels.cpu_dispatch cimport active_isa
from fastconv._kernels.finite_check cimport fc_any_nonfinite_f32, fc_any_nonfinite_f64
from fastconv._kernels.transpose_tile cimport fc_transpose_for_f32, fc_transpose_for_f64

cdef enum:
    # Input rows per work item of the OIHW packing: enough items to share among threads, and a run of each
    # tap slice long enough to be written in whole cache lines.
    PACK_ROWS = 32
    # Input rows per pass of the HWIO packing, checked for non-finite values while in L1: one cache line of each
    # lane's run when it transposes (VGG conv5's flipped kernel, scalar: 0.52 ms at 16, 0.57 at 64, 0.67 at 32 on
    # 2 threads; in register blocks 0.33 at 16, 32 or 64).
    TRANSPOSE_ROWS = 16


def pack(const floating[:, :, :, ::1] weight, floating[::1] packed, Py_ssize_t groups, Py_ssize_t lanes,
         bint flip_transpose, bint oihw, int n_threads):
    """weight: HWIO (R, S, C/groups, K), or OIHW (K, C/groups, R, S) with oihw=True. flip_transpose=False packs
    it as is: n_in = C/groups, lanes over K/groups. flip_transpose=True packs the kernel of the stride-1 input
    gradient: spatially flipped, each group's input and output channels swapped (n_in = K/groups, lanes over
    C/groups). Returns whether every weight is finite (no NaN, no infinity)."""
    cdef Py_ssize_t R, S, Cg, K
    # Element strides of the four axes (r, s, c, k) in the source.
    cdef Py_ssize_t sr, ss, sc, sk
    if oihw:
        K, Cg, R, S = weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3]
        sk, sc, sr, ss = Cg * R * S, R * S, S, 1
    else:
        R, S, Cg, K = weight.shape[0], weight.shape[1], weight.shape[2], weight.shape[3]
        sr, ss, sc, sk = S * Cg * K, Cg * K, K, 1
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t n_in = Kg if flip_transpose else Cg
    cdef Py_ssize_t n_out = Cg if flip_transpose else Kg
    # Source steps between consecutive input rows (i) and lanes (l) of a packed block.
    cdef Py_ssize_t step_i = sk if flip_transpose else sc
    cdef Py_ssize_t step_l = sc if flip_transpose else sk
    cdef Py_ssize_t n_blocks = (n_out + lanes - 1) // lanes
    cdef Py_ssize_t item, g, b, r, s, i, i0, i1, l, width
    cdef Py_ssize_t n_bad = 0
    cdef floating* dst
    cdef const floating* src
    cdef const floating* base = &weight[0, 0, 0, 0]
    cdef int isa = active_isa()

    if oihw:
        return _pack_oihw(base, packed, groups, lanes, R, S, n_in, n_out, Kg, step_i, step_l, flip_transpose,
                          n_threads)
    if not flip_transpose:
        return _pack_hwio(base, packed, groups, lanes, R * S, Cg, K, n_threads)
    # Flipped from HWIO: lane l of input row i is weight[R-1-r, S-1-s, c = b*lanes + l, k = g*Kg + i], so each
    # lane's rows are a contiguous run of the source (step_i == 1) and a block is a transpose, done in register
    # blocks at AVX-512 (transpose_tile.h), TRANSPOSE_ROWS rows at a time, each chunk checked for non-finite
    # values while it is in L1. Row by row, the 64 lanes' source lines (K elements apart) fell into two L1 sets
    # and missed at every element: VGG conv5's flipped kernel took 1.33 ms on 2 threads, 0.52 lane by lane, 0.33
    # so; a copy of it 0.18.
    with nogil:
        for item in prange(groups * n_blocks * R * S, num_threads=n_threads, schedule="static"):
            s = item % S
            r = (item // S) % R
            b = (item // (S * R)) % n_blocks
            g = item // (S * R * n_blocks)
            dst = &packed[0] + item * n_in * lanes
            width = n_out - b * lanes
            if width > lanes:
                width = lanes
            src = base + (R - 1 - r) * sr + (S - 1 - s) * ss + b * lanes * sc + g * Kg * sk
            i0 = 0
            while i0 < n_in:
                i1 = i0 + TRANSPOSE_ROWS if i0 + TRANSPOSE_ROWS < n_in else n_in
                if floating is float:
                    fc_transpose_for_f32(isa)(src + i0, step_l, dst + i0 * lanes, lanes, width, i1 - i0)
                else:
                    fc_transpose_for_f64(isa)(src + i0, step_l, dst + i0 * lanes, lanes, width, i1 - i0)
                for i in range(i0, i1):
                    for l in range(width, lanes):
                        dst[i * lanes + l] = 0
                if floating is float:
                    n_bad += fc_any_nonfinite_f32(dst + i0 * lanes, (i1 - i0) * lanes)
                else:
                    n_bad += fc_any_nonfinite_f64(dst + i0 * lanes, (i1 - i0) * lanes)
                i0 = i1
    return n_bad == 0


cdef bint _pack_hwio(const floating* base, floating[::1] packed, Py_ssize_t groups, Py_ssize_t lanes,
                     Py_ssize_t RS, Py_ssize_t Cg, Py_ssize_t K, int n_threads) noexcept:
    # HWIO as it is: each packed row is a run of a source row. One item per (tap, TRANSPOSE_ROWS input rows)
    # reads those whole rows in order and deals each row's runs out to every block, then checks the rows while
    # they are in L1. One item per (block, tap) read every row in short runs K elements apart and checked the
    # packed block from L2 (VGG conv5's kernel: 0.33 ms, twice a copy of it).
    cdef Py_ssize_t Kg = K // groups
    cdef Py_ssize_t n_blocks = (Kg + lanes - 1) // lanes
    cdef Py_ssize_t n_chunks = (Cg + TRANSPOSE_ROWS - 1) // TRANSPOSE_ROWS
    cdef Py_ssize_t item, t, c0, c1, c, g, b, l, width
    cdef Py_ssize_t n_bad = 0
    cdef floating* dst
    cdef const floating* row
    with nogil:
        for item in prange(RS * n_chunks, num_threads=n_threads, schedule="static"):
            t = item // n_chunks
            c0 = item % n_chunks * TRANSPOSE_ROWS
            c1 = c0 + TRANSPOSE_ROWS if c0 + TRANSPOSE_ROWS < Cg else Cg
            for c in range(c0, c1):
                row = base + (t * Cg + c) * K
                for g in range(groups):
                    for b in range(n_blocks):
                        dst = &packed[0] + (((g * n_blocks + b) * RS + t) * Cg + c) * lanes
                        width = Kg - b * lanes
                        if width > lanes:
                            width = lanes
                        for l in range(width):
                            dst[l] = row[g * Kg + b * lanes + l]
                        for l in range(width, lanes):
                            dst[l] = 0
            if floating is float:
                n_bad += fc_any_nonfinite_f32(base + (t * Cg + c0) * K, (c1 - c0) * K)
            else:
                n_bad += fc_any_nonfinite_f64(base + (t * Cg + c0) * K, (c1 - c0) * K)
    return n_bad == 0


cdef bint _pack_oihw(const floating* base, floating[::1] packed, Py_ssize_t groups, Py_ssize_t lanes,
                     Py_ssize_t R, Py_ssize_t S, Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t Kg,
                     Py_ssize_t step_i, Py_ssize_t step_l, bint flip_transpose, int n_threads) noexcept:
    # OIHW keeps the R*S taps of each (output, input) channel pair together, while a packed block holds one tap
    # per R*S-th of its rows: one item per (group, block, run of input rows) reads each pair's taps as one short
    # run and writes them to the block's R*S tap slices. Working tap by tap instead read each source cache line
    # R*S times over (VGG conv5's 9 MiB kernel: 4.7 ms, 3.5x the HWIO packing).
    cdef Py_ssize_t RS = R * S
    cdef Py_ssize_t n_blocks = (n_out + lanes - 1) // lanes
    cdef Py_ssize_t n_runs = (n_in + PACK_ROWS - 1) // PACK_ROWS
    cdef Py_ssize_t item, g, b, run, i0, i1, i, l, t, width, ia, ib
    cdef Py_ssize_t n_bad = 0
    # Unflipped, lane l's (row, tap) pairs of a run of rows are one contiguous run of the source: runs of
    # `sub` rows are transposed (transpose_tile.h) into a per-thread buffer of at most 32 KiB, laid out
    # (row, tap, lane), whose rows of lanes are then copied to their tap slices. Lane by lane, each element was
    # a scalar store to a line 128 KiB from the last (VGG conv5's kernel: 0.67 ms, 4x a copy of it).
    cdef Py_ssize_t sub = max(1, 32768 // (RS * lanes * sizeof(floating)))
    cdef floating* block
    cdef floating* scratch
    cdef const floating* src
    cdef const floating* pair
    cdef int isa = active_isa()
    with nogil, parallel(num_threads=n_threads):
        scratch = <floating*> malloc(sub * RS * lanes * sizeof(floating))
        for item in prange(groups * n_blocks * n_runs, schedule="static"):
            run = item % n_runs
            b = (item // n_runs) % n_blocks
            g = item // (n_runs * n_blocks)
            block = &packed[0] + (g * n_blocks + b) * RS * n_in * lanes
            i0 = run * PACK_ROWS
            i1 = i0 + PACK_ROWS if i0 + PACK_ROWS < n_in else n_in
            width = n_out - b * lanes
            if width > lanes:
                width = lanes
            # Lane l of input row i, tap t = r*S + s: the pair's taps start at src + i*step_i + l*step_l (flipped:
            # the input gradient's tap t is the forward kernel's RS-1-t).
            if flip_transpose:
                src = base + b * lanes * step_l + g * Kg * step_i
            else:
                src = base + (g * Kg + b * lanes) * step_l
            if not flip_transpose:
                ia = i0
                while ia < i1:
                    ib = ia + sub if ia + sub < i1 else i1
                    if floating is float:
                        fc_transpose_for_f32(isa)(src + ia * step_i, step_l, scratch, lanes, width, (ib - ia) * RS)
                    else:
                        fc_transpose_for_f64(isa)(src + ia * step_i, step_l, scratch, lanes, width, (ib - ia) * RS)
                    for i in range(ia, ib):
                        for t in range(RS):
                            memcpy(block + (t * n_in + i) * lanes, scratch + ((i - ia) * RS + t) * lanes,
                                   width * sizeof(floating))
                    ia = ib
            else:
                for i in range(i0, i1):
                    for l in range(width):
                        pair = src + i * step_i + l * step_l
                        for t in range(RS):
                            block[(t * n_in + i) * lanes + l] = pair[RS - 1 - t]
            for i in range(i0, i1):
                for t in range(RS):
                    for l in range(width, lanes):
                        block[(t * n_in + i) * lanes + l] = 0
            for t in range(RS):
                if floating is float:
                    n_bad += fc_any_nonfinite_f32(block + (t * n_in + i0) * lanes, (i1 - i0) * lanes)
                else:
                    n_bad += fc_any_nonfinite_f64(block + (t * n_in + i0) * lanes, (i1 - i0) * lanes)
        free(scratch)
    return n_bad == 0

"""Weights packed for the register-tiled direct kernels, in one parallel pass (NumPy's transposing copies of a
9 MiB VGG kernel took longer than the convolution's arithmetic on it). The pass reads HWIO (Keras) or OIHW
(PyTorch) weights as they are, so channels_first calls need no transposed copy, and it counts the non-finite
values, which decide the algorithm (functional._settle_algorithm) without a second pass.

Packed layout: (groups, blocks, R, S, n_in, lanes), where each block holds `lanes` consecutive output channels of
one group for every input channel, zero-padded past the group's last output channel.
"""
from cython.parallel cimport prange
from cython cimport floating

cdef extern from "finite_check.h" nogil:
    int fc_any_nonfinite_f32(const float *p, Py_ssize_t n)
    int fc_any_nonfinite_f64(const double *p, Py_ssize_t n)


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
    cdef Py_ssize_t item, g, b, r, s, i, l, width
    cdef Py_ssize_t n_bad = 0
    cdef floating* dst
    cdef const floating* src
    cdef const floating* base = &weight[0, 0, 0, 0]

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
            if flip_transpose:
                # Lane l of input row i is weight[R-1-r, S-1-s, c = b*lanes + l, k = g*Kg + i].
                src = base + (R - 1 - r) * sr + (S - 1 - s) * ss + b * lanes * sc + g * Kg * sk
            else:
                src = base + r * sr + s * ss + (g * Kg + b * lanes) * sk
            if step_l == 1:  # HWIO as is: each packed row is a contiguous run of the source
                for i in range(n_in):
                    for l in range(width):
                        dst[i * lanes + l] = src[i * step_i + l]
                    for l in range(width, lanes):
                        dst[i * lanes + l] = 0
            else:
                # Down the source's strided columns, input row by row (a block's rows stay in cache meanwhile).
                for i in range(n_in):
                    for l in range(width):
                        dst[i * lanes + l] = src[i * step_i + l * step_l]
                    for l in range(width, lanes):
                        dst[i * lanes + l] = 0
            # The block just written, still in cache, holds every weight of the item (and finite zeros).
            if floating is float:
                n_bad += fc_any_nonfinite_f32(dst, n_in * lanes)
            else:
                n_bad += fc_any_nonfinite_f64(dst, n_in * lanes)
    return n_bad == 0

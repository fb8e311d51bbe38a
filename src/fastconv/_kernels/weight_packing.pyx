"""Weights packed for the register-tiled direct kernels, in one parallel pass (NumPy's transposing copies of a
9 MiB VGG kernel took longer than the convolution's arithmetic on it).

Packed layout: (groups, blocks, R, S, n_in, lanes), where each block holds `lanes` consecutive output channels of
one group for every input channel, zero-padded past the group's last output channel.
"""
from cython.parallel cimport prange
from cython cimport floating


def pack(const floating[:, :, :, ::1] hwio, floating[::1] packed, Py_ssize_t groups, Py_ssize_t lanes,
         bint flip_transpose, int n_threads):
    """hwio: (R, S, C/groups, K). flip_transpose=False packs it as is: n_in = C/groups, lanes over K/groups.
    flip_transpose=True packs the kernel of the stride-1 input gradient: spatially flipped, each group's input and
    output channels swapped (n_in = K/groups, lanes over C/groups)."""
    cdef Py_ssize_t R = hwio.shape[0], S = hwio.shape[1], Cg = hwio.shape[2], Kg = hwio.shape[3] // groups
    cdef Py_ssize_t n_in = Kg if flip_transpose else Cg
    cdef Py_ssize_t n_out = Cg if flip_transpose else Kg
    cdef Py_ssize_t n_blocks = (n_out + lanes - 1) // lanes
    cdef Py_ssize_t item, g, b, r, s, i, l, o, width
    cdef floating* dst
    cdef const floating* src

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
            if not flip_transpose:
                src = &hwio[r, s, 0, g * Kg + b * lanes]
                for i in range(n_in):
                    for l in range(width):
                        dst[i * lanes + l] = src[i * Kg * groups + l]
                    for l in range(width, lanes):
                        dst[i * lanes + l] = 0
            else:
                # Lane l of input row i is hwio[R-1-r, S-1-s, b*lanes + l, g*Kg + i]: one column of a (width, Kg)
                # block, read down its rows (the rows stay in cache while i walks along them).
                src = &hwio[R - 1 - r, S - 1 - s, b * lanes, g * Kg]
                for i in range(n_in):
                    for l in range(width):
                        dst[i * lanes + l] = src[l * Kg * groups + i]
                    for l in range(width, lanes):
                        dst[i * lanes + l] = 0

"""Element-wise passes over large arrays in parallel (NumPy runs them on one thread): the ReLU gradients of
training, whose arrays are tens of MB on a 150x150 batch."""
from cython.parallel cimport prange
from cython cimport floating


def relu_grad(const floating[::1] grad, const floating[::1] activation, floating[::1] out, int n_threads):
    """out = grad * (activation > 0), as NumPy computes it (a NaN or infinite grad where activation <= 0 gives
    NaN). out may be grad itself."""
    cdef Py_ssize_t i, n = grad.shape[0]
    with nogil:
        for i in prange(n, num_threads=n_threads, schedule="static"):
            out[i] = grad[i] * (1 if activation[i] > 0 else 0)

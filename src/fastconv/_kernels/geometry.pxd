# Shape bookkeeping shared by the convolution and pooling kernels.
# All sizes are Py_ssize_t: no index arithmetic in 32 bits.

cdef struct ConvGeometry:
    Py_ssize_t batch
    Py_ssize_t in_h
    Py_ssize_t in_w
    Py_ssize_t in_c
    Py_ssize_t out_h
    Py_ssize_t out_w
    Py_ssize_t out_c
    Py_ssize_t kernel_h
    Py_ssize_t kernel_w
    Py_ssize_t stride_h
    Py_ssize_t stride_w
    Py_ssize_t dilation_h
    Py_ssize_t dilation_w
    Py_ssize_t pad_top
    Py_ssize_t pad_left
    Py_ssize_t groups


cdef inline Py_ssize_t first_valid(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    """Smallest o >= 0 with o * stride + offset >= 0."""
    if offset >= 0:
        return 0
    return (stride - 1 - offset) // stride


cdef inline Py_ssize_t end_valid(Py_ssize_t offset, Py_ssize_t stride, Py_ssize_t size,
                                 Py_ssize_t out_size) noexcept nogil:
    """Smallest o with o * stride + offset >= size, capped at out_size (one past the last valid o)."""
    cdef Py_ssize_t e
    if size - offset <= 0:
        return 0
    e = (size - offset + stride - 1) // stride
    return e if e < out_size else out_size


cdef inline Py_ssize_t window_begin(Py_ssize_t start) noexcept nogil:
    """First input index of a pooling window that starts at `start` (padding cells dropped)."""
    return start if start > 0 else 0


cdef inline Py_ssize_t window_end(Py_ssize_t start, Py_ssize_t size, Py_ssize_t extent) noexcept nogil:
    """One past the last input index of a window of `size` cells starting at `start`, clipped to `extent`."""
    return start + size if start + size < extent else extent

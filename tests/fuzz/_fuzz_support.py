"""What the fuzz tests (tests/fuzz/test_fuzz_*.py) share: hypothesis settings, argument spellings, array values,
memory layouts, and the error bound every floating-point result is held to.

Each test compares one public op of ``fastconv.functional`` with the plain NumPy reference (tests/reference.py,
float64, sharing no code with fastconv) on small random problems. Hypothesis draws the problem (shapes and every
option); the array values come from a NumPy generator seeded by a drawn integer, which is much faster than
drawing arrays element by element and still reproducible from the printed example.

Error bound. A result that sums ``n`` products (a convolution output: ``n = C/groups * R * S`` plus the bias)
computed in any order with rounding unit ``eps / 2`` differs from the exact sum by at most
``n * eps * sum(|x| * |w|)`` (Higham, "Accuracy and Stability of Numerical Algorithms", 3.1). The magnitude
``sum(|x| * |w|)`` of every output is the reference op applied to the absolute values of the inputs, so
``assert_close`` checks ``|got - want| <= (n + 3) * (eps + eps64) * magnitude`` (3 spare roundings for scaling
and the bias, and the reference's own float64 error). The bound holds for every summation order, so it never
fails by chance, and it is tight enough to catch one wrong or missing term (of size about ``magnitude / n``) for
the sizes drawn here.
"""
import functools

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

DTYPES = (np.float32, np.float64)
DATA_FORMATS = ("channels_last", "channels_first")
EPS64 = np.finfo(np.float64).eps


def fuzz_settings(max_examples):
    """Reproducible settings: the same examples on every run (derandomize, no example database), no deadline
    (a kernel's first call may be slow), and no health checks that would fail a slow shared CI machine."""
    return settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


class Examples:
    """Counts the examples a hypothesis test ran (put it under ``@given``), so that a test can prove it ran as
    many as asked for (a strategy that rejects most draws would run fewer) and report the figure."""

    def __init__(self):
        self.count = 0

    def __call__(self, test):
        @functools.wraps(test)
        def counted(*args, **kwargs):
            self.count += 1
            return test(*args, **kwargs)

        return counted

    def expect(self, wanted, what):
        print(f"{what}: {self.count} examples")  # (shown with pytest -s: the figures of a --fuzz-long run)
        assert self.count >= wanted, f"{what}: hypothesis ran {self.count} examples, fewer than {wanted}"


# ---------------------------------------------------------------------------------------------- argument spellings


def int_spelling(draw, value):
    """The same int as a Python int or a NumPy integer (the API takes both)."""
    return draw(st.sampled_from([int, np.int64, np.int32, np.uint8]))(value) if value < 256 else value


def pair_spelling(draw, pair):
    """An int (when both entries agree, sometimes), a tuple, a list or a 1-D integer array."""
    a, b = pair
    kinds = ["tuple", "list", "array"] + (["int"] if a == b else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "int":
        return int_spelling(draw, a)
    if kind == "list":
        return [int_spelling(draw, a), int_spelling(draw, b)]
    if kind == "array":
        return np.array([a, b], dtype=draw(st.sampled_from([np.int64, np.int32])))
    return (int_spelling(draw, a), int_spelling(draw, b))


def padding_spelling(draw, pads):
    """Explicit ((top, bottom), (left, right)) padding in one of the forms the API takes: an int, a pair (ph, pw)
    or the nested pairs, whichever can express it."""
    (t, b), (l, r) = pads
    forms = ["nested"]
    if t == b and l == r:
        forms.append("pair")
        if t == l:
            forms.append("int")
    form = draw(st.sampled_from(forms))
    if form == "int":
        return int_spelling(draw, t)
    if form == "pair":
        return (int_spelling(draw, t), int_spelling(draw, l))
    return ((int_spelling(draw, t), int_spelling(draw, b)), [int_spelling(draw, l), int_spelling(draw, r)])


def shape_spelling(draw, shape):
    """A shape argument (input_shape, weight_shape) as a tuple or a list, of Python or NumPy ints."""
    dims = [int_spelling(draw, d) for d in shape]
    return dims if draw(st.booleans()) else tuple(dims)


def string_spelling(draw, word):
    """"same"/"valid" in any letter case (padding strings are case-insensitive)."""
    return draw(st.sampled_from([word, word.upper(), word.capitalize()]))


# ---------------------------------------------------------------------------------------------- values and memory

VALUES = ("uniform", "positive", "ties", "scaled")


def values(rng, shape, kind, dtype):
    """Random values of one of the VALUES kinds: uniform in [-1, 1]; positive (same-sign sums, the worst case
    for rounding); small integers (ties for max-pooling); uniform times 10**k for a random k in [-3, 3]."""
    if kind == "positive":
        a = rng.uniform(0.0, 1.0, shape)
    elif kind == "ties":
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif kind == "scaled":
        a = rng.uniform(-1.0, 1.0, shape) * 10.0 ** rng.integers(-3, 4)
    else:
        a = rng.uniform(-1.0, 1.0, shape)
    return a.astype(dtype)


MEMORY = ("c", "fortran", "reversed", "sliced", "transposed", "broadcast", "unaligned", "readonly", "byteswapped")


def in_memory(a, kind, axis):
    """An array equal to ``a`` (``broadcast``: to ``a`` with one axis made constant) in another memory layout.

    fortran: column-major copy. reversed: a view with negative strides on every axis. sliced: every other
    element along ``axis`` of a larger buffer. transposed: the data stored with the axes reversed and viewed back.
    broadcast: zero stride along ``axis`` (``a``'s first slice repeated). unaligned: data one byte off an element
    boundary. readonly: not writeable. byteswapped: the non-native byte order (as read from a big-endian file).
    The caller compares against the reference on the returned array, so broadcast's values are what counts.
    """
    if a.ndim == 0 or a.size == 0:
        return a
    axis %= a.ndim
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if kind == "sliced":
        shape = list(a.shape)
        shape[axis] *= 2
        big = np.zeros(shape, a.dtype)
        index = [slice(None)] * a.ndim
        index[axis] = slice(None, None, 2)
        big[tuple(index)] = a
        return big[tuple(index)]
    if kind == "transposed":
        order = tuple(range(a.ndim))[::-1]
        return np.ascontiguousarray(a.transpose(order)).transpose(order)
    if kind == "broadcast":
        return np.broadcast_to(np.take(a, [0], axis=axis), a.shape)
    if kind == "unaligned":
        raw = np.zeros(a.nbytes + a.itemsize, np.uint8)
        out = raw[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
        out[...] = a
        return out
    if kind == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    if kind == "byteswapped":
        return a.astype(a.dtype.newbyteorder())
    return a


@st.composite
def layouts(draw):
    """(memory kind, axis) for one argument."""
    return draw(st.sampled_from(MEMORY)), draw(st.integers(0, 3))


def arrays(seed, specs):
    """One array per ``(shape, value kind, dtype, (memory kind, axis))`` spec, each also in the memory layout of
    its spec. Returns the laid-out arrays (what fastconv and the reference both get)."""
    rng = np.random.default_rng(seed)
    out = []
    for shape, kind, dtype, (memory, axis) in specs:
        out.append(in_memory(values(rng, shape, kind, dtype), memory, axis))
    return out


# ---------------------------------------------------------------------------------------------- checks


def assert_close(got, want, magnitude, terms, dtype, what):
    """``got`` (computed in ``dtype``) against the float64 reference ``want``: same dtype and shape, and
    ``|got - want| <= (terms + 3) * (eps + eps64) * magnitude`` element by element (see the module docstring),
    with ``terms`` the longest sum behind one element and ``magnitude`` the same op on absolute values."""
    dtype = np.dtype(dtype)
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.flags.c_contiguous and got.flags.writeable, f"{what}: result not a writable C-contiguous array"
    finfo = np.finfo(dtype)
    bound = (max(int(terms), 1) + 3) * (finfo.eps + EPS64) * np.asarray(magnitude, np.float64) \
        + max(int(terms), 1) * finfo.tiny
    err = np.abs(got.astype(np.float64) - want)
    bad = ~(err <= bound)  # (also catches a NaN)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise AssertionError(f"{what}: {int(bad.sum())} of {got.size} elements out of bounds; first at {i}: got "
                             f"{got[i]!r}, want {want[i]!r}, error {err[i]:.3g} > bound {bound[i]:.3g}")


def nhwc(shape_nhwc, data_format):
    """An (N, H, W, C) description as a shape in ``data_format``."""
    n, h, w, c = shape_nhwc
    return (n, h, w, c) if data_format == "channels_last" else (n, c, h, w)

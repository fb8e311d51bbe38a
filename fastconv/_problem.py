"""One validated, normalised description of a convolution or pooling call.

The functional API builds a ConvProblem / PoolProblem from the user's arguments (all checks happen here or in
_validation), then hands its `geometry` to the kernels.
"""
import functools
from dataclasses import dataclass

from fastconv import _layout
from fastconv import _validation as check


@dataclass(frozen=True)
class ConvProblem:
    channels_last: bool
    batch: int
    in_h: int
    in_w: int
    in_c: int
    out_h: int
    out_w: int
    out_c: int
    kernel_h: int
    kernel_w: int
    stride: tuple
    dilation: tuple
    padding: tuple  # ((top, bottom), (left, right))
    groups: int

    @property
    def input_shape(self):
        return _layout.layout_shape(self.batch, self.in_h, self.in_w, self.in_c, self.channels_last)

    @property
    def output_shape(self):
        return _layout.layout_shape(self.batch, self.out_h, self.out_w, self.out_c, self.channels_last)

    @property
    def weight_shape(self):
        cg = self.in_c // self.groups
        if self.channels_last:
            return (self.kernel_h, self.kernel_w, cg, self.out_c)
        return (self.out_c, cg, self.kernel_h, self.kernel_w)

    @functools.cached_property
    def flops(self):
        """Multiply-adds counted as 2 flops."""
        return 2 * self.batch * self.out_h * self.out_w * self.out_c * (self.in_c // self.groups) \
            * self.kernel_h * self.kernel_w

    @functools.cached_property
    def geometry(self):
        """The kernels' ConvGeometry struct, as a dict (computed once: do not modify it)."""
        return dict(
            batch=self.batch, in_h=self.in_h, in_w=self.in_w, in_c=self.in_c,
            out_h=self.out_h, out_w=self.out_w, out_c=self.out_c,
            kernel_h=self.kernel_h, kernel_w=self.kernel_w,
            stride_h=self.stride[0], stride_w=self.stride[1],
            dilation_h=self.dilation[0], dilation_w=self.dilation[1],
            pad_top=self.padding[0][0], pad_left=self.padding[1][0], groups=self.groups,
        )


# Problems remembered per function (all forgotten when full: a training loop uses a few dozen).
REMEMBERED_PROBLEMS = 512


def _plain(value):
    """Whether `value` stands for itself in a cache key: an exact int, str or bool, None, or a tuple of exact ints
    or of tuples of them (shapes, padding). Floats, NumPy scalars, lists and bools inside tuples compare equal to
    accepted values (1.0 == 1, (True, 1) == (1, 1)) but must be checked, or refused, afresh."""
    kind = type(value)
    if kind is tuple:
        kinds = set(map(type, value))
        return kinds <= _INT or (kinds <= _INT_OR_TUPLE and all(set(map(type, v)) <= _INT for v in value
                                                                   if type(v) is tuple))
    return kind is int or kind is str or kind is bool or value is None


_INT = {int}
_INT_OR_TUPLE = {int, tuple}


def _remembered(build):
    """`build`, a pure function of its arguments, with its recent results remembered: a layer calls the
    functional API with the same shapes and options every step, and validating them anew took about an eighth of
    a small convolution's call (5 of 43 us). Calls whose arguments are not all plain are validated every time;
    errors are never remembered (every bad call raises). The key holds each keyword value's type, so True is
    not 1."""
    remembered = {}

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        values = tuple(kwargs.values())
        if not (all(map(_plain, args)) and all(map(_plain, values))):
            return build(*args, **kwargs)
        key = (args, tuple(kwargs), values, tuple(map(type, values)))
        result = remembered.get(key)
        if result is None:
            result = build(*args, **kwargs)
            if len(remembered) >= REMEMBERED_PROBLEMS:
                remembered.clear()
            remembered[key] = result
        return result

    return wrapper


def _check_extents(stride, window, pads, in_hw, stride_received, window_received, padded_received, window_name):
    """Every stride, window extent and padded input size within check.INDEX_LIMIT, so that the kernels' index
    arithmetic (sums of a few of them) cannot overflow int64."""
    for axis, name in enumerate(("rows", "columns")):
        check.within_index_limit(window[axis], f"the {window_name} extent along the {name}", window_received)
        check.within_index_limit(stride[axis], f"the stride along the {name}", stride_received)
        check.within_index_limit(in_hw[axis] + sum(pads[axis]), f"the padded input's number of {name}",
                                 padded_received)


@_remembered
def conv_problem(input_shape, weight_shape, *, stride, padding, dilation, groups, channels_last,
                 input_name="x", weight_name="weight"):
    """Check that a convolution of these shapes and options is well defined, and describe it."""
    stride_arg, dilation_arg = stride, dilation
    stride = check.pair(stride, "stride")
    dilation = check.pair(dilation, "dilation")
    groups = check.positive_int(groups, "groups")
    pad_spec = check.padding_spec(padding)
    n, h, w, c = _layout.nhwc_shape(input_shape, channels_last)
    r, s, cg, k = _layout.hwio_shape(weight_shape, channels_last)
    layout = "channels_last" if channels_last else "channels_first"
    if min(r, s, cg, k) < 1:
        raise ValueError(f"{weight_name} must have no zero-sized axis; received {weight_name} with shape "
                         f"{tuple(weight_shape)}")
    if c < 1:
        raise ValueError(f"{input_name} must have at least one channel; received {input_name} with shape "
                         f"{tuple(input_shape)} ({layout})")
    if c % groups != 0:
        raise ValueError(f"groups must divide the {c} input channels; received groups={groups}")
    if k % groups != 0:
        raise ValueError(f"groups must divide the {k} output channels; received groups={groups}")
    if cg * groups != c:
        raise ValueError(
            f"{weight_name} expects {cg * groups} input channels ({cg} per group x groups={groups}) but "
            f"{input_name} has {c}; received {input_name} with shape {tuple(input_shape)} and {weight_name} with "
            f"shape {tuple(weight_shape)} ({layout})"
        )
    effective = ((r - 1) * dilation[0] + 1, (s - 1) * dilation[1] + 1)
    pads = check.resolve_padding(pad_spec, (h, w), effective, stride)
    _check_extents(stride, effective, pads, (h, w), f"stride={stride_arg!r}",
                   f"dilation={dilation_arg!r} and {weight_name} with shape {tuple(weight_shape)}",
                   f"{input_name} with shape {tuple(input_shape)} and padding={padding!r}", "dilated kernel")
    out_h = (h + pads[0][0] + pads[0][1] - effective[0]) // stride[0] + 1
    out_w = (w + pads[1][0] + pads[1][1] - effective[1]) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"the output would be empty: a {effective[0]}x{effective[1]} (dilated) kernel does not fit the "
            f"{h}x{w} input padded by {pads}; received {input_name} with shape {tuple(input_shape)}, "
            f"{weight_name} with shape {tuple(weight_shape)}, padding={padding!r}"
        )
    return ConvProblem(channels_last, n, h, w, c, out_h, out_w, k, r, s, stride, dilation, pads, groups)


@dataclass(frozen=True)
class PoolProblem:
    channels_last: bool
    batch: int
    in_h: int
    in_w: int
    channels: int
    out_h: int
    out_w: int
    pool_size: tuple
    stride: tuple
    padding: tuple

    @property
    def input_shape(self):
        return _layout.layout_shape(self.batch, self.in_h, self.in_w, self.channels, self.channels_last)

    @property
    def output_shape(self):
        return _layout.layout_shape(self.batch, self.out_h, self.out_w, self.channels, self.channels_last)

    @functools.cached_property
    def geometry(self):
        """The kernels' geometry struct, as a dict (computed once: do not modify it)."""
        return dict(
            batch=self.batch, in_h=self.in_h, in_w=self.in_w, in_c=self.channels,
            out_h=self.out_h, out_w=self.out_w, out_c=self.channels,
            kernel_h=self.pool_size[0], kernel_w=self.pool_size[1],
            stride_h=self.stride[0], stride_w=self.stride[1], dilation_h=1, dilation_w=1,
            pad_top=self.padding[0][0], pad_left=self.padding[1][0], groups=1,
        )


def _pooled_size(n, k, s, before, after, ceil_mode):
    span = n + before + after - k
    if span < 0:
        return 0
    out = (-(-span // s) if ceil_mode else span // s) + 1  # (integer ceil: exact for any size)
    if ceil_mode and (out - 1) * s >= n + before:
        out -= 1  # the last window would start in the padding (PyTorch's rule)
    return out


@_remembered
def pool_problem(input_shape, *, pool_size, stride, padding, ceil_mode, channels_last, input_name="x"):
    pool_arg, stride_arg = pool_size, stride
    pool_size = check.pair(pool_size, "pool_size")
    stride = pool_size if stride is None else check.pair(stride, "stride")
    ceil_mode = check.flag(ceil_mode, "ceil_mode")
    pad_spec = check.padding_spec(padding)
    n, h, w, c = _layout.nhwc_shape(input_shape, channels_last)
    pads = check.resolve_padding(pad_spec, (h, w), pool_size, stride)
    _check_extents(stride, pool_size, pads, (h, w), f"stride={stride_arg!r}", f"pool_size={pool_arg!r}",
                   f"{input_name} with shape {tuple(input_shape)} and padding={padding!r}", "pooling window")
    # (a window's cell count, the divisor of count_include_pad averaging, is a product of the two extents)
    check.within_index_limit(pool_size[0] * pool_size[1], "the pooling window's number of cells",
                             f"pool_size={pool_arg!r}")
    for (before, after), k in zip(pads, pool_size):
        if before >= k or after >= k:
            raise ValueError(
                f"padding must be smaller than pool_size={pool_size} on every side so that each window holds an "
                f"input cell; received padding={padding!r}"
            )
    out_h = _pooled_size(h, pool_size[0], stride[0], *pads[0], ceil_mode)
    out_w = _pooled_size(w, pool_size[1], stride[1], *pads[1], ceil_mode)
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"the output would be empty: pool_size={pool_size} does not fit the {h}x{w} input padded by {pads}; "
            f"received {input_name} with shape {tuple(input_shape)}"
        )
    return PoolProblem(channels_last, n, h, w, c, out_h, out_w, pool_size, stride, pads)

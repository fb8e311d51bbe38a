"""Plain NumPy reference for fastconv's functional API (see docs/functional.md).

Written for clarity, not speed, and sharing no code with fastconv (it never imports it).  Every function computes
in float64 and returns float64 arrays (pooling indices are int64); callers compare against them with a tolerance
that suits the dtype under test.

Internally everything is done in the channels_first layout: activations ``(N, C, H, W)`` and weights
``(K, C // groups, R, S)``.  Inputs and outputs follow ``data_format`` exactly like fastconv:

=================  ==============  ======================
data_format        activations     conv weight
=================  ==============  ======================
channels_last      (N, H, W, C)    (R, S, C // groups, K)
channels_first     (N, C, H, W)    (K, C // groups, R, S)
=================  ==============  ======================

The convolution loops over the kernel taps ``(r, s)``; for one tap, output cell ``(oh, ow)`` reads the padded
input at ``(oh * stride_h + r * dilation_h, ow * stride_w + s * dilation_w)``, which is a strided slice of the
padded input.  The gradients are written directly as the adjoint sums of that expression (scatter of the output
gradient back through the same slices), not derived with autograd.
"""


import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")

__all__ = [
    "DATA_FORMATS",
    "pair",
    "resolve_padding",
    "output_size",
    "conv_output_hw",
    "pool_output_hw",
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_grad_bias",
    "max_pool2d",
    "max_pool2d_grad",
    "to_channels_first",
    "from_channels_first",
    "weight_to_oihw",
    "weight_from_oihw",
]


# ----------------------------------------------------------------------------------------------------------------
# Sizes and padding
# ----------------------------------------------------------------------------------------------------------------


def pair(v, name="value"):
    """An int or a pair of ints -> a tuple ``(rows, cols)``."""
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair; received {name}={v!r}")
    return (int(v[0]), int(v[1]))


def _same_padding_1d(n, k, s, d):
    k_eff = d * (k - 1) + 1
    out = -(-n // s)  # ceil(n / s)
    total = max((out - 1) * s + k_eff - n, 0)
    return (total // 2, total - total // 2)


def resolve_padding(padding, input_hw, kernel_hw, stride=1, dilation=1):
    """Resolve any accepted padding form to explicit ``((top, bottom), (left, right))``.

    ``"valid"`` -> no padding; ``"same"`` -> Keras/TensorFlow rule (output ``ceil(n / s)``, total padding
    ``max((ceil(n / s) - 1) * s + k_eff - n, 0)``, ``total // 2`` before and the rest after); an int ``p``;
    a pair ``(ph, pw)``; or ``((top, bottom), (left, right))``.  For pooling pass ``kernel_hw=pool_size`` and
    ``dilation=1``.
    """
    H, W = input_hw
    R, S = pair(kernel_hw, "kernel")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            res = ((0, 0), (0, 0))
        elif padding == "same":
            res = (_same_padding_1d(H, R, sh, dh), _same_padding_1d(W, S, sw, dw))
        else:
            raise ValueError(f"bad padding string; received padding={padding!r}")
    elif isinstance(padding, (int, np.integer)):
        p = int(padding)
        res = ((p, p), (p, p))
    else:
        padding = tuple(padding)
        if len(padding) != 2:
            raise ValueError(f"bad padding; received padding={padding!r}")
        if all(isinstance(p, (int, np.integer)) for p in padding):
            ph, pw = (int(p) for p in padding)
            res = ((ph, ph), (pw, pw))
        else:
            (t, b), (l, r) = padding
            res = ((int(t), int(b)), (int(l), int(r)))
    if min(res[0] + res[1]) < 0:
        raise ValueError(f"negative padding; received padding={padding!r}")
    return res


def output_size(n, k, stride=1, dilation=1, before=0, after=0, ceil_mode=False):
    """Output length along one axis (convolution rule, or pooling rule with ``ceil_mode``)."""
    k_eff = dilation * (k - 1) + 1
    span = n + before + after - k_eff
    if span < 0:
        raise ValueError(f"window larger than padded input: n={n}, pad=({before},{after}), k_eff={k_eff}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1  # ceil(span / stride) + 1
    if (out - 1) * stride >= n + before:  # last window would start in the after-padding (PyTorch rule)
        out -= 1
    return out


def conv_output_hw(input_hw, kernel_hw, stride=1, padding="valid", dilation=1):
    (pt, pb), (pl, pr) = resolve_padding(padding, input_hw, kernel_hw, stride, dilation)
    R, S = pair(kernel_hw)
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    return (output_size(input_hw[0], R, sh, dh, pt, pb), output_size(input_hw[1], S, sw, dw, pl, pr))


def pool_output_hw(input_hw, pool_size=2, stride=None, padding="valid", ceil_mode=False):
    kh, kw = pair(pool_size)
    sh, sw = pair(stride if stride is not None else (kh, kw))
    (pt, pb), (pl, pr) = resolve_padding(padding, input_hw, (kh, kw), (sh, sw), 1)
    return (output_size(input_hw[0], kh, sh, 1, pt, pb, ceil_mode),
            output_size(input_hw[1], kw, sw, 1, pl, pr, ceil_mode))


# ----------------------------------------------------------------------------------------------------------------
# Layout helpers
# ----------------------------------------------------------------------------------------------------------------


def _check_format(data_format):
    if data_format not in DATA_FORMATS:
        raise ValueError(f"bad data_format; received data_format={data_format!r}")


def to_channels_first(a, data_format):
    """Activation ``a`` in ``data_format`` -> float64 ``(N, C, H, W)``."""
    _check_format(data_format)
    a = np.asarray(a, dtype=np.float64)
    return a.transpose(0, 3, 1, 2) if data_format == "channels_last" else a


def from_channels_first(a, data_format):
    """``(N, C, H, W)`` -> activation in ``data_format`` (C-contiguous copy)."""
    _check_format(data_format)
    a = a.transpose(0, 2, 3, 1) if data_format == "channels_last" else a
    return np.ascontiguousarray(a)


def weight_to_oihw(w, data_format):
    """Weight in ``data_format`` (HWIO or OIHW) -> float64 OIHW ``(K, C // groups, R, S)``."""
    _check_format(data_format)
    w = np.asarray(w, dtype=np.float64)
    return w.transpose(3, 2, 0, 1) if data_format == "channels_last" else w


def weight_from_oihw(w, data_format):
    """OIHW -> weight in ``data_format`` (C-contiguous copy)."""
    _check_format(data_format)
    w = w.transpose(2, 3, 1, 0) if data_format == "channels_last" else w
    return np.ascontiguousarray(w)


def _shape_to_channels_first(shape, data_format):
    N, a, b, c = (int(v) for v in shape)
    return (N, c, a, b) if data_format == "channels_last" else (N, a, b, c)


def _weight_shape_to_oihw(shape, data_format):
    a, b, c, d = (int(v) for v in shape)
    return (d, c, a, b) if data_format == "channels_last" else (a, b, c, d)


def _tap_slices(r, s, out_hw, stride, dilation):
    """Slices of the padded input read by kernel tap ``(r, s)`` for every output cell."""
    OH, OW = out_hw
    sh, sw = stride
    dh, dw = dilation
    h0, w0 = r * dh, s * dw
    return (slice(h0, h0 + (OH - 1) * sh + 1, sh), slice(w0, w0 + (OW - 1) * sw + 1, sw))


def _conv_geometry(x_shape_cf, w_shape_oihw, stride, padding, dilation, groups):
    N, C, H, W = x_shape_cf
    K, Cg, R, S = w_shape_oihw
    groups = int(groups)
    if groups < 1 or C % groups or K % groups or C // groups != Cg:
        raise ValueError(f"inconsistent groups: C={C}, K={K}, C//groups in weight={Cg}, groups={groups}")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    pads = resolve_padding(padding, (H, W), (R, S), stride, dilation)
    (pt, pb), (pl, pr) = pads
    OH = output_size(H, R, stride[0], dilation[0], pt, pb)
    OW = output_size(W, S, stride[1], dilation[1], pl, pr)
    if OH < 1 or OW < 1:
        raise ValueError("output would be empty")
    return stride, dilation, pads, (OH, OW), groups


# ----------------------------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------------------------


def conv2d(x, w, b=None, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
           data_format="channels_last"):
    """Cross-correlation ``y[n, k, oh, ow] = b[k] + sum_{c, r, s} xpad[n, c, oh*sh + r*dh, ow*sw + s*dw] w[k, c, r, s]``
    with ``c`` running over the input channels of ``k``'s group.  ``padding`` accepts every form of the spec."""
    xc = to_channels_first(x, data_format)
    wc = weight_to_oihw(w, data_format)
    N, C, H, W = xc.shape
    K, Cg, R, S = wc.shape
    stride, dilation, ((pt, pb), (pl, pr)), (OH, OW), groups = _conv_geometry(
        xc.shape, wc.shape, stride, padding, dilation, groups)
    Kg = K // groups
    xp = np.pad(xc, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, K, OH, OW), dtype=np.float64)
    for g in range(groups):
        cs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                hs, ws = _tap_slices(r, s, (OH, OW), stride, dilation)
                patch = xp[:, cs, hs, ws]  # (N, Cg, OH, OW)
                y[:, ks] += np.einsum("nchw,kc->nkhw", patch, wc[ks, :, r, s])
    if b is not None:
        b = np.asarray(b, dtype=np.float64)
        if b.shape != (K,):
            raise ValueError(f"bias shape {b.shape} != ({K},)")
        y += b[None, :, None, None]
    return from_channels_first(y, data_format)


def conv2d_grad_input(gy, w, input_shape, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
                      data_format="channels_last"):
    """Adjoint of :func:`conv2d` with respect to ``x``: scatter ``gy`` back through every tap's slice."""
    gyc = to_channels_first(gy, data_format)
    wc = weight_to_oihw(w, data_format)
    N, C, H, W = _shape_to_channels_first(input_shape, data_format)
    K, Cg, R, S = wc.shape
    stride, dilation, ((pt, pb), (pl, pr)), (OH, OW), groups = _conv_geometry(
        (N, C, H, W), wc.shape, stride, padding, dilation, groups)
    if gyc.shape != (N, K, OH, OW):
        raise ValueError(f"grad_output shape {gyc.shape} != {(N, K, OH, OW)} (channels_first)")
    Kg = K // groups
    gxp = np.zeros((N, C, H + pt + pb, W + pl + pr), dtype=np.float64)
    for g in range(groups):
        cs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                hs, ws = _tap_slices(r, s, (OH, OW), stride, dilation)
                # Slices of one tap never repeat a cell (stride >= 1), so += on the view is a plain scatter.
                gxp[:, cs, hs, ws] += np.einsum("nkhw,kc->nchw", gyc[:, ks], wc[ks, :, r, s])
    gx = gxp[:, :, pt:pt + H, pl:pl + W]
    return from_channels_first(gx, data_format)


def conv2d_grad_weight(gy, x, weight_shape, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
                       data_format="channels_last"):
    """Adjoint of :func:`conv2d` with respect to ``w``: ``gw[k, c, r, s] = sum_{n, oh, ow} gy[n, k, oh, ow] *
    xpad[n, c_global, oh*sh + r*dh, ow*sw + s*dw]``."""
    gyc = to_channels_first(gy, data_format)
    xc = to_channels_first(x, data_format)
    K, Cg, R, S = _weight_shape_to_oihw(weight_shape, data_format)
    N, C, H, W = xc.shape
    stride, dilation, ((pt, pb), (pl, pr)), (OH, OW), groups = _conv_geometry(
        xc.shape, (K, Cg, R, S), stride, padding, dilation, groups)
    if gyc.shape != (N, K, OH, OW):
        raise ValueError(f"grad_output shape {gyc.shape} != {(N, K, OH, OW)} (channels_first)")
    Kg = K // groups
    xp = np.pad(xc, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    gw = np.zeros((K, Cg, R, S), dtype=np.float64)
    for g in range(groups):
        cs, ks = slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)
        for r in range(R):
            for s in range(S):
                hs, ws = _tap_slices(r, s, (OH, OW), stride, dilation)
                gw[ks, :, r, s] = np.einsum("nkhw,nchw->kc", gyc[:, ks], xp[:, cs, hs, ws])
    return weight_from_oihw(gw, data_format)


def conv2d_grad_bias(gy, data_format="channels_last"):
    """``gb[k] = sum_{n, oh, ow} gy[n, k, oh, ow]``."""
    gyc = to_channels_first(gy, data_format)
    return gyc.sum(axis=(0, 2, 3))


# ----------------------------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------------------------


def _pool_geometry(H, W, pool_size, stride, padding, ceil_mode):
    kh, kw = pair(pool_size, "pool_size")
    sh, sw = pair(stride if stride is not None else (kh, kw), "stride")
    (pt, pb), (pl, pr) = resolve_padding(padding, (H, W), (kh, kw), (sh, sw), 1)
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError("padding on each side must be smaller than the pool size")
    OH = output_size(H, kh, sh, 1, pt, pb, ceil_mode)
    OW = output_size(W, kw, sw, 1, pl, pr, ceil_mode)
    if OH < 1 or OW < 1:
        raise ValueError("output would be empty")
    return (kh, kw), (sh, sw), ((pt, pb), (pl, pr)), (OH, OW)


def max_pool2d(x, pool_size=2, stride=None, padding="valid", ceil_mode=False, data_format="channels_last"):
    """Max pooling -> ``(out, indices)``.

    ``indices`` (int64, the output's shape) holds the flat index ``h * W + w`` of the winning cell in its input
    plane.  Window cells are visited in row-major order; a cell replaces the current winner when it is larger, or
    when it is NaN (so the first maximum wins ties, and the last NaN wins and propagates: PyTorch's rule).
    Padded cells never win, even against -inf.
    """
    xc = to_channels_first(x, data_format)
    N, C, H, W = xc.shape
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)), (OH, OW) = _pool_geometry(H, W, pool_size, stride, padding, ceil_mode)
    # In ceil_mode the last window may reach past the after-padding: extend the padded plane so every window fits.
    Hp = max(H + pt + pb, (OH - 1) * sh + kh)
    Wp = max(W + pl + pr, (OW - 1) * sw + kw)
    xp = np.full((N, C, Hp, Wp), -np.inf)
    xp[:, :, pt:pt + H, pl:pl + W] = xc
    flat = np.full((Hp, Wp), -1, dtype=np.int64)  # flat input index of each padded cell, -1 for padding
    flat[pt:pt + H, pl:pl + W] = np.arange(H * W, dtype=np.int64).reshape(H, W)

    best = np.full((N, C, OH, OW), -np.inf)
    best_idx = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            hs, ws = _tap_slices(i, j, (OH, OW), (sh, sw), (1, 1))
            v = xp[:, :, hs, ws]
            idx = np.broadcast_to(flat[hs, ws], v.shape)
            real = idx >= 0
            take = real & ((best_idx < 0) | (v > best) | np.isnan(v))
            best = np.where(take, v, best)
            best_idx = np.where(take, idx, best_idx)
    if (best_idx < 0).any():
        raise AssertionError("a pooling window holds no input cell")
    return from_channels_first(best, data_format), from_channels_first(best_idx, data_format)


def max_pool2d_grad(gy, indices, input_shape, data_format="channels_last"):
    """Scatter-add each ``gy`` cell onto the input cell named by ``indices`` (flat ``h * W + w`` per plane)."""
    gyc = to_channels_first(gy, data_format)
    ic = np.asarray(indices)
    ic = ic.transpose(0, 3, 1, 2) if data_format == "channels_last" else ic
    if ic.shape != gyc.shape:
        raise ValueError("indices and grad_output shapes differ")
    N, C, H, W = _shape_to_channels_first(input_shape, data_format)
    if ic.size and (ic.min() < 0 or ic.max() >= H * W):
        raise ValueError("index out of range")
    plane = (np.arange(N)[:, None] * C + np.arange(C)[None, :]).reshape(N, C, 1, 1) * (H * W)
    target = (plane + ic.astype(np.int64)).ravel()
    gx = np.bincount(target, weights=gyc.ravel(), minlength=N * C * H * W).reshape(N, C, H, W)
    return from_channels_first(gx, data_format)


# ----------------------------------------------------------------------------------------------------------------
# Batch normalisation (reference for fastconv.functional_norm / layers.BatchNormalization)
# ----------------------------------------------------------------------------------------------------------------
# Plain float64, the statistics by np.mean / np.var, and the training-mode input gradient derived step by step
# through the variance and the mean (the textbook chain rule), not with the compact closed form fastconv uses.


def _bn_layout(ndim, axis):
    """(reduction axes, broadcast shape of a per-channel vector) for feature axis ``axis``."""
    axis = axis % ndim
    reduce = tuple(i for i in range(ndim) if i != axis)
    shape = [1] * ndim
    shape[axis] = -1
    return reduce, tuple(shape)


def batch_norm_moments(x, axis=-1):
    """Per-channel mean and biased variance (divided by the count), float64."""
    x = np.asarray(x, dtype=np.float64)
    reduce, _ = _bn_layout(x.ndim, axis)
    return x.mean(axis=reduce), x.var(axis=reduce)


def batch_norm_forward(x, mean, variance, gamma=None, beta=None, axis=-1, epsilon=1e-3):
    """``(x - mean) / sqrt(variance + epsilon) * gamma + beta``, per channel along ``axis``; float64."""
    x = np.asarray(x, dtype=np.float64)
    _, shape = _bn_layout(x.ndim, axis)
    c = x.shape[axis]
    gamma = np.ones(c) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros(c) if beta is None else np.asarray(beta, dtype=np.float64)
    mean, variance = (np.asarray(v, dtype=np.float64).reshape(shape) for v in (mean, variance))
    return (x - mean) / np.sqrt(variance + epsilon) * gamma.reshape(shape) + beta.reshape(shape)


def batch_norm_backward(gy, x, gamma=None, axis=-1, epsilon=1e-3, mean=None, variance=None):
    """``(grad_x, grad_gamma, grad_beta)`` of :func:`batch_norm_forward`.

    Without ``mean``/``variance`` the forward used the batch's own statistics (training), so the input gradient
    also flows through them; with them (inference statistics) they are constants.
    """
    x = np.asarray(x, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    reduce, shape = _bn_layout(x.ndim, axis)
    c = x.shape[axis]
    gamma = np.ones(c) if gamma is None else np.asarray(gamma, dtype=np.float64)
    batch = mean is None
    if batch:
        mean, variance = batch_norm_moments(x, axis)
    mu = np.asarray(mean, dtype=np.float64).reshape(shape)
    var = np.asarray(variance, dtype=np.float64).reshape(shape)
    inv = 1.0 / np.sqrt(var + epsilon)
    xmu = x - mu
    x_hat = xmu * inv
    grad_gamma = np.sum(gy * x_hat, axis=reduce)
    grad_beta = np.sum(gy, axis=reduce)
    d_xhat = gy * gamma.reshape(shape)
    if not batch:
        return d_xhat * inv, grad_gamma, grad_beta
    n = x.size // c
    d_var = np.sum(d_xhat * xmu, axis=reduce, keepdims=True) * -0.5 * inv ** 3
    d_mu = np.sum(-d_xhat * inv, axis=reduce, keepdims=True) + d_var * np.sum(-2.0 * xmu, axis=reduce,
                                                                              keepdims=True) / n
    grad_x = d_xhat * inv + d_var * 2.0 * xmu / n + d_mu / n
    return grad_x, grad_gamma, grad_beta


def batch_norm_moving_average(moving, batch_statistic, momentum=0.99):
    """Keras's update of a moving statistic: ``moving * momentum + batch * (1 - momentum)`` (float64)."""
    return np.asarray(moving, dtype=np.float64) * momentum + np.asarray(batch_statistic, np.float64) * (1 - momentum)


# ----------------------------------------------------------------------------------------------------------------
# Average pooling and global pooling (reference for fastconv.functional_pooling)
# ----------------------------------------------------------------------------------------------------------------
# Average pooling pads the plane explicitly and divides each window's sum by the sum of a "counted" mask over the
# same window: 1 on real cells, also 1 on padding cells with count_include_pad, always 0 on the cells a ceil_mode
# window reaches beyond the padding (PyTorch's divisor).  The gradient is the adjoint of those window slices.


def _avg_pool_planes(H, W, pool_size, stride, padding, ceil_mode, count_include_pad):
    (kh, kw), (sh, sw), ((pt, pb), (pl, pr)), (OH, OW) = _pool_geometry(H, W, pool_size, stride, padding, ceil_mode)
    Hp = max(H + pt + pb, (OH - 1) * sh + kh)
    Wp = max(W + pl + pr, (OW - 1) * sw + kw)
    counted = np.zeros((Hp, Wp))
    if count_include_pad:
        counted[:H + pt + pb, :W + pl + pr] = 1.0
    else:
        counted[pt:pt + H, pl:pl + W] = 1.0
    divisor = np.zeros((OH, OW))
    for i in range(kh):
        for j in range(kw):
            hs, ws = _tap_slices(i, j, (OH, OW), (sh, sw), (1, 1))
            divisor += counted[hs, ws]
    return (kh, kw), (sh, sw), (pt, pl), (Hp, Wp), (OH, OW), divisor


def avg_pool2d(x, pool_size=2, stride=None, padding="valid", ceil_mode=False, count_include_pad=False,
               data_format="channels_last"):
    """Average pooling, PyTorch's ``avg_pool2d(ceil_mode, count_include_pad)`` generalised to asymmetric padding
    (``count_include_pad=False`` is TensorFlow's "same" average pooling); float64."""
    xc = to_channels_first(x, data_format)
    N, C, H, W = xc.shape
    (kh, kw), (sh, sw), (pt, pl), (Hp, Wp), (OH, OW), divisor = _avg_pool_planes(
        H, W, pool_size, stride, padding, ceil_mode, count_include_pad)
    xp = np.zeros((N, C, Hp, Wp))
    xp[:, :, pt:pt + H, pl:pl + W] = xc
    total = np.zeros((N, C, OH, OW))
    for i in range(kh):
        for j in range(kw):
            hs, ws = _tap_slices(i, j, (OH, OW), (sh, sw), (1, 1))
            total += xp[:, :, hs, ws]
    return from_channels_first(total / divisor, data_format)


def avg_pool2d_grad(gy, input_shape, pool_size=2, stride=None, padding="valid", ceil_mode=False,
                    count_include_pad=False, data_format="channels_last"):
    """Adjoint of :func:`avg_pool2d`: each ``gy`` cell divided by its window's divisor, added onto the window."""
    N, C, H, W = _shape_to_channels_first(input_shape, data_format)
    (kh, kw), (sh, sw), (pt, pl), (Hp, Wp), (OH, OW), divisor = _avg_pool_planes(
        H, W, pool_size, stride, padding, ceil_mode, count_include_pad)
    gyc = to_channels_first(gy, data_format)
    if gyc.shape != (N, C, OH, OW):
        raise ValueError("grad_output shape does not match the pooled input shape")
    share = gyc / divisor
    gp = np.zeros((N, C, Hp, Wp))
    for i in range(kh):
        for j in range(kw):
            hs, ws = _tap_slices(i, j, (OH, OW), (sh, sw), (1, 1))
            gp[:, :, hs, ws] += share
    return from_channels_first(gp[:, :, pt:pt + H, pl:pl + W], data_format)


def global_avg_pool2d(x, data_format="channels_last"):
    """Mean over H and W -> ``(N, C)`` float64."""
    return to_channels_first(x, data_format).mean(axis=(2, 3))


def global_avg_pool2d_grad(gy, input_shape, data_format="channels_last"):
    """``gy[n, c] / (H * W)`` on every cell of plane ``(n, c)``."""
    N, C, H, W = _shape_to_channels_first(input_shape, data_format)
    g = np.asarray(gy, dtype=np.float64).reshape(N, C, 1, 1) / (H * W)
    return from_channels_first(np.broadcast_to(g, (N, C, H, W)), data_format)


def global_max_pool2d(x, data_format="channels_last"):
    """Max over H and W -> ``(out, indices)``, both ``(N, C)``; ``indices`` is the flat ``h * W + w`` of the first
    maximum (a NaN counts as the maximum, so the value is NaN and the index that of the first NaN)."""
    xc = to_channels_first(x, data_format)
    N, C, H, W = xc.shape
    flat = xc.reshape(N, C, H * W)
    idx = np.argmax(flat, axis=2).astype(np.int64)  # np.argmax: first maximum, first NaN
    return np.take_along_axis(flat, idx[:, :, None], axis=2)[:, :, 0], idx


def global_max_pool2d_grad(gy, indices, input_shape, data_format="channels_last"):
    """``gy[n, c]`` onto the cell ``indices[n, c]`` of plane ``(n, c)``, zero elsewhere."""
    N, C, H, W = _shape_to_channels_first(input_shape, data_format)
    gx = np.zeros((N, C, H * W))
    np.put_along_axis(gx, np.asarray(indices, dtype=np.int64).reshape(N, C, 1),
                      np.asarray(gy, dtype=np.float64).reshape(N, C, 1), axis=2)
    return from_channels_first(gx.reshape(N, C, H, W), data_format)


# ----------------------------------------------------------------------------------------------------------------
# Depthwise convolution (channel multiplier M: input channel c feeds output channels c*M + m)
# ----------------------------------------------------------------------------------------------------------------
# Weights: (R, S, C, M) for channels_last (Keras's DepthwiseConv2D kernel), (C*M, 1, R, S) for channels_first
# (PyTorch's depthwise layout). Internally (C, M, R, S).


def _depthwise_weight_cmrs(w, data_format, channels):
    _check_format(data_format)
    w = np.asarray(w, dtype=np.float64)
    if data_format == "channels_last":
        return w.transpose(2, 3, 0, 1)
    k, _, r, s = w.shape
    return w.reshape(channels, k // channels, r, s)


def _depthwise_weight_from_cmrs(w, data_format):
    c, m, r, s = w.shape
    if data_format == "channels_last":
        return np.ascontiguousarray(w.transpose(2, 3, 0, 1))
    return np.ascontiguousarray(w.reshape(c * m, 1, r, s))


def _depthwise_geometry(hw, rs, stride, padding, dilation):
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    pads = resolve_padding(padding, hw, rs, stride, dilation)
    (pt, pb), (pl, pr) = pads
    out_hw = (output_size(hw[0], rs[0], stride[0], dilation[0], pt, pb),
              output_size(hw[1], rs[1], stride[1], dilation[1], pl, pr))
    return stride, dilation, pads, out_hw


def depthwise_conv2d(x, w, b=None, stride=1, padding="valid", dilation=1, data_format="channels_last"):
    """``y[n, c*M + m, oh, ow] = b[c*M + m] + sum_{r, s} xpad[n, c, oh*sh + r*dh, ow*sw + s*dw] * w[c, m, r, s]``."""
    xc = to_channels_first(x, data_format)
    N, C, H, W = xc.shape
    wc = _depthwise_weight_cmrs(w, data_format, C)
    _, M, R, S = wc.shape
    stride, dilation, ((pt, pb), (pl, pr)), (OH, OW) = _depthwise_geometry((H, W), (R, S), stride, padding,
                                                                           dilation)
    xp = np.pad(xc, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((N, C, M, OH, OW), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            hs, ws = _tap_slices(r, s, (OH, OW), stride, dilation)
            y += xp[:, :, None, hs, ws] * wc[None, :, :, r, s, None, None]
    y = y.reshape(N, C * M, OH, OW)
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return from_channels_first(y, data_format)


def depthwise_conv2d_grad_input(gy, w, input_shape, stride=1, padding="valid", dilation=1,
                                data_format="channels_last"):
    """Adjoint of :func:`depthwise_conv2d` with respect to ``x``: each tap scatters ``sum_m gy * w`` back."""
    N, C, H, W = _shape_to_channels_first(input_shape, data_format)
    wc = _depthwise_weight_cmrs(w, data_format, C)
    _, M, R, S = wc.shape
    stride, dilation, ((pt, pb), (pl, pr)), (OH, OW) = _depthwise_geometry((H, W), (R, S), stride, padding,
                                                                           dilation)
    gyc = to_channels_first(gy, data_format).reshape(N, C, M, OH, OW)
    gxp = np.zeros((N, C, H + pt + pb, W + pl + pr), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            hs, ws = _tap_slices(r, s, (OH, OW), stride, dilation)
            gxp[:, :, hs, ws] += np.einsum("ncmhw,cm->nchw", gyc, wc[:, :, r, s])
    return from_channels_first(gxp[:, :, pt:pt + H, pl:pl + W], data_format)


def depthwise_conv2d_grad_weight(gy, x, weight_shape, stride=1, padding="valid", dilation=1,
                                 data_format="channels_last"):
    """``gw[c, m, r, s] = sum_{n, oh, ow} gy[n, c*M + m, oh, ow] * xpad[n, c, oh*sh + r*dh, ow*sw + s*dw]``, returned
    in ``weight_shape``'s layout."""
    xc = to_channels_first(x, data_format)
    N, C, H, W = xc.shape
    if data_format == "channels_last":
        R, S, _, M = (int(v) for v in weight_shape)
    else:
        K, _, R, S = (int(v) for v in weight_shape)
        M = K // C
    stride, dilation, ((pt, pb), (pl, pr)), (OH, OW) = _depthwise_geometry((H, W), (R, S), stride, padding,
                                                                           dilation)
    gyc = to_channels_first(gy, data_format).reshape(N, C, M, OH, OW)
    xp = np.pad(xc, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    gw = np.zeros((C, M, R, S), dtype=np.float64)
    for r in range(R):
        for s in range(S):
            hs, ws = _tap_slices(r, s, (OH, OW), stride, dilation)
            gw[:, :, r, s] = np.einsum("ncmhw,nchw->cm", gyc, xp[:, :, hs, ws])
    return _depthwise_weight_from_cmrs(gw, data_format)

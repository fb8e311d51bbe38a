"""Convolution layers."""
import math

import numpy as np

import fastconv.functional as F
from fastconv import _layout, activations, initializers
from fastconv.layers import _arguments as args
from fastconv.layers.base import ActivationMixin, Layer, format_shape

__all__ = ["Conv2D", "DepthwiseConv2D", "SeparableConv2D", "conv_output_length"]


def conv_output_length(size, kernel, stride, dilation, padding):
    """Output length along one spatial axis (Keras's rule; None stays None)."""
    if size is None:
        return None
    if padding == "same":
        return math.ceil(size / stride)
    effective = dilation * (kernel - 1) + 1
    return (size - effective) // stride + 1 if size >= effective else 0


class Conv2D(ActivationMixin, Layer):
    """2-D convolution layer, Keras's ``Conv2D``: ``activation(conv2d(x, kernel) + bias)``.

    The kernel is stored as ``(kernel_h, kernel_w, in_channels // groups, filters)`` (Keras's HWIO layout)
    whatever the ``data_format``, so weights move between the two layouts unchanged.

    Parameters
    ----------
    filters : int
        Number of output channels.
    kernel_size : int or (int, int)
    strides : int or (int, int)
    padding : {"valid", "same"}
        "same" pads as Keras/TensorFlow do (output size ``ceil(n / stride)``, extra row/column at the end).
    data_format : {"channels_last", "channels_first"}, optional
        ``(N, H, W, C)`` (default) or ``(N, C, H, W)`` inputs.
    dilation_rate : int or (int, int)
    groups : int
        Divides the input channels and ``filters``.
    activation : str or Activation, optional
        ``"relu"``, ``"sigmoid"``, ``"softmax"``, ``"tanh"``, ``"linear"`` or None.
    use_bias : bool
    kernel_initializer, bias_initializer : str or Initializer
        ``"glorot_uniform"`` and ``"zeros"`` by default, as in Keras.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import Conv2D
    >>> conv = Conv2D(8, 3, padding="same", activation="relu")
    >>> y = conv(np.zeros((2, 16, 16, 3), dtype=np.float32))
    >>> y.shape, conv.get_weights()[0].shape, conv.count_params()
    ((2, 16, 16, 8), (3, 3, 3, 8), 224)
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = args.integer(filters, "filters", minimum=1)
        self.kernel_size = args.int_tuple(kernel_size, 2, "kernel_size")
        self.strides = args.int_tuple(strides, 2, "strides")
        self.padding = args.padding(padding)
        self.data_format = args.data_format(data_format)
        self.dilation_rate = args.int_tuple(dilation_rate, 2, "dilation_rate")
        self.groups = args.integer(groups, "groups", minimum=1)
        if self.filters % self.groups:
            raise ValueError(f"filters must be divisible by groups={self.groups}; received filters={filters!r}")
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer, "kernel_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.kernel = self.bias = None

    @property
    def _channels_last(self):
        return self.data_format == "channels_last"

    def _options(self):
        return dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate, groups=self.groups,
                    data_format=self.data_format)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"input of layer {self.name!r} must be 4-D (batch, rows, cols, channels) or "
                             f"(batch, channels, rows, cols); received input with shape {format_shape(input_shape)}")
        channels = input_shape[-1] if self._channels_last else input_shape[1]
        if channels is None:
            raise ValueError(f"input of layer {self.name!r} must have a known channel count; received input "
                             f"with shape {format_shape(input_shape)}")
        if channels % self.groups:
            raise ValueError(f"input channels of layer {self.name!r} must be divisible by groups={self.groups}; "
                             f"received input with shape {format_shape(input_shape)}")
        out = self.compute_output_shape(input_shape)
        spatial = out[1:3] if self._channels_last else out[2:4]
        if any(d is not None and d < 1 for d in spatial):
            raise ValueError(f"input of layer {self.name!r} is too small for kernel_size={self.kernel_size} with "
                             f"dilation_rate={self.dilation_rate} and padding={self.padding!r}; received input "
                             f"with shape {format_shape(input_shape)}")
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels // self.groups, self.filters),
                                      self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        if self._channels_last:
            n, h, w, _ = input_shape
        else:
            n, _, h, w = input_shape
        oh, ow = (conv_output_length(size, k, s, d, self.padding)
                  for size, k, s, d in zip((h, w), self.kernel_size, self.strides, self.dilation_rate))
        return (n, oh, ow, self.filters) if self._channels_last else (n, self.filters, oh, ow)

    def _layout_kernel(self):
        """The kernel as the functional API expects it for this data_format (HWIO or OIHW)."""
        kernel = self.kernel.value
        return kernel if self._channels_last else _layout.hwio_to_oihw(kernel)

    def call(self, x, training=False):
        bias = self.bias.value if self.use_bias else None
        weight = self._layout_kernel()
        fuse_relu = self._relu_in_place(training)
        conv = F.conv2d_relu if fuse_relu else F.conv2d
        reuse = self._recycled("output", self.compute_output_shape(x.shape), self.dtype) if x.dtype == self.dtype \
            else None
        logits = self._keep_for_reuse("output", conv(x, weight, bias, out=reuse, **self._options()))
        self._cache = (x, weight) if self._keep_state(training) else None
        return self._activate(logits, training, owned=True, relu_applied=fuse_relu)

    def backward_from_logits(self, grad_logits, need_input_grad=True):
        x, weight = self._cached()
        grad_logits = np.ascontiguousarray(grad_logits, dtype=self.dtype)
        grads = []
        if self.trainable:
            grad_kernel = F.conv2d_grad_weight(grad_logits, x, weight.shape, **self._options())
            grads.append(grad_kernel if self._channels_last else _layout.oihw_to_hwio(grad_kernel))
            if self.use_bias:
                grads.append(F.conv2d_grad_bias(grad_logits, data_format=self.data_format))
        grad_input = (F.conv2d_grad_input(grad_logits, weight, x.shape, **self._options())
                      if need_input_grad else None)
        return grad_input, grads

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                      padding=self.padding, data_format=self.data_format, dilation_rate=list(self.dilation_rate),
                      groups=self.groups, activation=activations.serialize(self.activation), use_bias=self.use_bias,
                      kernel_initializer=initializers.serialize(self.kernel_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class _DepthwiseArguments:
    """What DepthwiseConv2D and SeparableConv2D share: the depthwise step's arguments, input checks and shapes."""

    def _depthwise_arguments(self, kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate):
        self.kernel_size = args.int_tuple(kernel_size, 2, "kernel_size")
        self.strides = args.int_tuple(strides, 2, "strides")
        self.padding = args.padding(padding)
        self.depth_multiplier = args.integer(depth_multiplier, "depth_multiplier", minimum=1)
        self.data_format = args.data_format(data_format)
        self.dilation_rate = args.int_tuple(dilation_rate, 2, "dilation_rate")

    @property
    def _channels_last(self):
        return self.data_format == "channels_last"

    def _depthwise_options(self):
        return dict(stride=self.strides, padding=self.padding, dilation=self.dilation_rate,
                    data_format=self.data_format)

    def _input_channels(self, input_shape):
        """The input's channel count, after checking the shape can be convolved."""
        if len(input_shape) != 4:
            raise ValueError(f"input of layer {self.name!r} must be 4-D (batch, rows, cols, channels) or "
                             f"(batch, channels, rows, cols); received input with shape {format_shape(input_shape)}")
        channels = input_shape[-1] if self._channels_last else input_shape[1]
        if channels is None:
            raise ValueError(f"input of layer {self.name!r} must have a known channel count; received input "
                             f"with shape {format_shape(input_shape)}")
        spatial = input_shape[1:3] if self._channels_last else input_shape[2:4]
        out = [conv_output_length(size, k, st, d, self.padding)
               for size, k, st, d in zip(spatial, self.kernel_size, self.strides, self.dilation_rate)]
        if any(d is not None and d < 1 for d in out):
            raise ValueError(f"input of layer {self.name!r} is too small for kernel_size={self.kernel_size} with "
                             f"dilation_rate={self.dilation_rate} and padding={self.padding!r}; received input "
                             f"with shape {format_shape(input_shape)}")
        return channels

    def _output_shape(self, input_shape, channels):
        if self._channels_last:
            n, h, w, _ = input_shape
        else:
            n, _, h, w = input_shape
        oh, ow = (conv_output_length(size, k, s, d, self.padding)
                  for size, k, s, d in zip((h, w), self.kernel_size, self.strides, self.dilation_rate))
        return (n, oh, ow, channels) if self._channels_last else (n, channels, oh, ow)

    def _functional_depthwise(self, kernel):
        """The (R, S, C, M) kernel as depthwise_conv2d takes it for this data_format: itself, or (C*M, 1, R, S)."""
        if self._channels_last:
            return kernel
        r, s, c, m = kernel.shape
        return _layout.hwio_to_oihw(kernel.reshape(r, s, 1, c * m))

    def _stored_depthwise(self, grad, kernel_shape):
        """A gradient in depthwise_conv2d's layout as the (R, S, C, M) kernel is stored."""
        return grad if self._channels_last else _layout.oihw_to_hwio(grad).reshape(kernel_shape)

    def _depthwise_config(self):
        return dict(kernel_size=list(self.kernel_size), strides=list(self.strides), padding=self.padding,
                    depth_multiplier=self.depth_multiplier, data_format=self.data_format,
                    dilation_rate=list(self.dilation_rate))


class DepthwiseConv2D(_DepthwiseArguments, ActivationMixin, Layer):
    """Depthwise 2-D convolution layer, Keras's ``DepthwiseConv2D``: ``activation(depthwise_conv2d(x, kernel) +
    bias)``; each input channel is convolved with ``depth_multiplier`` filters of its own.

    The kernel is stored as ``(kernel_h, kernel_w, in_channels, depth_multiplier)`` (Keras's layout) whatever the
    ``data_format``; output channel ``c * depth_multiplier + m`` comes from input channel ``c`` and filter
    ``kernel[:, :, c, m]``. The weights are ``kernel`` and ``bias``, in that order, as in Keras 3.

    Parameters
    ----------
    kernel_size : int or (int, int)
    strides : int or (int, int)
    padding : {"valid", "same"}
        "same" pads as Keras/TensorFlow do (output size ``ceil(n / stride)``, extra row/column at the end).
    depth_multiplier : int
        Output channels per input channel.
    data_format : {"channels_last", "channels_first"}, optional
        ``(N, H, W, C)`` (default) or ``(N, C, H, W)`` inputs.
    dilation_rate : int or (int, int)
    activation : str or Activation, optional
    use_bias : bool
    depthwise_initializer, bias_initializer : str or Initializer
        ``"glorot_uniform"`` and ``"zeros"`` by default, as in Keras.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import DepthwiseConv2D
    >>> conv = DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")
    >>> y = conv(np.zeros((2, 16, 16, 3), dtype=np.float32))
    >>> y.shape, conv.get_weights()[0].shape, conv.count_params()
    ((2, 16, 16, 6), (3, 3, 3, 2), 60)
    """

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self._depthwise_arguments(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = initializers.get(depthwise_initializer, "depthwise_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.kernel = self.bias = None

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        self.kernel = self.add_weight("kernel", self.kernel_size + (channels, self.depth_multiplier),
                                      self.depthwise_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (channels * self.depth_multiplier,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1] if self._channels_last else input_shape[1]
        return self._output_shape(input_shape, None if channels is None else channels * self.depth_multiplier)

    def call(self, x, training=False):
        bias = self.bias.value if self.use_bias else None
        weight = self._functional_depthwise(self.kernel.value)
        logits = F.depthwise_conv2d(x, weight, bias, **self._depthwise_options())
        self._cache = (x, weight) if self._keep_state(training) else None
        return self._activate(logits, training, owned=True)

    def backward_from_logits(self, grad_logits, need_input_grad=True):
        x, weight = self._cached()
        grad_logits = np.ascontiguousarray(grad_logits, dtype=self.dtype)
        options = self._depthwise_options()
        grads = []
        if self.trainable:
            grad_kernel = F.depthwise_conv2d_grad_weight(grad_logits, x, weight.shape, **options)
            grads.append(self._stored_depthwise(grad_kernel, self.kernel.shape))
            if self.use_bias:
                grads.append(F.conv2d_grad_bias(grad_logits, data_format=self.data_format))
        grad_input = (F.depthwise_conv2d_grad_input(grad_logits, weight, x.shape, **options)
                      if need_input_grad else None)
        return grad_input, grads

    def get_config(self):
        config = super().get_config()
        config.update(self._depthwise_config())
        config.update(activation=activations.serialize(self.activation), use_bias=self.use_bias,
                      depthwise_initializer=initializers.serialize(self.depthwise_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config


class SeparableConv2D(_DepthwiseArguments, ActivationMixin, Layer):
    """Depthwise-separable 2-D convolution layer, Keras's ``SeparableConv2D``: a depthwise convolution (no bias),
    then a 1x1 convolution to ``filters`` channels, then ``bias`` and ``activation``.

    The weights are ``depthwise_kernel`` ``(kernel_h, kernel_w, in_channels, depth_multiplier)``,
    ``pointwise_kernel`` ``(1, 1, in_channels * depth_multiplier, filters)`` and ``bias`` ``(filters,)``, in that
    order and in these layouts whatever the ``data_format``, as in Keras 3.

    Parameters
    ----------
    filters : int
        Output channels.
    kernel_size : int or (int, int)
        Of the depthwise step.
    strides, padding, data_format, dilation_rate, depth_multiplier
        Of the depthwise step, as in :class:`DepthwiseConv2D`.
    activation : str or Activation, optional
    use_bias : bool
    depthwise_initializer, pointwise_initializer, bias_initializer : str or Initializer
        ``"glorot_uniform"``, ``"glorot_uniform"`` and ``"zeros"`` by default, as in Keras.
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import SeparableConv2D
    >>> conv = SeparableConv2D(8, 3, strides=2, padding="same", activation="relu")
    >>> y = conv(np.zeros((2, 16, 16, 3), dtype=np.float32))
    >>> y.shape, [w.shape for w in conv.get_weights()], conv.count_params()
    ((2, 8, 8, 8), [(3, 3, 3, 1), (1, 1, 3, 8), (8,)], 59)
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = args.integer(filters, "filters", minimum=1)
        self._depthwise_arguments(kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.depthwise_initializer = initializers.get(depthwise_initializer, "depthwise_initializer")
        self.pointwise_initializer = initializers.get(pointwise_initializer, "pointwise_initializer")
        self.bias_initializer = initializers.get(bias_initializer, "bias_initializer")
        self.depthwise_kernel = self.pointwise_kernel = self.bias = None

    def build(self, input_shape):
        channels = self._input_channels(input_shape)
        self.depthwise_kernel = self.add_weight("depthwise_kernel",
                                                self.kernel_size + (channels, self.depth_multiplier),
                                                self.depthwise_initializer)
        self.pointwise_kernel = self.add_weight("pointwise_kernel",
                                                (1, 1, channels * self.depth_multiplier, self.filters),
                                                self.pointwise_initializer)
        if self.use_bias:
            self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape, self.filters)

    def _functional_pointwise(self):
        kernel = self.pointwise_kernel.value
        return kernel if self._channels_last else _layout.hwio_to_oihw(kernel)

    def call(self, x, training=False):
        bias = self.bias.value if self.use_bias else None
        depthwise = self._functional_depthwise(self.depthwise_kernel.value)
        pointwise = self._functional_pointwise()
        middle = F.depthwise_conv2d(x, depthwise, None, **self._depthwise_options())
        logits = F.conv2d(middle, pointwise, bias, data_format=self.data_format)
        self._cache = (x, middle, depthwise, pointwise) if self._keep_state(training) else None
        return self._activate(logits, training, owned=True)

    def backward_from_logits(self, grad_logits, need_input_grad=True):
        x, middle, depthwise, pointwise = self._cached()
        grad_logits = np.ascontiguousarray(grad_logits, dtype=self.dtype)
        options = self._depthwise_options()
        grads = []
        grad_middle = None
        if self.trainable or need_input_grad:
            grad_middle = F.conv2d_grad_input(grad_logits, pointwise, middle.shape, data_format=self.data_format)
        if self.trainable:
            grad_depthwise = F.depthwise_conv2d_grad_weight(grad_middle, x, depthwise.shape, **options)
            grads.append(self._stored_depthwise(grad_depthwise, self.depthwise_kernel.shape))
            grad_pointwise = F.conv2d_grad_weight(grad_logits, middle, pointwise.shape, data_format=self.data_format)
            grads.append(grad_pointwise if self._channels_last else _layout.oihw_to_hwio(grad_pointwise))
            if self.use_bias:
                grads.append(F.conv2d_grad_bias(grad_logits, data_format=self.data_format))
        grad_input = (F.depthwise_conv2d_grad_input(grad_middle, depthwise, x.shape, **options)
                      if need_input_grad else None)
        return grad_input, grads

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters)
        config.update(self._depthwise_config())
        config.update(activation=activations.serialize(self.activation), use_bias=self.use_bias,
                      depthwise_initializer=initializers.serialize(self.depthwise_initializer),
                      pointwise_initializer=initializers.serialize(self.pointwise_initializer),
                      bias_initializer=initializers.serialize(self.bias_initializer))
        return config

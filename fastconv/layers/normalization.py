"""Normalisation layers."""
import fastconv.functional_norm as FN
from fastconv import initializers
from fastconv.layers import _arguments as args
from fastconv.layers.base import Layer, format_shape

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    """Batch normalisation, Keras 3's ``BatchNormalization``.

    In training (``layer(x, training=True)``) each feature is normalised with the batch's own mean and (biased)
    variance, and the moving statistics are updated in place, as in Keras::

        moving_mean = moving_mean * momentum + batch_mean * (1 - momentum)
        moving_variance = moving_variance * momentum + batch_variance * (1 - momentum)

    At inference the moving statistics are used. Frozen (``layer.trainable = False``) the layer always runs in
    inference mode, even with ``training=True``, and neither updates its statistics nor gets gradients (Keras 3's
    behaviour, which is what fine-tuning wants); its backward pass is then the inference-mode one.

    Parameters
    ----------
    axis : int
        The feature axis, normalised per entry: ``-1`` (default) for channels_last images and Dense outputs,
        ``1`` for channels_first images. Must not be the batch axis.
    momentum : float
        In [0, 1]: how much of the moving statistics each training batch keeps.
    epsilon : float
        Added to the variance (non-negative).
    center, scale : bool
        Learn an offset ``beta`` / a scale ``gamma``.
    beta_initializer, gamma_initializer, moving_mean_initializer, moving_variance_initializer : str or Initializer
    name, trainable, dtype, input_shape
        See :class:`fastconv.layers.Layer`.

    Weights are created in Keras's order: ``gamma``, ``beta`` (trainable), ``moving_mean``, ``moving_variance``
    (non-trainable), each of shape ``(input_shape[axis],)``. The numerics are in :mod:`fastconv.functional_norm`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.layers import BatchNormalization
    >>> bn = BatchNormalization(momentum=0.5, epsilon=0.0)
    >>> bn(np.array([[1.0], [3.0]], dtype=np.float32), training=True)
    array([[-1.],
           [ 1.]], dtype=float32)
    >>> bn.moving_mean.value, bn.moving_variance.value
    (array([1.], dtype=float32), array([1.], dtype=float32))
    """

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", moving_mean_initializer="zeros", moving_variance_initializer="ones",
                 **kwargs):
        super().__init__(**kwargs)
        self.axis = args.integer(axis, "axis")
        self.momentum = args.real(momentum, "momentum", 0.0, 1.0)
        self.epsilon = args.real(epsilon, "epsilon", minimum=0.0)
        self.center = args.boolean(center, "center")
        self.scale = args.boolean(scale, "scale")
        self.beta_initializer = initializers.get(beta_initializer, "beta_initializer")
        self.gamma_initializer = initializers.get(gamma_initializer, "gamma_initializer")
        self.moving_mean_initializer = initializers.get(moving_mean_initializer, "moving_mean_initializer")
        self.moving_variance_initializer = initializers.get(moving_variance_initializer,
                                                            "moving_variance_initializer")
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self._axis = None

    def build(self, input_shape):
        ndim = len(input_shape)
        if ndim < 2:
            raise ValueError(f"input of layer {self.name!r} must have at least 2 axes (batch, ...); received input "
                             f"with shape {format_shape(input_shape)}")
        if not -ndim <= self.axis < ndim or self.axis % ndim == 0:
            raise ValueError(f"axis of layer {self.name!r} must name a non-batch axis of its {ndim}-D input (1 to "
                             f"{ndim - 1}, or -{ndim - 1} to -1); received axis={self.axis} for input with shape "
                             f"{format_shape(input_shape)}")
        axis = self.axis % ndim
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(f"input of layer {self.name!r} must have a known size along axis={self.axis}; received "
                             f"input with shape {format_shape(input_shape)}")
        self._axis = axis
        shape = (channels,)
        if self.scale:
            self.gamma = self.add_weight("gamma", shape, self.gamma_initializer)
        if self.center:
            self.beta = self.add_weight("beta", shape, self.beta_initializer)
        self.moving_mean = self.add_weight("moving_mean", shape, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", shape, self.moving_variance_initializer,
                                               trainable=False)
        super().build(input_shape)

    def _parameters(self):
        return (None if self.gamma is None else self.gamma.value), (None if self.beta is None else self.beta.value)

    def call(self, x, training=False):
        gamma, beta = self._parameters()
        batch_statistics = bool(training) and self.trainable
        if batch_statistics:
            mean, variance = FN.batch_norm_moments(x, axis=self._axis)
            FN.update_moving_statistics(self.moving_mean.value, self.moving_variance.value, mean, variance,
                                        self.momentum)
        else:
            mean, variance = self.moving_mean.numpy(), self.moving_variance.numpy()
        # the backward pass recomputes the normalised input from these: no copy of x is kept
        self._cache = (x, mean, variance, batch_statistics) if self._keep_state(training) else None
        return FN.batch_norm_forward(x, mean, variance, gamma, beta, axis=self._axis, epsilon=self.epsilon)

    def backward(self, grad_output, need_input_grad=True):
        x, mean, variance, batch_statistics = self._cached()
        gamma, _ = self._parameters()
        need_param_grads = bool(self.trainable_weights)
        grad_x, grad_gamma, grad_beta = FN.batch_norm_backward(
            grad_output, x, mean, variance, gamma, axis=self._axis, epsilon=self.epsilon,
            batch_statistics=batch_statistics, need_input_grad=bool(need_input_grad),
            need_param_grads=need_param_grads)
        grads = []
        if need_param_grads:
            if self.scale:
                grads.append(grad_gamma)
            if self.center:
                grads.append(grad_beta)
        return grad_x, grads

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                      scale=self.scale, beta_initializer=initializers.serialize(self.beta_initializer),
                      gamma_initializer=initializers.serialize(self.gamma_initializer),
                      moving_mean_initializer=initializers.serialize(self.moving_mean_initializer),
                      moving_variance_initializer=initializers.serialize(self.moving_variance_initializer))
        return config


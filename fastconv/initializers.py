"""Weight initializers, with Keras's names, formulas and seeding rules.

An initializer is called with a shape and a dtype and returns a new array. Fans follow Keras's
``compute_fans``: for a kernel of shape ``(..., fan_in_per_tap, fan_out_per_tap)`` the leading axes form the
receptive field, so a Conv2D kernel ``(kh, kw, in, out)`` has ``fan_in = kh * kw * in`` and
``fan_out = kh * kw * out``.

As in Keras 3, an initializer built with an integer ``seed`` returns the same values every time it is called;
without one it draws from fastconv's global generator (see :func:`fastconv.utils.set_random_seed`).

Examples
--------
>>> from fastconv import initializers
>>> w = initializers.get("glorot_uniform")((3, 3, 1, 32))
>>> w.dtype, w.shape, bool(abs(w).max() <= (6 / (9 + 288)) ** 0.5)
(dtype('float32'), (3, 3, 1, 32), True)
>>> initializers.get("zeros")((2,))
array([0., 0.], dtype=float32)
"""
import math

import numpy as np

from fastconv import utils

__all__ = [
    "Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform", "VarianceScaling",
    "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform", "LecunNormal", "get", "serialize",
]


def compute_fans(shape):
    """``(fan_in, fan_out)`` of a weight shape, as Keras computes them."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class Initializer:
    """Base class: ``initializer(shape, dtype="float32") -> ndarray``."""

    def __call__(self, shape, dtype="float32"):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    def __call__(self, shape, dtype="float32"):
        return np.zeros(shape, dtype=dtype)


class Ones(Initializer):
    def __call__(self, shape, dtype="float32"):
        return np.ones(shape, dtype=dtype)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype="float32"):
        return np.full(shape, self.value, dtype=dtype)

    def get_config(self):
        return {"value": self.value}


class _Random(Initializer):
    def __init__(self, seed=None):
        self.seed = utils.check_seed(seed)

    def _generator(self):
        # A seeded initializer restarts from its seed on every call (Keras 3's rule).
        return utils.global_generator() if self.seed is None else np.random.default_rng(self.seed)

    def get_config(self):
        return {"seed": self.seed}


def _truncated_normal(rng, shape, stddev):
    """Normal(0, stddev) redrawn until within two standard deviations (as Keras's truncated_normal)."""
    values = rng.standard_normal(shape)
    bad = np.abs(values) > 2
    while bad.any():
        values[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(values) > 2
    return values * stddev


class RandomNormal(_Random):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype="float32"):
        return self._generator().normal(self.mean, self.stddev, shape).astype(dtype)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(_Random):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, dtype="float32"):
        return self._generator().uniform(self.minval, self.maxval, shape).astype(dtype)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


class VarianceScaling(_Random):
    """Keras's VarianceScaling: variance ``scale / n`` with ``n`` the fan picked by ``mode``.

    Parameters
    ----------
    scale : float
        Positive.
    mode : {"fan_in", "fan_out", "fan_avg"}
    distribution : {"truncated_normal", "untruncated_normal", "uniform"}
    seed : int, optional
    """

    MODES = ("fan_in", "fan_out", "fan_avg")
    DISTRIBUTIONS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"scale must be positive; received scale={scale!r}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}; received mode={mode!r}")
        if distribution not in self.DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {self.DISTRIBUTIONS}; "
                             f"received distribution={distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape, dtype="float32"):
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, n)
        rng = self._generator()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            values = rng.uniform(-limit, limit, shape)
        elif self.distribution == "truncated_normal":
            # 0.879... is the standard deviation of a standard normal truncated to (-2, 2).
            values = _truncated_normal(rng, shape, math.sqrt(variance) / 0.87962566103423978)
        else:
            values = rng.normal(0.0, math.sqrt(variance), shape)
        return values.astype(dtype)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


class _Preset(VarianceScaling):
    _preset = None

    def __init__(self, seed=None):
        scale, mode, distribution = self._preset
        super().__init__(scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotUniform(_Preset):
    """Uniform in ``[-limit, limit]``, ``limit = sqrt(6 / (fan_in + fan_out))`` (Keras's default kernel init)."""
    _preset = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    _preset = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    _preset = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    _preset = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    _preset = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    _preset = (1.0, "fan_in", "truncated_normal")


_CLASSES = {c.__name__: c for c in (Zeros, Ones, Constant, RandomNormal, RandomUniform, VarianceScaling,
                                    GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform, LecunNormal)}
_NAMES = {"zeros": Zeros, "ones": Ones, "constant": Constant, "random_normal": RandomNormal,
          "random_uniform": RandomUniform, "variance_scaling": VarianceScaling, "glorot_uniform": GlorotUniform,
          "glorot_normal": GlorotNormal, "he_uniform": HeUniform, "he_normal": HeNormal,
          "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal}


def get(identifier, name="initializer"):
    """An :class:`Initializer` from a name (``"glorot_uniform"``), a ``{"class_name", "config"}`` dict or an
    initializer object. ``name`` is the argument named in errors (``kernel_initializer`` ...)."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.lower()) or _CLASSES.get(identifier)
        if cls is None:
            names = ", ".join(repr(n) for n in _NAMES)
            raise ValueError(f"{name} must be one of {names} or an Initializer; received {name}={identifier!r}")
        return cls()
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return _CLASSES[identifier["class_name"]].from_config(identifier.get("config", {}))
    raise TypeError(f"{name} must be a name or a fastconv.initializers.Initializer; received {name}={identifier!r}")


def serialize(initializer):
    """``{"class_name": ..., "config": ...}``: JSON-ready, read back by :func:`get`."""
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}

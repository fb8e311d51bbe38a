"""Optimizers with Keras's argument names, defaults and update rules.

Each optimizer keeps its per-weight state ("slots") keyed by the weight's path (``"conv2d/kernel"``), updates the
weights in place, in their own dtype (float32 for float32 weights), and counts its steps in ``iterations``.

The update rules are Keras 3's, step for step, with ``g`` the gradient and ``lr`` the learning rate:

SGD
    ``m = momentum * m - lr * g``; ``w += momentum * m - lr * g`` with ``nesterov=True``, else ``w += m``
    (``w -= lr * g`` when ``momentum == 0``). Identical to ``torch.optim.SGD`` (dampening 0) for a constant
    learning rate: Keras's ``m`` is ``-lr`` times PyTorch's buffer.
RMSprop
    ``v = rho * v + (1 - rho) * g**2``; ``w -= lr * g / sqrt(v + epsilon)`` (with ``centered=True`` the
    denominator is ``sqrt(v - a**2 + epsilon)``, ``a`` the running mean of ``g``; with ``momentum > 0`` the step
    goes through ``b = momentum * b + step``).
    **Epsilon placement differs from PyTorch**, which divides by ``sqrt(v) + eps``: Keras (and fastconv) add
    ``epsilon`` inside the square root. PyTorch's ``alpha`` is Keras's ``rho``.
Adam
    ``m += (1 - beta_1) * (g - m)``; ``v += (1 - beta_2) * (g**2 - v)``;
    ``w -= alpha * m / (sqrt(v) + epsilon)`` with ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``.
    **Epsilon placement differs from PyTorch**, which adds ``eps`` to the bias-corrected ``sqrt(v / (1 - beta_2**t))``:
    Keras's ``epsilon`` is the paper's "epsilon hat", PyTorch's ``eps`` equals Keras's
    ``epsilon / sqrt(1 - beta_2**t)``. With ``epsilon = 0`` the two coincide (the tests check both the match at
    zero and Keras's placement otherwise).

Examples
--------
>>> import numpy as np
>>> from fastconv import optimizers
>>> from fastconv.layers import Variable
>>> w = Variable(np.array([1.0, 2.0], dtype=np.float32), "kernel", "dense/kernel")
>>> opt = optimizers.get("sgd")
>>> opt.apply([np.array([1.0, -1.0], dtype=np.float32)], [w])
>>> w.value, opt.iterations
(array([0.99, 2.01], dtype=float32), 1)
"""
import math

import numpy as np

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "get", "serialize", "deserialize"]


def _number(value, name, low=None, high=None, low_open=False, high_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; received {name}={value!r}")
    value = float(value)
    bad = (not math.isfinite(value)
           or (low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        where = f"in {lo}, {hi}" if low is not None and high is not None else f"{'>' if low_open else '>='} {low:g}"
        raise ValueError(f"{name} must be {where}; received {name}={value!r}")
    return value


class Optimizer:
    """Base class.

    Subclasses declare their slot names and implement :meth:`_update` (one weight, in place).

    Parameters
    ----------
    learning_rate : float
        Positive.
    name : str, optional
    """

    slot_names = ()
    default_name = None

    def __init__(self, learning_rate=0.001, name=None):
        self.learning_rate = _number(learning_rate, "learning_rate", low=0, low_open=True)
        self.name = name or self.default_name
        self.iterations = 0
        self._slots = {slot: {} for slot in self.slot_names}

    def apply(self, grads, variables):
        """One step: update each variable (a :class:`fastconv.layers.Variable`) in place from its gradient."""
        grads, variables = list(grads), list(variables)
        if len(grads) != len(variables):
            raise ValueError(f"grads and variables must pair up; received {len(grads)} grads for "
                             f"{len(variables)} variables")
        step = self.iterations + 1
        for grad, variable in zip(grads, variables):
            grad = np.asarray(grad, dtype=variable.dtype)
            if grad.shape != variable.shape:
                raise ValueError(f"the gradient of {variable.path!r} must have shape {variable.shape}; received "
                                 f"a gradient of shape {grad.shape}")
            slots = {name: self._slot(name, variable) for name in self.slot_names}
            self._update(variable.value, grad, slots, step)
        self.iterations = step

    def apply_gradients(self, grads_and_vars):
        """Keras's ``apply_gradients(zip(grads, variables))``."""
        pairs = list(grads_and_vars)
        self.apply([g for g, _ in pairs], [v for _, v in pairs])

    def _slot(self, name, variable):
        table = self._slots[name]
        value = table.get(variable.path)
        if value is None or value.shape != variable.shape or value.dtype != variable.dtype:
            value = table[variable.path] = np.zeros(variable.shape, dtype=variable.dtype)
        return value

    def _update(self, w, g, slots, step):
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------------------------
    def get_state(self):
        """``{"iterations": int, "slots": {slot_name: {weight_path: array}}}`` (copies)."""
        return {"iterations": self.iterations,
                "slots": {name: {path: v.copy() for path, v in table.items()} for name, table in self._slots.items()}}

    def set_state(self, state):
        """Restore what :meth:`get_state` returned."""
        self.iterations = int(state["iterations"])
        unknown = set(state["slots"]) - set(self.slot_names)
        if unknown:
            raise ValueError(f"optimizer {self.name!r} has slots {self.slot_names}; received state for "
                             f"{sorted(unknown)}")
        self._slots = {name: {path: np.array(v) for path, v in state["slots"].get(name, {}).items()}
                       for name in self.slot_names}

    def get_config(self):
        return {"name": self.name, "learning_rate": self.learning_rate}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, Keras's ``SGD``.

    Parameters
    ----------
    learning_rate : float
        0.01 by default.
    momentum : float
        In [0, 1].
    nesterov : bool
    name : str, optional
    """

    default_name = "SGD"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, name=None):
        self.momentum = _number(momentum, "momentum", 0, 1)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool; received nesterov={nesterov!r}")
        self.nesterov = bool(nesterov)
        super().__init__(learning_rate, name)

    @property
    def slot_names(self):
        return ("momentum",) if self.momentum else ()

    def _update(self, w, g, slots, step):
        t = w.dtype.type
        lr_g = g * t(self.learning_rate)
        if not self.momentum:
            w -= lr_g
            return
        m = slots["momentum"]
        m *= t(self.momentum)
        m -= lr_g
        if self.nesterov:
            w += m * t(self.momentum) - lr_g
        else:
            w += m

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """RMSprop, Keras's ``RMSprop`` (epsilon inside the square root; see the module notes).

    Parameters
    ----------
    learning_rate : float
        0.001 by default.
    rho : float
        Decay of the running mean of squared gradients, in [0, 1).
    momentum : float
        In [0, 1].
    epsilon : float
        Non-negative, 1e-7 by default.
    centered : bool
    name : str, optional
    """

    default_name = "RMSprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, name=None):
        self.rho = _number(rho, "rho", 0, 1, high_open=True)
        self.momentum = _number(momentum, "momentum", 0, 1)
        self.epsilon = _number(epsilon, "epsilon", low=0)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be a bool; received centered={centered!r}")
        self.centered = bool(centered)
        super().__init__(learning_rate, name)

    @property
    def slot_names(self):
        return ("velocity",) + (("average_gradient",) if self.centered else ()) + \
            (("momentum",) if self.momentum else ())

    def _update(self, w, g, slots, step):
        t = w.dtype.type
        rho = t(self.rho)
        v = slots["velocity"]
        v *= rho
        v += (t(1) - rho) * (g * g)
        if self.centered:
            a = slots["average_gradient"]
            a *= rho
            a += (t(1) - rho) * g
            denominator = v - a * a + t(self.epsilon)
        else:
            denominator = v + t(self.epsilon)
        increment = t(self.learning_rate) * g / np.sqrt(denominator)
        if self.momentum:
            b = slots["momentum"]
            b *= t(self.momentum)
            b += increment
            w -= b
        else:
            w -= increment

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                "centered": self.centered}


class Adam(Optimizer):
    """Adam, Keras's ``Adam`` (epsilon is the paper's "epsilon hat"; see the module notes).

    Parameters
    ----------
    learning_rate : float
        0.001 by default.
    beta_1, beta_2 : float
        In [0, 1).
    epsilon : float
        Non-negative, 1e-7 by default.
    amsgrad : bool
    name : str, optional
    """

    default_name = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, name=None):
        self.beta_1 = _number(beta_1, "beta_1", 0, 1, high_open=True)
        self.beta_2 = _number(beta_2, "beta_2", 0, 1, high_open=True)
        self.epsilon = _number(epsilon, "epsilon", low=0)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise TypeError(f"amsgrad must be a bool; received amsgrad={amsgrad!r}")
        self.amsgrad = bool(amsgrad)
        super().__init__(learning_rate, name)

    @property
    def slot_names(self):
        return ("momentum", "velocity") + (("velocity_hat",) if self.amsgrad else ())

    def _update(self, w, g, slots, step):
        t = w.dtype.type
        beta_1, beta_2 = t(self.beta_1), t(self.beta_2)
        beta_1_power, beta_2_power = beta_1 ** t(step), beta_2 ** t(step)
        alpha = t(self.learning_rate) * np.sqrt(t(1) - beta_2_power) / (t(1) - beta_1_power)
        m, v = slots["momentum"], slots["velocity"]
        m += (g - m) * (t(1) - beta_1)
        v += (g * g - v) * (t(1) - beta_2)
        if self.amsgrad:
            v_hat = slots["velocity_hat"]
            np.maximum(v_hat, v, out=v_hat)
            v = v_hat
        w -= (m * alpha) / (np.sqrt(v) + t(self.epsilon))

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "amsgrad": self.amsgrad}


_CLASSES = {"SGD": SGD, "RMSprop": RMSprop, "Adam": Adam}
_NAMES = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}


def get(identifier):
    """A new optimizer (with Keras's defaults) from a name, or an Optimizer object as is.

    Raises
    ------
    ValueError
        For an unknown name.
    TypeError
        For anything else.

    Examples
    --------
    >>> from fastconv import optimizers
    >>> optimizers.get("rmsprop")
    RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-07, centered=False)
    >>> optimizers.get("adamw")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of 'sgd', 'rmsprop', 'adam' or ...; received optimizer='adamw'
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.lower())
        if cls is None:
            names = ", ".join(repr(n) for n in _NAMES)
            raise ValueError(f"optimizer must be one of {names} or a fastconv.optimizers.Optimizer; "
                             f"received optimizer={identifier!r}")
        return cls()
    raise TypeError(f"optimizer must be a name or a fastconv.optimizers.Optimizer; received optimizer={identifier!r}")


def serialize(optimizer):
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def deserialize(config):
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES:
        raise ValueError(f"optimizer class_name must be one of {', '.join(_CLASSES)}; received {config!r}")
    return _CLASSES[config["class_name"]].from_config(dict(config.get("config", {})))

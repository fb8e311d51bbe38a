"""``Sequential``: a stack of layers that can be compiled, trained, evaluated, saved and loaded, as in Keras."""
import math
import warnings

import numpy as np

from fastconv import callbacks as callbacks_module
from fastconv import losses as losses_module
from fastconv import metrics as metrics_module
from fastconv import optimizers as optimizers_module
from fastconv import utils
from fastconv.layers import deserialize as deserialize_layer
from fastconv.layers import serialize as serialize_layer
from fastconv.layers.base import ActivationMixin, InputLayer, Layer, format_shape
from fastconv.layers.regularization import Dropout
from fastconv.layers.symbolic import SymbolicTensor
from fastconv.models import data as data_module
from fastconv.models import saving
from fastconv.models.summary import summary_lines

__all__ = ["Sequential"]


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int; received {name}={value!r}")
    return int(value)


def _verbosity(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f'verbose must be 0, 1, 2 or "auto"; received verbose={verbose!r}')
    return verbose


def _as_array(value, name):
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array; received {name} of type {type(value).__name__}") from exc
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name} must hold real numbers; received {name} with dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"{name} must have a batch axis; received a scalar {name}")
    return array


class Sequential(Layer):
    """A linear stack of layers, Keras's ``Sequential``.

    Parameters
    ----------
    layers : list of Layer, optional
        Usually starting with ``fastconv.layers.Input(shape)``; the model is then built at once.
    name : str, optional
    trainable : bool

    Examples
    --------
    >>> import numpy as np
    >>> import fastconv
    >>> from fastconv.layers import Input, Dense
    >>> model = fastconv.Sequential([Input((4,)), Dense(8, activation="relu"), Dense(1, activation="sigmoid")])
    >>> model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((64, 4)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.float32)
    >>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=0)
    >>> sorted(history.history), len(history.history["loss"])
    (['accuracy', 'loss'], 2)
    >>> model.predict(x[:3], verbose=0).shape
    (3, 1)
    """

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name, trainable=trainable)
        self._input = None
        self._layers = []
        self.optimizer = None
        self.loss = None
        self._metric_ids = []
        self._metrics = None
        self.compiled = False
        self._fused = False
        self.stop_training = False
        self.history = None
        for layer in layers or []:
            self.add(layer)

    # --- structure -----------------------------------------------------------------------------------------
    @property
    def layers(self):
        """The layers, without the input placeholder."""
        return list(self._layers)

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for layer in getattr(self, "_layers", []):
            layer.trainable = self._trainable

    def add(self, layer):
        """Append a layer (an ``Input`` only as the first one); it is built at once if the input shape is known."""
        if isinstance(layer, SymbolicTensor) and isinstance(layer.layer, InputLayer):
            layer = layer.layer
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be a fastconv.layers.Layer; received layer={layer!r}")
        if isinstance(layer, InputLayer):
            if self._layers or self._input is not None:
                raise ValueError(f"an Input can only be the first entry of a Sequential model; received "
                                 f"{layer.name!r} after {len(self._layers)} layers")
            self._input = layer
            return
        if isinstance(layer, Sequential):
            raise TypeError("nesting a Sequential model inside another is not supported; add its layers instead")
        names = {existing.name for existing in self._layers}
        if layer.name in names:
            raise ValueError(f"layer names must be unique within a model; received a second layer named "
                             f"{layer.name!r}")
        if not self._layers and self._input is None and layer._declared_input_shape is not None:
            self._input = InputLayer(shape=layer._declared_input_shape)
        self._layers.append(layer)
        if self._input is not None:
            self._build_layer(layer, self._layers[-2].output_shape if len(self._layers) > 1
                              else self._input.output_shape)
            self._refresh_built()

    def pop(self):
        """Remove and return the last layer."""
        if not self._layers:
            raise IndexError(f"model {self.name!r} has no layers to pop")
        layer = self._layers.pop()
        self._refresh_built()
        return layer

    def get_layer(self, name=None, index=None):
        """A layer by name or by position (``get_layer("dense")``, ``get_layer(0)``, ``get_layer(index=-1)``)."""
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and index is None:
            name, index = None, name
        if index is not None:
            if name is not None:
                raise ValueError(f"give a name or an index, not both; received name={name!r} and index={index!r}")
            try:
                return self._layers[index]
            except (IndexError, TypeError):
                raise ValueError(f"index must be a position among the {len(self._layers)} layers of "
                                 f"{self.name!r}; received index={index!r}") from None
        for layer in self._layers:
            if layer.name == name:
                return layer
        raise ValueError(f"name must be one of the layer names {[layer.name for layer in self._layers]}; "
                         f"received name={name!r}")

    def _build_layer(self, layer, input_shape):
        if not layer.built:
            layer.build(tuple(input_shape))
        else:
            layer.check_input_shape(input_shape, "input")

    def _refresh_built(self):
        if self._input is None or not self._layers or not all(layer.built for layer in self._layers):
            self.built = False
            self.input_shape = self.output_shape = None
            return
        self.built = True
        self.input_shape = self._input.output_shape
        self.output_shape = self._layers[-1].output_shape
        self._update_fusion()

    def build(self, input_shape=None):
        """Build every layer for inputs of ``input_shape`` (batch axis included, ``None`` allowed)."""
        if input_shape is None:
            if self._input is None:
                raise ValueError(f"model {self.name!r} has no Input: give input_shape; received input_shape=None")
        else:
            input_shape = tuple(input_shape)
            if self._input is None:
                self._input = InputLayer(shape=input_shape[1:], batch_size=input_shape[0])
            elif tuple(self._input.output_shape[1:]) != input_shape[1:]:
                raise ValueError(f"input_shape must be {format_shape(self._input.output_shape)} for model "
                                 f"{self.name!r}; received input_shape={input_shape}")
        if not self._layers:
            raise ValueError(f"model {self.name!r} has no layers to build")
        shape = self._input.output_shape
        for layer in self._layers:
            self._build_layer(layer, shape)
            shape = layer.output_shape
        self._refresh_built()

    # --- weights -------------------------------------------------------------------------------------------
    @property
    def weights(self):
        return [w for layer in self._layers for w in layer.weights]

    @property
    def trainable_weights(self):
        return [w for layer in self._layers for w in layer.trainable_weights]

    @property
    def non_trainable_weights(self):
        return [w for layer in self._layers for w in layer.non_trainable_weights]

    def get_weights(self):
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights):
        weights = list(weights)
        variables = self.weights
        if len(weights) != len(variables):
            raise ValueError(f"model {self.name!r} has {len(variables)} weights; received a list of {len(weights)} "
                             f"arrays")
        for variable, value in zip(variables, weights):
            variable.assign(value)

    def count_params(self):
        return int(sum(layer.count_params() for layer in self._layers))

    # --- inspection ----------------------------------------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None):
        """Print a table of the layers, their output shapes and parameter counts, as Keras does.

        Examples
        --------
        >>> import fastconv
        >>> from fastconv.layers import Input, Conv2D, Flatten, Dense
        >>> model = fastconv.Sequential([Input((8, 8, 1)), Conv2D(4, 3, name="conv"), Flatten(name="flatten"),
        ...                              Dense(2, name="dense")], name="tiny")
        >>> model.summary()
        Model: "tiny"
        _________________________________________________________________
         Layer (type)                Output Shape              Param #
        =================================================================
         conv (Conv2D)               (None, 6, 6, 4)           40
        _________________________________________________________________
         flatten (Flatten)           (None, 144)               0
        _________________________________________________________________
         dense (Dense)               (None, 2)                 290
        =================================================================
        Total params: 330 (1.29 KB)
        Trainable params: 330 (1.29 KB)
        Non-trainable params: 0 (0.00 B)
        _________________________________________________________________
        """
        if not self.built:
            raise ValueError(f"model {self.name!r} has not been built yet: start it with an Input(shape), or call "
                             f"build(input_shape) or fit() first")
        for line in summary_lines(self, line_length, positions):
            (print_fn or print)(line)

    # --- forward -------------------------------------------------------------------------------------------
    def _check_x(self, x, name="x"):
        expected = self.input_shape
        shape = x.shape
        if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
            raise ValueError(f"{name} must have shape {format_shape(expected)} to fit the input of model "
                             f"{self.name!r}; received {name} with shape {shape}")

    def _ensure_built(self, x_shape, rng=None):
        if self.built:
            return
        if not self._layers:
            raise ValueError(f"model {self.name!r} has no layers")
        with utils.seeded_global_generator(rng):
            self.build((None,) + tuple(x_shape[1:]))

    def _forward(self, x, training):
        for layer in self._layers:
            x = layer.call(layer._as_input(x), training=training)
        return x

    def call(self, x, training=False):
        return self._forward(x, training)

    def __call__(self, inputs, training=False):
        x = _as_array(inputs, "x")
        self._ensure_built(x.shape)
        self._check_x(x)
        return self._forward(x, bool(training))

    # --- compile -------------------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Configure training.

        Parameters
        ----------
        optimizer : str or Optimizer
            ``"rmsprop"`` (Keras's default), ``"adam"``, ``"sgd"`` or an object from :mod:`fastconv.optimizers`.
        loss : str or Loss
            ``"binary_crossentropy"``, ``"categorical_crossentropy"``, ``"sparse_categorical_crossentropy"``,
            ``"mse"`` or an object from :mod:`fastconv.losses`.
        metrics : list, optional
            ``["accuracy"]`` picks binary, categorical or sparse accuracy from the data, as Keras does.

        Notes
        -----
        When the last layer ends in ``sigmoid`` (with binary cross-entropy) or ``softmax`` (with categorical or
        sparse categorical cross-entropy) on the last axis, the loss is computed from that layer's logits (see
        :mod:`fastconv.losses`): the reported loss stays finite and exact however confident the model is.
        """
        if loss is None:
            raise ValueError("loss must be given (a name such as 'binary_crossentropy' or a fastconv.losses.Loss); "
                             "received loss=None")
        self.optimizer = optimizers_module.get(optimizer)
        self.loss = losses_module.get(loss)
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, metrics_module.Metric)):
            metrics = [metrics]
        if not isinstance(metrics, (list, tuple)):
            raise TypeError(f"metrics must be a list of names or Metric objects; received metrics={metrics!r}")
        self._metric_ids = [metrics_module.validate(m) for m in metrics]
        self._metrics = None
        self.compiled = True
        self._update_fusion()

    def get_compile_config(self):
        if not self.compiled:
            return None
        return {"optimizer": optimizers_module.serialize(self.optimizer), "loss": losses_module.serialize(self.loss),
                "metrics": [metrics_module.serialize(m) for m in self._metric_ids]}

    def _update_fusion(self):
        """Decide whether the loss takes the last layer's logits (see compile's notes)."""
        self._fused = False
        if not (self.compiled and self.built and self._layers):
            return
        last = self._layers[-1]
        for layer in self._layers:
            layer._keep_logits = False
        activation = getattr(last, "activation", None)
        if (isinstance(last, ActivationMixin) and not self.loss.from_logits
                and self.loss.fused_activation is not None and activation is not None
                and activation.name == self.loss.fused_activation
                and getattr(activation, "axis", -1) in (-1, len(self.output_shape) - 1)):
            self._fused = True
            last._keep_logits = True

    def _require_compiled(self, method):
        if not self.compiled:
            raise RuntimeError(f"model {self.name!r} must be compiled before {method}(): call "
                               f"model.compile(optimizer=..., loss=..., metrics=...) first")

    @property
    def metrics_names(self):
        return ["loss"] + [m.name if isinstance(m, metrics_module.Metric) else m for m in self._metric_ids]

    def _make_metrics(self, y, out):
        if self._metrics is None:
            self._metrics = [metrics_module.get(m, y_true=y, y_pred=out) for m in self._metric_ids]
        return self._metrics

    # --- one batch -----------------------------------------------------------------------------------------
    def _loss(self, y, out, need_grad):
        if self._fused:
            return self.loss.value_and_grad_from_logits(y, self._layers[-1].logits, need_grad)
        return self.loss.value_and_grad(y, out, need_grad)

    def _train_batch(self, x, y):
        x = self._prepare_x(x)
        out = self._forward(x, training=True)
        loss, grad = self._loss(y, out, need_grad=True)
        layers = self._layers
        first = next((i for i, layer in enumerate(layers) if layer.trainable_weights), None)
        grads, variables = [], []
        if first is not None:
            for i in range(len(layers) - 1, first - 1, -1):
                layer = layers[i]
                need_input_grad = i > first
                if i == len(layers) - 1 and self._fused:
                    grad, layer_grads = layer.backward_from_logits(grad, need_input_grad)
                else:
                    grad, layer_grads = layer.backward(grad, need_input_grad)
                grads.extend(layer_grads)
                variables.extend(layer.trainable_weights)
            self.optimizer.apply(grads, variables)
        for layer in layers:  # release what the backward pass needed
            layer._cache = None
            if hasattr(layer, "_activation_cache") and not getattr(layer, "_keep_logits", False):
                layer._activation_cache = None
        return loss, out

    def _test_batch(self, x, y):
        x = self._prepare_x(x)
        out = self._forward(x, training=False)
        loss, _ = self._loss(y, out, need_grad=False)
        return loss, out

    def _prepare_x(self, x):
        x = _as_array(x, "x")
        self._check_x(x)
        return x

    # --- data ----------------------------------------------------------------------------------------------
    def _array_data(self, x, y, name_x="x", name_y="y", need_y=True):
        x = _as_array(x, name_x)
        if y is None:
            if need_y:
                raise ValueError(f"{name_y} must be given when {name_x} is an array; received {name_y}=None")
        else:
            y = _as_array(y, name_y)
            if data_module.num_samples(x) != data_module.num_samples(y):
                raise ValueError(f"{name_x} and {name_y} must have the same number of samples; received {name_x} "
                                 f"with {data_module.num_samples(x)} samples and {name_y} with "
                                 f"{data_module.num_samples(y)}")
        return x, y

    def _check_targets(self, y, name):
        try:
            self.loss.validate_targets(y, self.output_shape)
        except ValueError as exc:
            raise ValueError(str(exc).replace("y must", f"{name} must").replace("received y ", f"received {name} ")) \
                from None

    # --- fit -----------------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, seed=None):
        """Train the model.

        Parameters
        ----------
        x : array or data generator
            Input samples, ``(N, ...)`` matching the model's input; or a generator of ``(x, y)`` batches (for
            example ``ImageDataGenerator().flow(x, y)``), in which case ``y``, ``batch_size``, ``shuffle`` and
            ``validation_split`` do not apply.
        y : array, optional
            Targets: shape of the output (``(N, 1)`` or ``(N,)`` for one unit), or integer labels ``(N,)`` with
            ``sparse_categorical_crossentropy``.
        batch_size : int
            32 by default.
        epochs : int
        verbose : {"auto", 0, 1, 2}
            0 silent, 1 a progress bar, 2 one line per epoch.
        callbacks : list of Callback, optional
        validation_split : float
            Fraction in [0, 1) of the arrays (the *last* samples, before shuffling, as in Keras) held out for
            validation.
        validation_data : (x_val, y_val) or data generator, optional
        shuffle : bool
            Reshuffle the training arrays every epoch.
        initial_epoch : int
        steps_per_epoch : int, optional
            Batches per epoch from a generator; required for an endless one without ``__len__``.
        validation_steps : int, optional
        validation_batch_size : int, optional
        validation_freq : int
            Validate every this many epochs.
        seed : int, optional
            Seeds the shuffling, the masks of unseeded Dropout layers and, if the model is built by this call, the
            initial weights: two runs with the same seed, weights and data give bit-identical models, whatever the
            thread count.

        Returns
        -------
        History
            ``history.history`` maps ``"loss"``, each metric and their ``"val_"`` versions to per-epoch values.

        Raises
        ------
        RuntimeError
            If the model has not been compiled.
        ValueError
            Data of the wrong shape for the model, ``x`` and ``y`` of different lengths, bad arguments.
        """
        self._require_compiled("fit")
        verbose = _verbosity(verbose)
        epochs = int(epochs)
        seed = utils.check_seed(seed)
        seeds = np.random.SeedSequence(seed if seed is not None else
                                       int(utils.global_generator().integers(0, 2**63))).spawn(3)
        shuffle_rng, dropout_seed, build_rng = (np.random.default_rng(s) for s in seeds)

        if data_module.is_generator(x):
            if y is not None:
                raise ValueError("y must not be given when x is a data generator (it yields (x, y) batches); "
                                 f"received y of type {type(y).__name__}")
            if validation_split:
                raise ValueError("validation_split is not available with a data generator; pass validation_data "
                                 f"instead; received validation_split={validation_split!r}")
            steps = None if steps_per_epoch is None else _positive_int(steps_per_epoch, "steps_per_epoch")
            train = data_module.GeneratorBatches(x, steps)
        else:
            batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
            x, y = self._array_data(x, y)
            if not 0 <= validation_split < 1:
                raise ValueError(f"validation_split must be in [0, 1); received validation_split={validation_split!r}")
            if validation_split and validation_data is None:
                n = data_module.num_samples(x)
                split_at = int(math.ceil(n * (1.0 - validation_split)))
                if split_at == 0 or split_at == n:
                    raise ValueError(f"validation_split={validation_split!r} leaves an empty training or "
                                     f"validation set for {n} samples")
                validation_data = (x[split_at:], y[split_at:])
                x, y = x[:split_at], y[:split_at]
            if data_module.num_samples(x) == 0:
                raise ValueError("x must hold at least one sample; received x with shape "
                                 f"{x.shape}")
            self._ensure_built(x.shape, build_rng if seed is not None else None)
            self._check_x(x)
            self.loss.validate_targets(y, self.output_shape)
            train = data_module.ArrayBatches(x, y, batch_size, shuffle=bool(shuffle), rng=shuffle_rng)
            if steps_per_epoch is not None:
                raise ValueError("steps_per_epoch only applies to data generators; received steps_per_epoch="
                                 f"{steps_per_epoch!r} with array x")

        validation = None
        if validation_data is not None:
            validation = self._validation_batches(validation_data, validation_batch_size or batch_size or 32,
                                                  validation_steps)

        if seed is not None:
            for i, layer in enumerate(self._layers):
                if isinstance(layer, Dropout) and layer.seed is None:
                    layer.set_generator(np.random.default_rng([dropout_seed.integers(0, 2**63), i]))

        history = callbacks_module.History()
        user = list(callbacks or [])
        cbs = callbacks_module.CallbackList(([callbacks_module.ProgbarLogger()] if verbose else []) + user + [history],
                                            model=self, epochs=epochs, steps=train.steps, verbose=verbose)
        self.stop_training = False
        self.history = history
        cbs.on_train_begin()
        loss_tracker = metrics_module.Mean(name="loss")
        epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            loss_tracker.reset_state()
            for m in self._metrics or []:
                m.reset_state()
            cbs.on_epoch_begin(epoch)
            seen = 0
            for step, (xb, yb) in enumerate(train.epoch()):
                if not self.built:
                    self._ensure_built(np.shape(xb), build_rng if seed is not None else None)
                cbs.on_train_batch_begin(step)
                loss, out = self._train_batch(xb, yb)
                loss_tracker.update_state(loss, sample_weight=len(out))
                logs = {"loss": loss_tracker.result()}
                for m in self._make_metrics(yb, out):
                    m.update_state(yb, out)
                    logs[m.name] = m.result()
                seen += 1
                cbs.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            if seen == 0:
                if train.exhausted:
                    warnings.warn("the data generator ran out of data; training stopped. Make sure it can produce "
                                  "steps_per_epoch * epochs batches (or is re-iterable)", RuntimeWarning,
                                  stacklevel=2)
                    break
                raise ValueError("x gave no batches for this epoch")
            epoch_logs = {"loss": float(loss_tracker.result())}
            epoch_logs.update({m.name: float(m.result()) for m in self._metrics or []})
            if validation is not None and (epoch + 1 - initial_epoch) % validation_freq == 0:
                val_logs = self._evaluate_batches(validation, None)
                epoch_logs.update({"val_" + k: v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if self.stop_training:
                break
            if train.exhausted:
                warnings.warn("the data generator ran out of data; training stopped. Make sure it can produce "
                              "steps_per_epoch * epochs batches (or is re-iterable)", RuntimeWarning, stacklevel=2)
                break
        cbs.on_train_end(epoch_logs)
        return history

    def _validation_batches(self, validation_data, batch_size, steps):
        if data_module.is_generator(validation_data):
            return data_module.GeneratorBatches(validation_data, steps)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(f"validation_data must be a pair (x_val, y_val) or a data generator; received "
                             f"validation_data of type {type(validation_data).__name__}")
        if len(validation_data) == 3:
            raise ValueError("sample weights are not supported: validation_data must be (x_val, y_val); received a "
                             "triple")
        xv, yv = self._array_data(*validation_data, name_x="x_val", name_y="y_val")
        self._check_x(xv, "x_val")
        self._check_targets(yv, "y_val")
        return data_module.ArrayBatches(xv, yv, batch_size)

    # --- evaluate / predict --------------------------------------------------------------------------------
    def _evaluate_batches(self, batches, callback_list):
        tracker = metrics_module.Mean(name="loss")
        metric_objects = None
        for step, (xb, yb) in enumerate(batches.epoch()):
            if not self.built:
                self._ensure_built(np.shape(xb))
            if callback_list is not None:
                callback_list.on_test_batch_begin(step)
            loss, out = self._test_batch(xb, yb)
            tracker.update_state(loss, sample_weight=len(out))
            if metric_objects is None:
                metric_objects = [metrics_module.get(m, y_true=yb, y_pred=out) if not isinstance(
                    m, metrics_module.Metric) else m for m in self._metric_ids]
                for m in metric_objects:
                    m.reset_state()
            for m in metric_objects:
                m.update_state(yb, out)
            if callback_list is not None:
                logs = {"loss": tracker.result(), **{m.name: m.result() for m in metric_objects}}
                callback_list.on_test_batch_end(step, logs)
        if metric_objects is None:
            raise ValueError("the data gave no batches to evaluate")
        logs = {"loss": float(tracker.result())}
        logs.update({m.name: float(m.result()) for m in metric_objects})
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", steps=None, callbacks=None,
                 return_dict=False):
        """Loss and metrics on data, in batches.

        Parameters
        ----------
        x, y : arrays, or x a data generator of (x, y) batches
        batch_size : int
            32 by default.
        verbose : {"auto", 0, 1, 2}
        steps : int, optional
            Batches to draw from a generator.
        callbacks : list of Callback, optional
        return_dict : bool

        Returns
        -------
        float, list or dict
            The loss alone when no metrics were compiled, else ``[loss, metric, ...]`` (or a dict by name).
        """
        self._require_compiled("evaluate")
        verbose = _verbosity(verbose)
        if data_module.is_generator(x):
            batches = data_module.GeneratorBatches(x, steps)
        else:
            batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
            x, y = self._array_data(x, y)
            self._ensure_built(x.shape)
            self._check_x(x)
            self.loss.validate_targets(y, self.output_shape)
            batches = data_module.ArrayBatches(x, y, batch_size)
        cbs = callbacks_module.CallbackList(([callbacks_module.ProgbarLogger()] if verbose else [])
                                            + list(callbacks or []), model=self, steps=batches.steps, verbose=verbose)
        cbs.on_test_begin()
        logs = self._evaluate_batches(batches, cbs)
        cbs.on_test_end(logs)
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Model outputs for ``x``, computed in batches (memory stays bounded by one batch of activations).

        Parameters
        ----------
        x : array or data generator
        batch_size : int
            32 by default.
        verbose : {"auto", 0, 1, 2}
        steps : int, optional
        callbacks : list of Callback, optional

        Returns
        -------
        ndarray
            float32 (for a float32 model), one row per sample.
        """
        verbose = _verbosity(verbose)
        if data_module.is_generator(x):
            batches = data_module.GeneratorBatches(x, steps, mode="predict")
        else:
            batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
            x = _as_array(x, "x")
            self._ensure_built(x.shape)
            self._check_x(x)
            batches = data_module.ArrayBatches(x, None, batch_size)
        cbs = callbacks_module.CallbackList(([callbacks_module.ProgbarLogger()] if verbose else [])
                                            + list(callbacks or []), model=self, steps=batches.steps, verbose=verbose)
        cbs.on_predict_begin()
        outputs = []
        for step, (xb, _) in enumerate(batches.epoch()):
            cbs.on_predict_batch_begin(step)
            if not self.built:
                self._ensure_built(xb.shape)
            outputs.append(self._forward(self._prepare_x(xb), training=False))
            cbs.on_predict_batch_end(step, {"outputs": outputs[-1]})
        cbs.on_predict_end()
        if not outputs:
            dtype = self._layers[-1].dtype if self._layers else np.float32
            return np.empty((0,) + tuple(self.output_shape[1:]), dtype=dtype)
        return np.concatenate(outputs)

    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) on that batch, before the step."""
        self._require_compiled("train_on_batch")
        x, y = self._array_data(x, y)
        self._ensure_built(x.shape)
        self.loss.validate_targets(y, self.output_shape)
        loss, out = self._train_batch(x, y)
        return self._batch_result(loss, y, out, return_dict)

    def test_on_batch(self, x, y, return_dict=False):
        self._require_compiled("test_on_batch")
        x, y = self._array_data(x, y)
        self._ensure_built(x.shape)
        self.loss.validate_targets(y, self.output_shape)
        loss, out = self._test_batch(x, y)
        return self._batch_result(loss, y, out, return_dict)

    def predict_on_batch(self, x):
        return self(x)

    def _batch_result(self, loss, y, out, return_dict):
        logs = {"loss": float(loss)}
        for m in self._metric_ids:
            metric = metrics_module.get(m, y_true=y, y_pred=out) if not isinstance(m, metrics_module.Metric) else m
            metric.reset_state()
            metric.update_state(y, out)
            logs[metric.name] = float(metric.result())
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    # --- saving --------------------------------------------------------------------------------------------
    def save(self, filepath, overwrite=True, include_optimizer=True):
        """Save architecture, weights, compile settings and optimizer state to one file, atomically.

        The format (a zip of ``config.json`` and ``.npy`` arrays) never needs unpickling; see
        :mod:`fastconv.models.saving`. Load it back with :func:`fastconv.load_model`.
        """
        saving.save_model(self, filepath, overwrite=overwrite, include_optimizer=include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        """Save the weights only (atomically)."""
        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        """Load weights saved by :meth:`save_weights` or :meth:`save` (same layer and weight names)."""
        saving.load_weights(self, filepath)

    def get_config(self):
        layers = ([serialize_layer(self._input)] if self._input is not None else []) + \
            [serialize_layer(layer) for layer in self._layers]
        return {"name": self.name, "trainable": self.trainable, "layers": layers}

    @classmethod
    def from_config(cls, config):
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"a Sequential config must be a dict with a 'layers' list; received {config!r}")
        model = cls(name=config.get("name"))
        for layer_config in config["layers"]:
            model.add(deserialize_layer(layer_config))
        if "trainable" in config and not config["trainable"]:
            model.trainable = False
        return model

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self._layers)} built={self.built}>"

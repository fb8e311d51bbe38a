"""``Model``: a graph of layers between symbolic inputs and outputs, Keras's functional API, and the training,
evaluation, prediction and saving that every fastconv model shares (``Sequential`` is a ``Model`` whose graph is a
chain).

>>> import numpy as np, fastconv
>>> from fastconv.layers import Input, Conv2D, Add, GlobalAveragePooling2D, Dense
>>> inputs = Input((8, 8, 3))
>>> x = Conv2D(4, 3, padding="same", activation="relu")(inputs)
>>> y = Conv2D(4, 3, padding="same")(x)
>>> outputs = Dense(2, activation="softmax")(GlobalAveragePooling2D()(Add()([x, y])))
>>> model = fastconv.Model(inputs, outputs)
>>> model.predict(np.zeros((5, 8, 8, 3), dtype=np.float32), verbose=0).shape
(5, 2)
"""
import math
import warnings

import numpy as np

from fastconv import callbacks as callbacks_module
from fastconv import losses as losses_module
from fastconv import metrics as metrics_module
from fastconv import optimizers as optimizers_module
from fastconv import utils
from fastconv._memory import reusing_blocks
from fastconv.layers import symbolic
from fastconv.layers.base import ActivationMixin, InputLayer, Layer, format_shape, recording_state, training_step
from fastconv.layers.regularization import Dropout
from fastconv.models import data as data_module
from fastconv.models import saving
from fastconv.models.graph import Graph
from fastconv.models.summary import summary_lines

__all__ = ["Model"]


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


class Model(Layer):
    """A model: layers connected from symbolic inputs to outputs (Keras's functional API).

    Parameters
    ----------
    inputs : SymbolicTensor or list of them
        From :func:`fastconv.layers.Input`.
    outputs : SymbolicTensor or list of them
        Layers called on the inputs (``Dense(10)(Flatten()(Conv2D(32, 3)(inputs)))``), several when the model has
        several outputs.
    name : str, optional
    trainable : bool

    Notes
    -----
    Layers keep their weights: a model built from another model's tensors (``Model(model.input,
    model.get_layer("block3_conv3").output)``) shares them. A layer called several times shares its weights
    between the calls, and its gradient sums over them. A model is itself a layer: it can be called on a symbolic
    tensor or used inside ``Sequential``.

    With several outputs, ``compile`` takes one loss for all or a list/dict of them (by output layer name),
    ``fit`` and ``evaluate`` take a list/dict of targets, ``predict`` returns a list, and the reported loss is the
    sum of the per-output losses (weighted by ``loss_weights``), logged as ``"loss"`` beside ``"<output>_loss"``.
    """

    def __init__(self, inputs=None, outputs=None, name=None, trainable=True, **kwargs):
        super().__init__(name=name, trainable=trainable, **kwargs)
        self._graph = None
        self.optimizer = None
        self.loss = None
        self._losses = []
        self._loss_weights = []
        self._metric_ids = []
        self._metrics = None
        self.compiled = False
        self._fused = []
        self.stop_training = False
        self.history = None
        if inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise ValueError(f"a Model needs both inputs and outputs; received inputs={inputs!r}, "
                                 f"outputs={outputs!r}")
            self._set_graph(Graph(inputs, outputs))

    # --- structure -----------------------------------------------------------------------------------------
    def _set_graph(self, graph):
        seen = {}
        for layer in graph.input_layers + graph.layers:
            if layer.name in seen and seen[layer.name] is not layer:
                raise ValueError(f"layer names must be unique within a model; received two layers named "
                                 f"{layer.name!r} in model {self.name!r}")
            seen[layer.name] = layer
        self._graph = graph
        self.dtype = np.dtype(graph.inputs[0].dtype)  # a nested model casts what it receives to its input's dtype
        self.multi_input = len(graph.inputs) > 1
        shapes_in = [t.shape for t in graph.inputs]
        shapes_out = [t.shape for t in graph.outputs]
        # A single input (or output) given as a one-element list still has one shape, as in Keras.
        self.input_shape = shapes_in[0] if len(shapes_in) == 1 else shapes_in
        self.output_shape = shapes_out[0] if len(shapes_out) == 1 else shapes_out
        self.built = True
        if self.compiled:
            self._resolve_compile()

    @property
    def layers(self):
        """The layers, in the order they run (a functional model's Input layers first, as in Keras)."""
        if self._graph is None:
            return []
        return list(self._graph.input_layers) + [layer for layer in self._graph.layers]

    def _layers_with_weights(self):
        if getattr(self, "_graph", None) is None:
            return []
        return list(self._graph.layers)

    def _all_layers(self):
        """Every layer, nested models' layers included (depth first)."""
        for layer in self._layers_with_weights():
            yield layer
            if isinstance(layer, Model):
                yield from layer._all_layers()

    @property
    def inputs(self):
        return list(self._graph.inputs) if self._graph is not None else None

    @property
    def outputs(self):
        return list(self._graph.outputs) if self._graph is not None else None

    @property
    def input(self):
        """The input tensor (a list of them for a model with several inputs)."""
        self._require_graph("input")
        return self._graph.inputs[0] if self._graph.single_input else list(self._graph.inputs)

    @property
    def output(self):
        """The output tensor (a list of them for a model with several outputs)."""
        self._require_graph("output")
        return self._graph.outputs[0] if self._graph.single_output else list(self._graph.outputs)

    @property
    def output_names(self):
        return [t.layer.name for t in self._graph.outputs] if self._graph is not None else []

    def _require_graph(self, what):
        if self._graph is None:
            raise ValueError(f"model {self.name!r} has no {what} yet: start it with an Input(shape), or call "
                             f"build(input_shape) or fit() first")

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        self._trainable = bool(value)
        for layer in self._layers_with_weights():
            layer.trainable = self._trainable

    @property
    def output_dtype(self):
        return self._graph.outputs[0].dtype if self._graph is not None else self.dtype

    def get_layer(self, name=None, index=None):
        """A layer by name or by position (``get_layer("dense")``, ``get_layer(0)``, ``get_layer(index=-1)``)."""
        layers = self.layers
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and index is None:
            name, index = None, name
        if index is not None:
            if name is not None:
                raise ValueError(f"give a name or an index, not both; received name={name!r} and index={index!r}")
            try:
                return layers[index]
            except (IndexError, TypeError):
                raise ValueError(f"index must be a position among the {len(layers)} layers of {self.name!r}; "
                                 f"received index={index!r}") from None
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"name must be one of the layer names {[layer.name for layer in layers]}; "
                         f"received name={name!r}")

    def compute_output_shape(self, input_shape):
        self._require_graph("output shape")
        if not self._graph.single_output:
            raise ValueError(f"model {self.name!r} has {len(self._graph.outputs)} outputs: it cannot be called as a "
                             f"layer inside another model")
        batch = input_shape[0][0] if self.multi_input else input_shape[0]
        return (batch,) + tuple(self._graph.outputs[0].shape[1:])

    def _ensure_built(self, xs, rng=None):
        self._require_graph("graph")

    # --- weights -------------------------------------------------------------------------------------------
    def _unique(self, variables):
        seen, result = set(), []
        for v in variables:
            if id(v) not in seen:
                seen.add(id(v))
                result.append(v)
        return result

    @property
    def weights(self):
        return self._unique(w for layer in self._layers_with_weights() for w in layer.weights)

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return self._unique(w for layer in self._layers_with_weights() for w in layer.trainable_weights)

    @property
    def non_trainable_weights(self):
        trainable = {id(w) for w in self.trainable_weights}
        return [w for w in self.weights if id(w) not in trainable]

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
        return int(sum(w.value.size for w in self.weights))

    # --- inspection ----------------------------------------------------------------------------------------
    def summary(self, line_length=None, positions=None, print_fn=None):
        """Print a table of the layers, their output shapes and parameter counts (and, for a graph model, the
        layers each one is connected to), as Keras does."""
        if not self.built:
            raise ValueError(f"model {self.name!r} has not been built yet: start it with an Input(shape), or call "
                             f"build(input_shape) or fit() first")
        for line in summary_lines(self, line_length, positions):
            (print_fn or print)(line)

    # --- inputs and forward --------------------------------------------------------------------------------
    def _input_names(self):
        return [t.layer.name for t in self._graph.inputs]

    def _x_list(self, x, name="x"):
        """The input batch as one array per model input (a list, a tuple or a dict by Input name)."""
        graph = self._graph
        if graph is None or graph.single_input or (len(graph.inputs) == 1 and not isinstance(x, (list, tuple, dict))):
            if isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], np.ndarray):
                x = x[0]  # Keras also takes [x] for a single input
            return [_as_array(x, name)]
        names = self._input_names()
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"{name} must hold one array per input {names}; received a dict without {missing}")
            x = [x[n] for n in names]
        if not isinstance(x, (list, tuple)) or len(x) != len(names):
            raise ValueError(f"{name} must be a list of {len(names)} arrays, one per input {names}; received "
                             f"{name} of type {type(x).__name__}"
                             + (f" with {len(x)} entries" if isinstance(x, (list, tuple)) else ""))
        arrays = [_as_array(v, f"{name}[{i}]") for i, v in enumerate(x)]
        counts = {data_module.num_samples(a) for a in arrays}
        if len(counts) > 1:
            raise ValueError(f"the arrays of {name} must have the same number of samples; received "
                             f"{[data_module.num_samples(a) for a in arrays]}")
        return arrays

    def _check_x(self, xs, name="x"):
        single = len(xs) == 1
        for i, (array, tensor) in enumerate(zip(xs, self._graph.inputs)):
            expected, shape = tensor.shape, array.shape
            if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:])):
                label = name if single else f"{name}[{i}]"
                raise ValueError(f"{label} must have shape {format_shape(expected)} to fit the input of model "
                                 f"{self.name!r}; received {label} with shape {shape}")

    @reusing_blocks
    def _forward(self, xs, training, states=None):
        return self._graph.forward(xs, training, states)

    def _pack(self, outputs):
        return outputs[0] if self._graph.single_output else outputs

    def call(self, x, training=False):
        """Run the model as a layer of another model (``x`` an array, a list for several inputs)."""
        xs = list(x) if self.multi_input else [x]
        states = {} if self._keep_state(training) else None
        outputs = self._forward(xs, training, states)
        self._cache = states
        return self._pack(outputs)

    def backward(self, grad_output, need_input_grad=True):
        """The backward pass of :meth:`call` (a model inside another model)."""
        states = self._cached()
        wrt = self._graph.inputs if need_input_grad else []
        weight_grads, input_grads = self._graph.backward([grad_output], states, wrt=wrt)
        by_id = {id(v): g for v, g in weight_grads}
        grads = [by_id[id(v)] if id(v) in by_id else np.zeros_like(v.value) for v in self.trainable_weights]
        if not need_input_grad:
            return None, grads
        return (input_grads if self.multi_input else input_grads[0]), grads

    def __call__(self, inputs, training=False):
        if symbolic.is_symbolic(inputs):
            return symbolic.call_layer(self, inputs)
        xs = self._x_list(inputs)
        self._ensure_built(xs)
        self._check_x(xs)
        return self._pack(self._forward(xs, bool(training)))

    # --- gradients -----------------------------------------------------------------------------------------
    def _wrt_tensors(self, wrt):
        if isinstance(wrt, str) and wrt in ("input", "inputs"):
            return list(self._graph.inputs), False
        items, single = ([wrt], True) if not isinstance(wrt, (list, tuple)) else (list(wrt), False)
        tensors = []
        for item in items:
            if isinstance(item, str):
                item = self.get_layer(item)
            if isinstance(item, Layer) and not isinstance(item, symbolic.SymbolicTensor):
                nodes = [n for n in item._inbound_nodes if any(n is m for m in self._graph.nodes)]
                if isinstance(item, InputLayer):
                    tensors.append(item.output)
                    continue
                if len(nodes) != 1:
                    raise ValueError(f"wrt: layer {item.name!r} is called {len(nodes)} times in model "
                                     f"{self.name!r}; pass the symbolic tensor you mean instead")
                item = nodes[0].outputs[0]
            if not isinstance(item, symbolic.SymbolicTensor):
                raise TypeError(f"wrt must hold layer names, layers or symbolic tensors of model {self.name!r}; "
                                f"received {item!r}")
            if not any(item is t for t in self._graph.inputs) and not any(item is n.outputs[0]
                                                                        for n in self._graph.nodes):
                raise ValueError(f"wrt: {item!r} is not a tensor of model {self.name!r}")
            tensors.append(item)
        return tensors, single

    def gradients(self, x, output_gradients, wrt="inputs", return_outputs=False):
        """Gradients of an objective of the model's outputs with respect to its inputs or any inner tensor.

        fastconv has no tape: you give the gradient of your objective with respect to the outputs, the model
        backpropagates it (in inference mode: dropout off, batch normalisation on its moving statistics).

        Parameters
        ----------
        x : array or list of arrays
            A batch of inputs.
        output_gradients : array, list of arrays (one per output, None for none), or callable
            d(objective)/d(output); a callable receives the outputs (an array, or a list for several outputs) and
            returns it. For Grad-CAM's class score: ``lambda y: np.eye(y.shape[1])[[k] * len(y)]``.
        wrt : "inputs", a layer name, a layer, a symbolic tensor, or a list of them
            Where to stop: the model's inputs (default), or the output of an inner layer.
        return_outputs : bool
            Also return the model's outputs (from the same forward pass).

        Returns
        -------
        ndarray or list of ndarray
            One gradient per ``wrt`` entry, shaped like that tensor's batch (a list unless ``wrt`` is one item
            other than "inputs" of a single-input model). With ``return_outputs=True``: ``(outputs, gradients)``.

        Examples
        --------
        >>> import numpy as np, fastconv
        >>> from fastconv.layers import Input, Dense
        >>> inputs = Input((3,))
        >>> model = fastconv.Model(inputs, Dense(1, kernel_initializer="ones", use_bias=False)(inputs))
        >>> model.gradients(np.zeros((2, 3), dtype=np.float32), np.ones((2, 1), dtype=np.float32))
        array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
        """
        self._require_graph("graph")
        tensors, single = self._wrt_tensors(wrt)
        if wrt in ("input", "inputs") and self._graph.single_input:
            single = True
        xs = self._x_list(x)
        self._check_x(xs)
        states = {}
        with recording_state():
            outputs = self._graph.forward(xs, training=False, states=states)
        packed = self._pack(outputs)
        seeds = output_gradients(packed) if callable(output_gradients) else output_gradients
        seeds = [seeds] if self._graph.single_output else list(seeds)
        if len(seeds) != len(outputs):
            raise ValueError(f"output_gradients must hold one array per output ({len(outputs)}); received "
                             f"{len(seeds)}")
        checked = []
        for i, (seed, out) in enumerate(zip(seeds, outputs)):
            if seed is None:
                checked.append(None)
                continue
            seed = np.asarray(seed, dtype=out.dtype)
            if seed.shape != out.shape:
                raise ValueError(f"output_gradients[{i}] must have the output's shape {out.shape}; received shape "
                                 f"{seed.shape}")
            checked.append(seed)
        try:
            _, grads = self._graph.backward(checked, states, wrt=tensors)
        finally:
            self._graph.release()
        grads = [np.zeros((len(xs[0]),) + tuple(t.shape[1:]), dtype=t.dtype) if g is None else g
                 for g, t in zip(grads, tensors)]
        result = grads[0] if single else grads
        return (packed, result) if return_outputs else result

    # --- compile -------------------------------------------------------------------------------------------
    def _per_output(self, value, what, allow_none=True):
        """One entry per output from a single value, a list or a dict keyed by output layer name."""
        names = self.output_names
        if isinstance(value, dict):
            unknown = [k for k in value if k not in names]
            if unknown:
                raise ValueError(f"{what} keys must be output layer names {names}; received keys {unknown}")
            return [value.get(n) for n in names]
        if isinstance(value, (list, tuple)) and len(names) > 1 and what != "metrics":
            if len(value) != len(names):
                raise ValueError(f"{what} must have one entry per output ({len(names)}: {names}); received "
                                 f"{len(value)} entries")
            return list(value)
        return [value] * max(1, len(names))

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None):
        """Configure training.

        Parameters
        ----------
        optimizer : str or Optimizer
            ``"rmsprop"`` (Keras's default), ``"adam"``, ``"sgd"`` or an object from :mod:`fastconv.optimizers`.
        loss : str, Loss, or (several outputs) a list or dict of them
            ``"binary_crossentropy"``, ``"categorical_crossentropy"``, ``"sparse_categorical_crossentropy"``,
            ``"mse"`` or an object from :mod:`fastconv.losses`.
        metrics : list, optional
            ``["accuracy"]`` picks binary, categorical or sparse accuracy from the data, as Keras does. With several
            outputs a flat list applies to each output; a list of lists or a dict by output name picks per output.
        loss_weights : list or dict of floats, optional
            Several outputs: the weight of each output's loss in the total.

        Notes
        -----
        When an output layer ends in ``sigmoid`` (with binary cross-entropy) or ``softmax`` (with categorical or
        sparse categorical cross-entropy) on the last axis, the loss is computed from that layer's logits (see
        :mod:`fastconv.losses`): the reported loss stays finite and exact however confident the model is.
        """
        if loss is None:
            raise ValueError("loss must be given (a name such as 'binary_crossentropy' or a fastconv.losses.Loss); "
                             "received loss=None")
        self.optimizer = optimizers_module.get(optimizer)
        self._compile_args = (loss, metrics, loss_weights)
        self.loss = loss if isinstance(loss, (list, tuple, dict)) else losses_module.get(loss)
        self.compiled = True
        self._metrics = None
        if self._graph is not None:
            self._resolve_compile()
        else:  # a Sequential built later resolves them then
            self._losses, self._metric_ids, self._loss_weights = [], [], []
            if metrics is not None and not isinstance(metrics, (list, tuple, dict, str, metrics_module.Metric)):
                raise TypeError(f"metrics must be a list of names or Metric objects; received metrics={metrics!r}")
            for m in ([metrics] if isinstance(metrics, (str, metrics_module.Metric)) else metrics or []):
                metrics_module.validate(m)

    def _resolve_compile(self):
        loss, metrics, loss_weights = self._compile_args
        self._losses = [None if entry is None else losses_module.get(entry)
                        for entry in self._per_output(loss, "loss")]
        if all(entry is None for entry in self._losses):
            raise ValueError(f"loss must be given for at least one output; received loss={loss!r}")
        weights = self._per_output(1.0 if loss_weights is None else loss_weights, "loss_weights")
        self._loss_weights = [1.0 if w is None else float(w) for w in weights]
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, metrics_module.Metric)):
            metrics = [metrics]
        if isinstance(metrics, dict):
            per_output = self._per_output(metrics, "metrics")
        elif isinstance(metrics, (list, tuple)):
            nested = len(self.output_names) > 1 and metrics and all(isinstance(m, (list, tuple)) or m is None
                                                                    for m in metrics)
            if nested:
                if len(metrics) != len(self.output_names):
                    raise ValueError(f"metrics must have one list per output ({len(self.output_names)}); received "
                                     f"{len(metrics)}")
                per_output = list(metrics)
            else:
                per_output = [list(metrics)] * max(1, len(self.output_names))
        else:
            raise TypeError(f"metrics must be a list of names or Metric objects; received metrics={metrics!r}")
        per_output = [[m] if isinstance(m, (str, metrics_module.Metric)) else list(m or []) for m in per_output]
        if len(per_output) > 1:  # Metric objects cannot be shared between outputs: each keeps its own state
            shared = [m for ms in per_output for m in ms if isinstance(m, metrics_module.Metric)]
            if len({id(m) for m in shared}) != len(shared):
                raise ValueError("a Metric object can only track one output; give each output its own")
        self._metric_ids = [[metrics_module.validate(m) for m in ms] for ms in per_output]
        self._update_fusion()

    def get_compile_config(self):
        if not self.compiled:
            return None
        loss, metrics, loss_weights = self._compile_args

        def loss_config(entry):
            if isinstance(entry, dict):
                return {k: loss_config(v) for k, v in entry.items()}
            if isinstance(entry, (list, tuple)):
                return [loss_config(v) for v in entry]
            return None if entry is None else losses_module.serialize(losses_module.get(entry))

        def metric_config(entry):
            if isinstance(entry, dict):
                return {k: metric_config(v) for k, v in entry.items()}
            if isinstance(entry, (list, tuple)):
                return [metric_config(v) for v in entry]
            return None if entry is None else metrics_module.serialize(entry)

        return {"optimizer": optimizers_module.serialize(self.optimizer), "loss": loss_config(loss),
                "metrics": metric_config(metrics or []), "loss_weights": loss_weights}

    def _update_fusion(self):
        """Decide, per output, whether the loss takes the output layer's logits (see compile's notes)."""
        for layer in self._all_layers():
            if isinstance(layer, ActivationMixin):
                layer._keep_logits = False
        self._fused = []
        if not (self.compiled and self._graph is not None and self._losses):
            return
        for tensor, loss in zip(self._graph.outputs, self._losses):
            layer = tensor.layer
            activation = getattr(layer, "activation", None)
            calls = sum(1 for node in self._graph.nodes if node.layer is layer)
            fused = (loss is not None and isinstance(layer, ActivationMixin) and calls == 1
                     and not loss.from_logits and loss.fused_activation is not None and activation is not None
                     and activation.name == loss.fused_activation
                     and getattr(activation, "axis", -1) in (-1, len(tensor.shape) - 1))
            if fused:
                layer._keep_logits = True
            self._fused.append(fused)

    def _require_compiled(self, method):
        if not self.compiled:
            raise RuntimeError(f"model {self.name!r} must be compiled before {method}(): call "
                               f"model.compile(optimizer=..., loss=..., metrics=...) first")

    @property
    def metrics_names(self):
        names = ["loss"]
        multi = len(self.output_names) > 1
        if multi:
            names += [f"{n}_loss" for n, loss in zip(self.output_names, self._losses) if loss is not None]
        for out_name, ids in zip(self.output_names or [None], self._metric_ids):
            for m in ids:
                base = m.name if isinstance(m, metrics_module.Metric) else m
                names.append(f"{out_name}_{base}" if multi else base)
        return names

    def _new_metrics(self, ys, outs):
        """Fresh metric objects per output, named ``<output>_<metric>`` when there are several outputs."""
        multi = len(outs) > 1
        result = []
        for out_name, ids, y, out in zip(self.output_names, self._metric_ids, ys, outs):
            objects = []
            for m in ids:
                metric = metrics_module.get(m, y_true=y, y_pred=out)
                if multi and not isinstance(m, metrics_module.Metric):
                    metric.name = f"{out_name}_{metric.name}"
                objects.append(metric)
            result.append(objects)
        return result

    # --- one batch -----------------------------------------------------------------------------------------
    def _y_list(self, y, name="y"):
        if len(self._graph.outputs) == 1:
            if isinstance(y, (list, tuple)) and len(y) == 1 and isinstance(y[0], np.ndarray):
                y = y[0]
            return [_as_array(y, name)]
        names = self.output_names
        if isinstance(y, dict):
            y = [y.get(n) for n in names]
        if not isinstance(y, (list, tuple)) or len(y) != len(names):
            raise ValueError(f"{name} must be a list of {len(names)} arrays, one per output {names}; received "
                             f"{name} of type {type(y).__name__}")
        return [None if v is None else _as_array(v, f"{name}[{i}]") for i, v in enumerate(y)]

    def _losses_of(self, ys, outs, need_grad):
        """Total loss, per-output losses, and the gradient for each output (None where there is none)."""
        total, per_output, grads = 0.0, [], []
        for i, (loss, weight, y, out) in enumerate(zip(self._losses, self._loss_weights, ys, outs)):
            if loss is None or y is None:
                per_output.append(None)
                grads.append(None)
                continue
            if self._fused[i]:
                value, grad = loss.value_and_grad_from_logits(y, self._graph.outputs[i].layer.logits, need_grad)
            else:
                value, grad = loss.value_and_grad(y, out, need_grad)
            per_output.append(value)  # each output's own loss is logged unweighted, as in Keras
            if weight != 1.0:
                value = value * value.dtype.type(weight)
                grad = None if grad is None else grad * grad.dtype.type(weight)
            total = total + value
            grads.append(grad)
        return total, per_output, grads

    # Every array of a step (activations, gradients, temporaries) from the block cache: no page faults for the
    # large ones after the first step (fastconv._memory).
    @reusing_blocks
    def _train_batch(self, xs, ys):
        xs = self._prepare_x(xs)
        states = {}
        with training_step():
            outs = self._forward(xs, training=True, states=states)
            total, per_output, grads = self._losses_of(ys, outs, need_grad=True)
            fused_nodes = {id(t.node) for t, fused in zip(self._graph.outputs, self._fused) if fused}
            try:
                weight_grads, _ = self._graph.backward(grads, states, fused_nodes)
                if weight_grads:
                    self.optimizer.apply([g for _, g in weight_grads], [v for v, _ in weight_grads])
            finally:
                self._graph.release()
        return total, per_output, outs

    @reusing_blocks
    def _test_batch(self, xs, ys):
        xs = self._prepare_x(xs)
        outs = self._forward(xs, training=False)
        total, per_output, _ = self._losses_of(ys, outs, need_grad=False)
        return total, per_output, outs

    def _prepare_x(self, xs):
        xs = self._x_list(xs)
        self._check_x(xs)
        return xs

    # --- data ----------------------------------------------------------------------------------------------
    def _array_data(self, x, y, name_x="x", name_y="y", need_y=True):
        xs = self._x_list(x, name_x)
        n = data_module.num_samples(xs[0])
        if y is None:
            if need_y:
                raise ValueError(f"{name_y} must be given when {name_x} is an array; received {name_y}=None")
            return xs, None
        ys = self._y_list(y, name_y)
        for target in ys:
            if target is not None and data_module.num_samples(target) != n:
                raise ValueError(f"{name_x} and {name_y} must have the same number of samples; received {name_x} "
                                 f"with {n} samples and {name_y} with {data_module.num_samples(target)}")
        return xs, ys

    def _validate_targets(self, ys, name="y"):
        shapes = [t.shape for t in self._graph.outputs]
        for i, (loss, target, shape) in enumerate(zip(self._losses, ys, shapes)):
            if loss is None or target is None:
                continue
            label = name if len(ys) == 1 else f"{name}[{i}]"
            try:
                loss.validate_targets(target, shape)
            except ValueError as exc:
                raise ValueError(str(exc).replace("y must", f"{label} must").replace("received y ",
                                                                                      f"received {label} ")) from None

    def _batches(self, xs, ys, batch_size, shuffle=False, seed=0):
        """Batches of the arrays: plain arrays for one input/output, lists of them for several."""
        x = xs[0] if len(xs) == 1 else xs
        y = ys[0] if ys is not None and len(ys) == 1 else ys
        return data_module.ArrayBatches(x, y, batch_size, shuffle=shuffle, seed=seed)

    def _generator(self, source, steps, mode="fit"):
        return data_module.GeneratorBatches(source, steps, mode=mode,
                                            n_inputs=len(self._graph.inputs) if self._graph is not None else 1,
                                            n_outputs=len(self._graph.outputs) if self._graph is not None else 1)

    # --- fit -----------------------------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1, seed=None):
        """Train the model.

        Parameters
        ----------
        x : array, list of arrays (several inputs), or data generator
            Input samples, ``(N, ...)`` matching the model's input; or a generator of ``(x, y)`` batches (for
            example ``ImageDataGenerator().flow(x, y)``), in which case ``y``, ``batch_size``, ``shuffle`` and
            ``validation_split`` do not apply.
        y : array or list of arrays (several outputs), optional
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
        shuffle_rng, dropout_rng, build_rng = (np.random.default_rng(s) for s in seeds)
        # each epoch's shuffling and dropout masks derive from (these, epoch): resuming at initial_epoch=k
        # replays epoch k exactly
        shuffle_seed, dropout_seed = int(shuffle_rng.integers(0, 2**63)), int(dropout_rng.integers(0, 2**63))

        if data_module.is_generator(x):
            if y is not None:
                raise ValueError("y must not be given when x is a data generator (it yields (x, y) batches); "
                                 f"received y of type {type(y).__name__}")
            if validation_split:
                raise ValueError("validation_split is not available with a data generator; pass validation_data "
                                 f"instead; received validation_split={validation_split!r}")
            steps = None if steps_per_epoch is None else _positive_int(steps_per_epoch, "steps_per_epoch")
            train = self._generator(x, steps)
        else:
            batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
            if not 0 <= validation_split < 1:
                raise ValueError(f"validation_split must be in [0, 1); received validation_split={validation_split!r}")
            self._ensure_built(self._x_list(x), build_rng if seed is not None else None)
            xs, ys = self._array_data(x, y)
            if validation_split and validation_data is None:
                n = data_module.num_samples(xs[0])
                split_at = int(math.ceil(n * (1.0 - validation_split)))
                if split_at == 0 or split_at == n:
                    raise ValueError(f"validation_split={validation_split!r} leaves an empty training or "
                                     f"validation set for {n} samples")
                validation_data = ([a[split_at:] for a in xs], [None if t is None else t[split_at:] for t in ys])
                xs, ys = [a[:split_at] for a in xs], [None if t is None else t[:split_at] for t in ys]
            if data_module.num_samples(xs[0]) == 0:
                raise ValueError(f"x must hold at least one sample; received x with shape {xs[0].shape}")
            self._check_x(xs)
            self._validate_targets(ys)
            train = self._batches(xs, ys, batch_size, shuffle=bool(shuffle), seed=shuffle_seed)
            if steps_per_epoch is not None:
                raise ValueError("steps_per_epoch only applies to data generators; received steps_per_epoch="
                                 f"{steps_per_epoch!r} with array x")

        validation = None
        if validation_data is not None:
            validation = self._validation_batches(validation_data, validation_batch_size or batch_size or 32,
                                                  validation_steps)

        seeded_dropout = [] if seed is None else [layer for layer in self._all_layers()
                                                  if isinstance(layer, Dropout) and layer.seed is None]

        history = callbacks_module.History()
        user = list(callbacks or [])
        cbs = callbacks_module.CallbackList(([callbacks_module.ProgbarLogger()] if verbose else []) + user + [history],
                                            model=self, epochs=epochs, steps=train.steps, verbose=verbose)
        self.stop_training = False
        self.history = history
        cbs.on_train_begin()
        trackers = None
        epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            trackers = None
            cbs.on_epoch_begin(epoch)
            for i, layer in enumerate(seeded_dropout):
                layer.set_generator(np.random.default_rng([dropout_seed, i, epoch]))
            seen = 0
            for step, (xb, yb) in enumerate(train.epoch(epoch)):
                if self._graph is None:
                    self._ensure_built(self._x_list(xb), build_rng if seed is not None else None)
                cbs.on_train_batch_begin(step)
                ys_b = self._y_list(yb)
                loss, per_output, outs = self._train_batch(xb, ys_b)
                if trackers is None:
                    trackers = _Trackers(self, ys_b, outs)
                    self._metrics = [m for ms in trackers.metrics for m in ms]
                logs = trackers.update(loss, per_output, ys_b, outs)
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
            epoch_logs = trackers.results()
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
        for layer in self._all_layers():  # the arrays kept for reuse between steps are not needed after fit
            layer._drop_recycled()
        cbs.on_train_end(epoch_logs)
        return history

    def _validation_batches(self, validation_data, batch_size, steps):
        if data_module.is_generator(validation_data):
            return self._generator(validation_data, steps)
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError(f"validation_data must be a pair (x_val, y_val) or a data generator; received "
                             f"validation_data of type {type(validation_data).__name__}")
        if len(validation_data) == 3:
            raise ValueError("sample weights are not supported: validation_data must be (x_val, y_val); received a "
                             "triple")
        xv, yv = self._array_data(*validation_data, name_x="x_val", name_y="y_val")
        self._check_x(xv, "x_val")
        self._validate_targets(yv, "y_val")
        return self._batches(xv, yv, batch_size)

    # --- evaluate / predict --------------------------------------------------------------------------------
    def _evaluate_batches(self, batches, callback_list):
        trackers = None
        for step, (xb, yb) in enumerate(batches.epoch()):
            if self._graph is None:
                self._ensure_built(self._x_list(xb))
            if callback_list is not None:
                callback_list.on_test_batch_begin(step)
            ys_b = self._y_list(yb)
            loss, per_output, outs = self._test_batch(xb, ys_b)
            if trackers is None:
                trackers = _Trackers(self, ys_b, outs)
            logs = trackers.update(loss, per_output, ys_b, outs)
            if callback_list is not None:
                callback_list.on_test_batch_end(step, logs)
        if trackers is None:
            raise ValueError("the data gave no batches to evaluate")
        return trackers.results()

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", steps=None, callbacks=None,
                 return_dict=False):
        """Loss and metrics on data, in batches.

        Parameters
        ----------
        x, y : arrays (lists of arrays for several inputs/outputs), or x a data generator of (x, y) batches
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
            batches = self._generator(x, steps)
        else:
            batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
            self._ensure_built(self._x_list(x))
            xs, ys = self._array_data(x, y)
            self._check_x(xs)
            self._validate_targets(ys)
            batches = self._batches(xs, ys, batch_size)
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
        x : array, list of arrays (several inputs), or data generator
        batch_size : int
            32 by default.
        verbose : {"auto", 0, 1, 2}
        steps : int, optional
        callbacks : list of Callback, optional

        Returns
        -------
        ndarray, or a list of them for several outputs
            float32 (for a float32 model), one row per sample.
        """
        verbose = _verbosity(verbose)
        if data_module.is_generator(x):
            batches = self._generator(x, steps, mode="predict")
        else:
            batch_size = 32 if batch_size is None else _positive_int(batch_size, "batch_size")
            xs = self._x_list(x)
            self._ensure_built(xs)
            self._check_x(xs)
            batches = self._batches(xs, None, batch_size)
        cbs = callbacks_module.CallbackList(([callbacks_module.ProgbarLogger()] if verbose else [])
                                            + list(callbacks or []), model=self, steps=batches.steps, verbose=verbose)
        cbs.on_predict_begin()
        outputs = []
        for step, (xb, _) in enumerate(batches.epoch()):
            cbs.on_predict_batch_begin(step)
            xs_b = self._x_list(xb)
            if self._graph is None:
                self._ensure_built(xs_b)
            outs = self._forward(self._prepare_x(xs_b), training=False)
            outputs.append(outs)
            cbs.on_predict_batch_end(step, {"outputs": self._pack(outs)})
        cbs.on_predict_end()
        if not outputs:
            if self._graph is None:
                raise ValueError(f"model {self.name!r} is not built and x gave no batches")
            return self._pack([np.empty((0,) + tuple(t.shape[1:]), dtype=t.dtype) for t in self._graph.outputs])
        return self._pack([np.concatenate([batch[i] for batch in outputs]) for i in range(len(outputs[0]))])

    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on one batch; returns the loss (and metrics) on that batch, before the step."""
        self._require_compiled("train_on_batch")
        self._ensure_built(self._x_list(x))
        xs, ys = self._array_data(x, y)
        self._validate_targets(ys)
        loss, per_output, outs = self._train_batch(xs, ys)
        return self._batch_result(loss, per_output, ys, outs, return_dict)

    def test_on_batch(self, x, y, return_dict=False):
        self._require_compiled("test_on_batch")
        self._ensure_built(self._x_list(x))
        xs, ys = self._array_data(x, y)
        self._validate_targets(ys)
        loss, per_output, outs = self._test_batch(xs, ys)
        return self._batch_result(loss, per_output, ys, outs, return_dict)

    def predict_on_batch(self, x):
        return self(x)

    def _batch_result(self, loss, per_output, ys, outs, return_dict):
        logs = _Trackers(self, ys, outs).update(loss, per_output, ys, outs)
        logs = {k: float(v) for k, v in logs.items()}
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
        """Save the weights only, atomically, in the layout the name asks for: ``x.weights.h5`` is Keras 3's
        (``keras_model.load_weights("x.weights.h5")`` reads it), ``x.h5`` Keras's legacy layout, any other name
        fastconv's own format."""
        saving.save_weights(self, filepath, overwrite=overwrite)

    def load_weights(self, filepath):
        """Load weights into this (built) model from a file recognised by its content: fastconv's own
        (``save_weights``/``save``), Keras 3 ``.weights.h5`` or ``.keras``, Keras 1/2 legacy ``.h5`` (weights or
        full model), PyTorch ``torch.save(model.state_dict())`` (read without torch and without unpickling
        code) or safetensors.

        Layers are matched by name when the file's names cover every layer with weights, otherwise by order
        (Keras's rule); PyTorch tensors are matched in order and converted (OIHW -> HWIO, Linear transposed,
        the Flatten -> Dense rows permuted). Every shape is checked before anything is assigned.

        Raises
        ------
        ValueError
            On any mismatch, naming the layer and both shapes, or for a damaged or unknown file.
        """
        saving.load_weights(self, filepath)

    def get_config(self):
        """Keras's functional config: the layers with the nodes that feed each call, and the input/output
        tensors as ``[layer_name, node_index, tensor_index]``, node indices counted within this model."""
        self._require_graph("config")
        from fastconv.models.serialization import graph_config

        return dict(graph_config(self._graph), name=self.name, trainable=self.trainable)

    @classmethod
    def from_config(cls, config):
        from fastconv.models.serialization import graph_from_config

        inputs, outputs = graph_from_config(config)
        model = cls(inputs, outputs, name=config.get("name"))
        if "trainable" in config and not config["trainable"]:
            model.trainable = False
        return model

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} layers={len(self.layers)} built={self.built}>"


class _Trackers:
    """Running means of the loss(es) and the metrics over the batches of an epoch."""

    def __init__(self, model, ys, outs):
        self.multi = len(outs) > 1
        self.names = model.output_names
        self.loss = metrics_module.Mean(name="loss")
        self.output_losses = [metrics_module.Mean(name=f"{n}_loss") if loss is not None else None
                              for n, loss in zip(self.names, model._losses)] if self.multi else []
        self.metrics = model._new_metrics(ys, outs)
        for ms in self.metrics:
            for m in ms:
                m.reset_state()

    def update(self, loss, per_output, ys, outs):
        n = len(outs[0])
        self.loss.update_state(loss, sample_weight=n)
        logs = {"loss": self.loss.result()}
        for tracker, value in zip(self.output_losses, per_output):
            if tracker is not None and value is not None:
                tracker.update_state(value, sample_weight=n)
                logs[tracker.name] = tracker.result()
        for ms, y, out in zip(self.metrics, ys, outs):
            for m in ms:
                if y is not None:
                    m.update_state(y, out)
                logs[m.name] = m.result()
        return logs

    def results(self):
        logs = {"loss": float(self.loss.result())}
        for tracker in self.output_losses:
            if tracker is not None:
                logs[tracker.name] = float(tracker.result())
        for ms in self.metrics:
            for m in ms:
                logs[m.name] = float(m.result())
        return logs

"""``Sequential``: a stack of layers, Keras's ``Sequential``: a :class:`~fastconv.models.model.Model` whose graph
is a chain, which can also be built later, from the first data it sees."""
import numpy as np

from fastconv import utils
from fastconv.layers import symbolic
from fastconv.layers.base import InputLayer, Layer, format_shape
from fastconv.layers.symbolic import SymbolicTensor
from fastconv.models.graph import Graph
from fastconv.models.model import Model

__all__ = ["Sequential"]


class Sequential(Model):
    """A linear stack of layers, Keras's ``Sequential``.

    Parameters
    ----------
    layers : list of Layer, optional
        Usually starting with ``fastconv.layers.Input(shape)``; the model is then built at once. A model (for
        example a frozen convolutional base) can be one of the layers.
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
        self._input = None
        self._layers = []
        super().__init__(name=name, trainable=trainable)
        for layer in layers or []:
            self.add(layer)

    # --- structure -----------------------------------------------------------------------------------------
    @property
    def layers(self):
        """The layers, without the input placeholder."""
        return list(self._layers)

    def _layers_with_weights(self):
        return list(getattr(self, "_layers", []))

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
        if layer.multi_input:
            raise TypeError(f"layer {layer.name!r} merges several inputs, which a Sequential model cannot feed; use "
                            f"fastconv.Model(inputs, outputs) for graphs with branches")
        if layer is self:
            raise ValueError(f"a model cannot be a layer of itself; received model {self.name!r}")
        names = {existing.name for existing in self._layers}
        if layer.name in names:
            raise ValueError(f"layer names must be unique within a model; received a second layer named "
                             f"{layer.name!r}")
        if not self._layers and self._input is None:
            declared = layer._declared_input_shape
            if declared is None and isinstance(layer, Model) and layer.built and not layer.multi_input:
                declared = layer.input_shape[1:]  # a model added first brings its input shape (Keras does too)
            if declared is not None:
                self._input = InputLayer(shape=declared)
        self._layers.append(layer)
        if self._input is not None:
            self._build_layer(layer, self._layers[-2].output_shape if len(self._layers) > 1
                              else self._input.output_shape)
            self._refresh_graph()

    def pop(self):
        """Remove and return the last layer."""
        if not self._layers:
            raise IndexError(f"model {self.name!r} has no layers to pop")
        layer = self._layers.pop()
        self._refresh_graph()
        return layer

    def _build_layer(self, layer, input_shape):
        if not layer.built:
            layer.build(tuple(input_shape))
        else:
            layer.check_input_shape(input_shape, "input")

    def _refresh_graph(self):
        """Chain the layers into this model's graph once every one of them is built."""
        if self._graph is not None:  # forget the previous chain's layer calls (keeps layer.output meaningful)
            for node in self._graph.nodes:
                node.layer._inbound_nodes.remove(node)
        if self._input is None or not self._layers or not all(layer.built for layer in self._layers):
            self._graph = None
            self.built = False
            self.input_shape = self.output_shape = None
            return
        tensor = self._input.output
        for layer in self._layers:
            tensor = symbolic.call_layer(layer, tensor)
        self._set_graph(Graph(self._input.output, tensor))

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
        self._refresh_graph()

    def _ensure_built(self, xs, rng=None):
        if self._graph is not None:
            return
        if not self._layers:
            raise ValueError(f"model {self.name!r} has no layers")
        with utils.seeded_global_generator(rng):
            self.build((None,) + tuple(np.shape(xs[0])[1:]))

    def compute_output_shape(self, input_shape):
        if self._graph is None:
            shape = tuple(input_shape)
            for layer in self._layers:
                shape = tuple(layer.compute_output_shape(shape))
            return shape
        return super().compute_output_shape(input_shape)

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
        super().summary(line_length, positions, print_fn)

    # --- configuration -------------------------------------------------------------------------------------
    def get_config(self):
        from fastconv.models.serialization import serialize

        layers = ([serialize(self._input)] if self._input is not None else []) + \
            [serialize(layer) for layer in self._layers]
        return {"name": self.name, "trainable": self.trainable, "layers": layers}

    @classmethod
    def from_config(cls, config):
        from fastconv.models.serialization import deserialize

        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"a Sequential config must be a dict with a 'layers' list; received {config!r}")
        model = cls(name=config.get("name"))
        for layer_config in config["layers"]:
            model.add(deserialize(layer_config))
        if "trainable" in config and not config["trainable"]:
            model.trainable = False
        return model

    def __repr__(self):
        return f"<Sequential name={self.name!r} layers={len(self._layers)} built={self.built}>"

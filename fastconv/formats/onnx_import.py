"""Build a fastconv model from an ONNX graph: :func:`load_onnx`.

The file is parsed with the ``onnx`` package (an optional dependency, imported when :func:`load_onnx` runs) and
read as data only: nothing in it is executed, tensors stored outside the file ("external data") are refused, and
the few shape computations an exporter leaves in a graph (``Shape``, ``Gather``, ``Concat`` ... on constants) are
evaluated with NumPy. Every node becomes ordinary fastconv layers with ordinary weights, so the model predicts,
trains, saves and loads like any other.

Layout
------
``data_format="channels_first"`` (default)
    The model takes the ONNX input layout (NCHW) and every layer runs with ``data_format="channels_first"``, so
    ``model.predict(x)`` equals onnxruntime's output for the same ``x``.
``data_format="channels_last"``
    4-D inputs and outputs are NHWC and the spatial layers run channels_last; tensors of other ranks keep the
    ONNX layout. Where ONNX's order matters (a ``Flatten``, ``Reshape``, ``MatMul`` or ``Transpose`` of a 4-D
    tensor) the tensor is first put back in NCHW order, so a Flatten still flattens in (C, H, W) order.

Supported operators (default domain)
------------------------------------
Conv (any ``group``: depthwise when ``group`` is the channel count), MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool, Relu, LeakyRelu, PRelu, Sigmoid, Tanh, Clip (``min=0``: a capped ReLU), Softmax,
BatchNormalization (inference), Gemm, MatMul (constant weight), Add, Concat, Flatten, Reshape (constant shape),
Transpose (batch axis kept), Dropout, Pad (constant zero padding of the spatial axes), Identity, Cast (to float),
and on constants only: Constant, ConstantOfShape, Shape, Gather, Slice, Squeeze, Unsqueeze, Sub, Mul, Div.

How the ONNX semantics map onto the layers
------------------------------------------
- Conv weights (O, I, kH, kW) become HWIO kernels; Gemm's ``B`` (transposed when ``transB=1``) and MatMul's
  constant ``(in, out)`` become Dense kernels, ``alpha`` and ``beta`` folded in.
- Padding becomes the layer's ``"valid"`` or ``"same"`` where that is exactly the same padding for the model's
  input size, else a ``ZeroPadding2D`` before a ``"valid"`` layer. For MaxPool that is exact only where the
  input cannot be negative (it comes from Relu, Sigmoid, Softmax ...): elsewhere padding other than "same" is
  refused. AveragePool with ``count_include_pad=1`` pads with zeros (exact); with ``count_include_pad=0`` only
  "same" padding is exact, anything else is refused. ``ceil_mode=1`` is honoured where it can be expressed so.
- ``Add`` of a constant is folded into the bias of the Conv/Gemm/MatMul that produces the other operand when
  that is its only use; otherwise a per-channel (or scalar) constant becomes a frozen ``BatchNormalization``
  with ``epsilon=0``, mean 0 and variance 1 (exactly ``x + c``).
- ``Dropout`` becomes a fastconv ``Dropout`` of the same rate (the identity at inference).
- The first axis of every graph input is the batch axis, fixed (e.g. 1) or symbolic in the file; the other
  axes must have fixed sizes. The model accepts any batch size, so a Reshape must keep the batch axis first
  (its shape's first entry 0, -1, the fixed batch size, or the batch size read by ``Shape``).

Anything else (another operator, or an attribute value these layers cannot honour exactly) raises
``ValueError`` naming the node, its operator and the attribute.

Examples
--------
>>> import numpy as np, pytest
>>> helper = pytest.importorskip("onnx.helper")           # onnx is optional: pip install onnx
>>> from onnx import TensorProto, numpy_helper
>>> graph = helper.make_graph(
...     [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "tiny",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
...     [numpy_helper.from_array(np.ones((2, 3), np.float32), "w")])
>>> model = load_onnx(helper.make_model(graph).SerializeToString())
>>> model.predict(np.array([[1.0, 2.0]], np.float32), verbose=0)
array([[3., 3., 3.]], dtype=float32)
"""
import math
import os
import re
import warnings

import numpy as np

from fastconv import _layout
from fastconv import _validation
from fastconv import layers as L

__all__ = ["load_onnx"]

_ONNX, _NHWC = "onnx", "nhwc"
# A constant computed at load time (ConstantOfShape, Concat ...) may not be larger than this many elements: shape
# computations are tiny, and a hostile file must not make the loader allocate without bound.
_MAX_CONSTANT_ELEMENTS = 1 << 24
# Ops whose output is never negative when their input is not (for MaxPool's zero padding).
_KEEPS_NONNEGATIVE = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Dropout",
                      "Identity", "Pad", "Concat", "Transpose", "Cast"}


def load_onnx(path_or_bytes, data_format="channels_first"):
    """A built :class:`fastconv.Model` computing the same function as an ONNX model.

    Parameters
    ----------
    path_or_bytes : str, os.PathLike, bytes or onnx.ModelProto
        The ``.onnx`` file, its contents, or a parsed model.
    data_format : {"channels_first", "channels_last"}
        ``"channels_first"``: the model takes and returns the ONNX layout (NCHW), so ``model.predict(x)`` equals
        onnxruntime's output on the same ``x``. ``"channels_last"``: 4-D inputs and outputs are NHWC.

    Returns
    -------
    fastconv.Model
        A functional model, one Input per graph input (named after it) and one output per graph output; layers
        are named after the ONNX nodes. float32 whatever the file stores.

    Raises
    ------
    ImportError
        When the ``onnx`` package is missing.
    ValueError
        For a file that is not a valid ONNX model (the message names the file), an operator or attribute value
        that cannot be converted exactly (the message names the node, the operator and the attribute), or inputs
        without fixed non-batch sizes.
    TypeError
        For ``path_or_bytes`` of another type.

    Examples
    --------
    >>> import fastconv
    >>> model = fastconv.load_onnx("mnist.onnx")              # doctest: +SKIP
    >>> model.predict(x_nchw, verbose=0).shape                 # doctest: +SKIP
    (10000, 10)
    """
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f'data_format must be "channels_first" or "channels_last"; received '
                         f'data_format={data_format!r}')
    from fastconv.models.saving import file_errors

    onnx = _import_onnx()
    proto, label = _read(onnx, path_or_bytes)
    with file_errors(label):  # a damaged file can upset code far from here (a name that is bytes, ...)
        _check_structure(onnx, proto, label)
        return _Converter(onnx, proto, label, data_format).convert()


def _import_onnx():
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
        import onnx.shape_inference
    except ImportError as exc:
        raise ImportError("fastconv.load_onnx needs the onnx package to parse ONNX files: pip install onnx") from exc
    return onnx


def _read(onnx, source):
    """(ModelProto, label for messages) from a path, bytes or a ModelProto."""
    if isinstance(source, onnx.ModelProto):
        return source, "the ONNX ModelProto given"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label, shown = bytes(source), "the ONNX bytes given", f"<{len(source)} bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as f:   # a missing file is the usual FileNotFoundError, naming the path
            data = f.read()
        shown = repr(os.fsdecode(path))
        label = f"ONNX file {shown}"
    else:
        raise TypeError(f"path_or_bytes must be a path, bytes or an onnx.ModelProto; received path_or_bytes of "
                        f"type {type(source).__name__}")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, or anything a damaged buffer provokes
        raise ValueError(f"{label} is not a valid ONNX model: it does not parse as an ONNX protobuf ({exc}); "
                         f"received path_or_bytes={shown}") from None
    return proto, label


def _all_tensors(onnx, graph, label, depth=0):
    """Every tensor a graph holds: initializers (sparse ones too) and node attributes, in subgraphs as well, so
    that no tensor stored in an external file reaches onnx.checker (which would look the file up) or a reader."""
    if depth > 64:
        raise ValueError(f"{label} nests subgraphs more than 64 deep; received graph {graph.name!r:.80}")
    A = onnx.AttributeProto
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for a in node.attribute:
            if a.type == A.TENSOR:
                yield a.t
            elif a.type == A.TENSORS:
                yield from a.tensors
            elif a.type == A.SPARSE_TENSOR:
                yield from (a.sparse_tensor.values, a.sparse_tensor.indices)
            elif a.type == A.SPARSE_TENSORS:
                for sparse in a.sparse_tensors:
                    yield from (sparse.values, sparse.indices)
            elif a.type == A.GRAPH:
                yield from _all_tensors(onnx, a.g, label, depth + 1)
            elif a.type == A.GRAPHS:
                for g in a.graphs:
                    yield from _all_tensors(onnx, g, label, depth + 1)


def _check_structure(onnx, proto, label):
    """A protobuf that parses is not yet a model: empty or truncated buffers parse too. Check it."""
    if not proto.ir_version or not proto.HasField("graph") or not proto.graph.output:
        raise ValueError(f"{label} is not a valid ONNX model: it has no IR version, graph or graph output (an "
                         f"empty, truncated or non-ONNX file); received a model with ir_version="
                         f"{proto.ir_version}, {len(proto.graph.node)} nodes and {len(proto.graph.output)} outputs")
    for tensor in _all_tensors(onnx, proto.graph, label):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise ValueError(f"{label}: tensor {tensor.name!r} is stored in an external file; load_onnx reads "
                             f"self-contained models only (save with onnx.save_model(..., "
                             f"save_as_external_data=False)); received data_location=EXTERNAL")
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx.checker.ValidationError, or a C++ error on malformed input
        raise ValueError(f"{label} is not a valid ONNX model: {str(exc).strip().splitlines()[0]}") from None


def _attributes(onnx, node):
    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        values[attribute.name] = value.decode() if isinstance(value, bytes) else value
    return values


def _node_label(node):
    if node.name:
        return repr(node.name)
    return f"<unnamed, output {node.output[0]!r}>" if node.output else "<unnamed>"


def _layer_name(text):
    name = re.sub(r"[^0-9A-Za-z_.-]+", "_", text).strip("_.")
    return name or "node"


class _Tensor:
    """An ONNX tensor as symbolic fastconv tensors: one per layout it has been needed in (``_ONNX`` order, and
    for a 4-D tensor possibly ``_NHWC``), ``primary`` the layout it was produced in."""

    __slots__ = ("views", "primary")

    def __init__(self, symbolic, layout):
        self.views = {layout: symbolic}
        self.primary = layout

    @property
    def onnx_shape(self):
        """The shape of one sample in ONNX order."""
        shape = self.views[self.primary].shape[1:]
        if self.primary == _NHWC:
            h, w, c = shape
            return (c, h, w)
        return tuple(shape)

    @property
    def rank(self):
        return len(self.views[self.primary].shape)


class _Converter:
    def __init__(self, onnx, proto, label, data_format):
        self.onnx = onnx
        self.proto = proto
        self.graph = proto.graph
        self.label = label
        self.channels_last = data_format == "channels_last"
        self.spatial = _NHWC if self.channels_last else _ONNX
        self.opset = None
        for entry in proto.opset_import:
            if entry.domain in ("", "ai.onnx"):
                self.opset = entry.version
        if self.opset is None:
            raise ValueError(f"{label} imports no version of the default ONNX operator set; received opset_import="
                             f"{[(e.domain, e.version) for e in proto.opset_import]}")
        self.constants = {}       # name -> ndarray
        self.batch_entries = {}   # name of an int constant -> bool mask of the entries that hold the batch size
        self.tensors = {}         # name -> _Tensor
        self.nonnegative = set()
        self.layer_names = set()
        self.fused = set()        # indices of Add nodes folded into the bias of the layer before them
        self._fused_outputs = []  # (Add node, tensor it aliases) still to record
        self.batch = None         # the fixed batch size of the graph inputs, if they all declare the same one
        self.declared = {}        # name -> ONNX shape (ints, None where unknown) from the file / shape inference
        self.uses = {}            # name -> indices of the nodes reading it
        for index, node in enumerate(self.graph.node):
            for name in node.input:
                if name:
                    self.uses.setdefault(name, []).append(index)
        self.graph_outputs = {o.name for o in self.graph.output}

    # --- messages ------------------------------------------------------------------------------------------
    def _fail(self, node, message):
        raise ValueError(f"ONNX node {_node_label(node)} (op {node.op_type}) in {self.label}: {message}")

    def _unsupported_attribute(self, node, attribute, value, supported):
        self._fail(node, f"attribute {attribute} must be {supported}; received {attribute}={value!r}")

    # --- driver --------------------------------------------------------------------------------------------
    def convert(self):
        from fastconv.models.model import Model

        self._scan_ops()
        self._read_declared_shapes()
        for tensor in self.graph.initializer:
            self.constants[tensor.name] = self._array(tensor, f"initializer {tensor.name!r}")
        inputs = self._make_inputs()
        for index, node in enumerate(self.graph.node):
            if index in self.fused:
                continue
            self._convert_node(index, node)
            self._check_declared(node)
        outputs = []
        for output in self.graph.output:
            if output.name not in self.tensors:
                raise ValueError(f"{self.label}: graph output {output.name!r} does not depend on the graph inputs "
                                 f"(it is a constant or is never computed); received graph output {output.name!r}")
            tensor = self.tensors[output.name]
            outputs.append(self._view(output.name, _NHWC if self.channels_last and tensor.rank == 4 else _ONNX))
        name = _layer_name(self.graph.name or "onnx_model")
        if name in self.layer_names:
            name = self._unique(name + "_model")
        return Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                     name=name)

    def _scan_ops(self):
        """Refuse unknown operators before anything else, naming each node's operator."""
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                self._fail(node, f"operators of domain {node.domain!r} are not supported (only the default ONNX "
                                 f"domain is); received domain={node.domain!r}")
            if node.op_type not in _HANDLERS and node.op_type not in _CONSTANT_OPS:
                self._fail(node, f"operator {node.op_type} is not supported by fastconv.load_onnx (supported: "
                                 f"{', '.join(sorted(set(_HANDLERS) | set(_CONSTANT_OPS)))}); received op_type="
                                 f"{node.op_type!r}")

    def _read_declared_shapes(self):
        """The shapes the file declares or ONNX's shape inference derives: a cross-check of each conversion."""
        graph = self.graph
        try:
            graph = self.onnx.shape_inference.infer_shapes(self.proto, strict_mode=False).graph
        except Exception:  # inference is only a cross-check: without it the layers' own shape checks remain
            pass
        for info in list(graph.value_info) + list(graph.output):
            tensor_type = info.type.tensor_type
            if tensor_type.HasField("shape"):
                self.declared[info.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                                 for d in tensor_type.shape.dim)

    def _check_declared(self, node):
        for name in node.output:
            declared = self.declared.get(name)
            if not name or name not in self.tensors or declared is None:
                continue
            ours = self.tensors[name].onnx_shape
            if len(declared) != len(ours) + 1 or any(d is not None and d != o for d, o in zip(declared[1:], ours)):
                # Exporters do declare wrong shapes (PyTorch's for some ceil_mode pools); onnxruntime warns too.
                warnings.warn(f"ONNX node {_node_label(node)} (op {node.op_type}) in {self.label}: the "
                              f"model declares shape {declared} for {name!r}, but the operator's definition gives "
                              f"samples of shape {ours}; the model follows the definition", RuntimeWarning,
                              stacklevel=4)

    def _array(self, tensor, what):
        try:
            array = self.onnx.numpy_helper.to_array(tensor)
        except Exception as exc:
            raise ValueError(f"{self.label}: {what} cannot be read ({exc}); received a tensor of data type "
                             f"{tensor.data_type} and dims {list(tensor.dims)}") from None
        return np.array(array)

    def _make_inputs(self):
        inputs, batches = [], set()
        for info in self.graph.input:
            if info.name in self.constants:  # IR < 4 lists initializers among the inputs too
                continue
            tensor_type = info.type.tensor_type
            if tensor_type.elem_type not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE,
                                             self.onnx.TensorProto.FLOAT16):
                raise ValueError(f"{self.label}: graph input {info.name!r} must be a floating-point tensor; received "
                                 f"elem_type={self.onnx.helper.tensor_dtype_to_string(tensor_type.elem_type)}")
            if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) < 2:
                raise ValueError(f"{self.label}: graph input {info.name!r} must have a known shape of at least 2 "
                                 f"axes (batch, ...); received "
                                 f"{'no shape' if not tensor_type.HasField('shape') else 'a 1-D shape'}")
            dims = tensor_type.shape.dim
            shape = []
            for i, dim in enumerate(dims[1:], start=1):
                if not dim.HasField("dim_value") or dim.dim_value < 1:
                    raise ValueError(f"{self.label}: graph input {info.name!r} must have fixed sizes on every axis "
                                     f"but the batch axis (export with fixed image sizes); received axis {i} = "
                                     f"{dim.dim_param or dim.dim_value!r}")
                shape.append(dim.dim_value)
            batches.add(dims[0].dim_value if dims[0].HasField("dim_value") else None)
            name = self._unique(_layer_name(info.name))
            if self.channels_last and len(shape) == 3:
                c, h, w = shape
                symbolic = L.Input((h, w, c), name=name)
                self.tensors[info.name] = _Tensor(symbolic, _NHWC)
            else:
                symbolic = L.Input(tuple(shape), name=name)
                self.tensors[info.name] = _Tensor(symbolic, _ONNX)
            inputs.append(symbolic)
        if not inputs:
            raise ValueError(f"{self.label}: the graph has no inputs besides its initializers; received inputs "
                             f"{[i.name for i in self.graph.input]}")
        self.batch = batches.pop() if len(batches) == 1 else None
        return inputs

    # --- tensors, constants and layers ---------------------------------------------------------------------
    def _unique(self, name):
        candidate, i = name, 1
        while candidate in self.layer_names:
            candidate, i = f"{name}_{i}", i + 1
        self.layer_names.add(candidate)
        return candidate

    def _name(self, node, suffix=""):
        return self._unique(_layer_name((node.name or node.op_type.lower()) + suffix))

    def _present(self, node, i):
        return i < len(node.input) and node.input[i] != ""

    def _is_constant(self, node, i):
        return self._present(node, i) and node.input[i] in self.constants

    def _constant(self, node, i, what):
        if not self._present(node, i):
            self._fail(node, f"input {i} ({what}) is required; received no input {i}")
        name = node.input[i]
        if name not in self.constants:
            self._fail(node, f"input {i} ({what}) must be a constant (an initializer or a Constant); received "
                             f"{name!r}, computed from the graph inputs")
        return self.constants[name]

    def _weight(self, node, i, what, shape=None):
        array = self._constant(node, i, what)
        if array.dtype.kind != "f":
            self._fail(node, f"input {i} ({what}) must hold floating-point values; received dtype {array.dtype}")
        if shape is not None and array.shape != tuple(shape):
            self._fail(node, f"input {i} ({what}) must have shape {tuple(shape)}; received shape {array.shape}")
        return array.astype(np.float32)

    def _tensor_input(self, node, i, what="input"):
        """The name of the non-constant tensor at input ``i``."""
        if not self._present(node, i):
            self._fail(node, f"input {i} ({what}) is required; received no input {i}")
        name = node.input[i]
        if name in self.constants:
            self._fail(node, f"input {i} ({what}) must be computed from the graph inputs, not a constant; "
                             f"received constant {name!r}")
        if name not in self.tensors:
            self._fail(node, f"input {i} ({name!r}) is not produced by an earlier node, an initializer or a graph "
                             f"input (the nodes must be in topological order); received input {name!r}")
        return name

    def _view(self, name, layout):
        """The symbolic tensor of ONNX tensor ``name`` in ``layout``, transposing it once if needed."""
        tensor = self.tensors[name]
        if layout in tensor.views:
            return tensor.views[layout]
        source = tensor.views[tensor.primary]
        if tensor.rank != 4:
            raise AssertionError(f"only 4-D tensors have an NHWC view; {name!r} has rank {tensor.rank}")
        dims, suffix = ((2, 3, 1), "_nhwc") if layout == _NHWC else ((3, 1, 2), "_nchw")
        sample = source.shape[1:]
        target = tuple(sample[d - 1] for d in dims)
        moved = [d for d in dims if sample[d - 1] != 1]
        layer_name = self._unique(_layer_name(name + suffix))
        if moved == sorted(moved):   # only size-1 axes move: the memory order is the same, a reshape will do
            view = L.Reshape(target, name=layer_name)(source)
        else:
            view = L.Permute(dims, name=layer_name)(source)
        tensor.views[layout] = view
        return view

    def _primary(self, name):
        tensor = self.tensors[name]
        return tensor.views[tensor.primary], tensor.primary

    def _put(self, node, symbolic, layout, index=0):
        self.tensors[node.output[index]] = _Tensor(symbolic, layout)

    def _alias(self, node, source_name):
        self.tensors[node.output[0]] = self.tensors[source_name]
        if source_name in self.nonnegative:
            self.nonnegative.add(node.output[0])

    def _no_extra_outputs(self, node, first_extra, what):
        for name in node.output[first_extra:]:
            if name and (name in self.uses or name in self.graph_outputs):
                self._fail(node, f"output {name!r} ({what}) is used, but fastconv computes only the first output "
                                 f"(inference); received {len(node.output)} outputs")

    def _check_attributes(self, node, attrs, allowed):
        for key in attrs:
            if key not in allowed:
                self._unsupported_attribute(node, key, attrs[key], "absent")

    def _channel_axis(self, layout, rank):
        return rank - 1 if layout == _NHWC else 1

    # --- nodes ---------------------------------------------------------------------------------------------
    def _convert_node(self, index, node):
        attrs = _attributes(self.onnx, node)
        present = [i for i in range(len(node.input)) if self._present(node, i)]
        for i in present:
            name = node.input[i]
            if name not in self.constants and name not in self.tensors:
                self._fail(node, f"input {i} ({name!r}) is not produced by an earlier node, an initializer or a "
                                 f"graph input (the nodes must be in topological order); received input {name!r}")
        all_constant = all(node.input[i] in self.constants for i in present)
        if node.op_type in _CONSTANT_OPS and (all_constant or node.op_type == "Shape"):
            self._evaluate_constant(node, attrs)
            return
        if node.op_type not in _HANDLERS:
            self._fail(node, f"operator {node.op_type} is supported on constants only; received input "
                             f"{next(node.input[i] for i in present if node.input[i] not in self.constants)!r} "
                             f"computed from the graph inputs")
        if all_constant:
            self._fail(node, f"all inputs are constants: fastconv does not evaluate {node.op_type} at load time; "
                             f"received constant inputs {[node.input[i] for i in present]}")
        try:
            _HANDLERS[node.op_type](self, index, node, attrs)
        except ValueError as exc:   # a layer refusing its arguments: say which node asked for them
            if str(exc).startswith("ONNX node"):
                raise
            self._fail(node, f"cannot be converted: {exc}")
        if node.op_type in ("Relu", "Sigmoid", "Softmax") or (
                node.op_type in _KEEPS_NONNEGATIVE
                and all(node.input[i] in self.nonnegative for i in present if node.input[i] in self.tensors)):
            self.nonnegative.add(node.output[0])

    # --- padding helpers -----------------------------------------------------------------------------------
    def _explicit_pads(self, node, attrs, size, kernel, strides, dilations):
        """((top, bottom), (left, right)) from ``pads`` / ``auto_pad`` for input rows/cols ``size``."""
        auto_pad = attrs.get("auto_pad", "NOTSET")
        effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        if auto_pad == "NOTSET":
            pads = list(attrs.get("pads", [0, 0, 0, 0]))
            if len(pads) != 4 or min(pads) < 0:
                self._unsupported_attribute(node, "pads", pads, "4 non-negative ints (2-D)")
            return ((pads[0], pads[2]), (pads[1], pads[3]))
        if "pads" in attrs and any(attrs["pads"]):
            self._unsupported_attribute(node, "pads", attrs["pads"], f"absent with auto_pad={auto_pad!r}")
        if auto_pad == "VALID":
            return ((0, 0), (0, 0))
        if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
            self._unsupported_attribute(node, "auto_pad", auto_pad, 'one of "NOTSET", "VALID", "SAME_UPPER", '
                                                                    '"SAME_LOWER"')
        pads = []
        for n, k, s in zip(size, effective, strides):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return tuple(pads)

    @staticmethod
    def _same_pads(size, kernel, strides, dilations):
        effective = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
        return _validation.resolve_padding("same", size, effective, strides)

    def _spatial_input(self, node, what="input"):
        """(symbolic input in the spatial layout, its (rows, cols), channels) of a 4-D image tensor."""
        name = self._tensor_input(node, 0, what)
        tensor = self.tensors[name]
        if tensor.rank != 4:
            self._fail(node, f"input {name!r} must be a 4-D (N, C, H, W) image batch (1-D and 3-D "
                             f"{node.op_type} are not supported); received a {tensor.rank}-D tensor")
        c, h, w = tensor.onnx_shape
        return self._view(name, self.spatial), (h, w), c

    def _pad_layer(self, node, x, pads, suffix="_pad"):
        return L.ZeroPadding2D(pads, data_format=self._data_format(), name=self._name(node, suffix))(x)

    def _data_format(self):
        return "channels_last" if self.channels_last else "channels_first"

    def _ints(self, node, attrs, key, default, length=2, minimum=1):
        value = list(attrs.get(key, default))
        if len(value) != length or min(value) < minimum:
            self._unsupported_attribute(node, key, value, f"{length} ints of at least {minimum}")
        return tuple(int(v) for v in value)

    # --- fused bias ----------------------------------------------------------------------------------------
    def _following_bias(self, index, node, channels, rank, channel_axis):
        """A constant added to this node's output by the next node alone, as a (channels,) bias vector; the Add
        is then folded into this layer (marked fused, its output aliased to ours)."""
        out = node.output[0]
        users = self.uses.get(out, [])
        if out in self.graph_outputs or len(users) != 1:
            return None
        add = self.graph.node[users[0]]
        if add.op_type != "Add" or len(add.input) != 2 or add.input[0] == add.input[1]:
            return None
        other = add.input[1] if add.input[0] == out else add.input[0]
        if other not in self.constants or self.constants[other].dtype.kind != "f":
            return None
        constant = self.constants[other]
        if constant.ndim > rank or (constant.ndim == rank and constant.shape[0] != 1):
            return None
        full = constant.reshape((1,) * (rank - constant.ndim) + constant.shape)
        if any(d != 1 for i, d in enumerate(full.shape) if i != channel_axis) or \
                full.shape[channel_axis] not in (1, channels):
            return None
        self.fused.add(users[0])
        self._fused_outputs.append((add, out))
        return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float32)

    def _finish_fused(self):
        for add, out in self._fused_outputs:
            self.tensors[add.output[0]] = self.tensors[out]
            self._check_declared(add)
        self._fused_outputs = []

    # --- layers from nodes ---------------------------------------------------------------------------------
    def _conv(self, index, node, attrs):
        self._check_attributes(node, attrs, {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"})
        x, size, channels = self._spatial_input(node)
        weight = self._weight(node, 1, "W")
        if weight.ndim != 4:
            self._fail(node, f"input 1 (W) must be a 4-D (out, in / group, kH, kW) weight; received shape "
                             f"{weight.shape}")
        filters, per_group, kh, kw = weight.shape
        if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != (kh, kw):
            self._unsupported_attribute(node, "kernel_shape", attrs["kernel_shape"], f"W's ({kh}, {kw})")
        group = int(attrs.get("group", 1))
        if group < 1 or channels != per_group * group or filters % group:
            self._unsupported_attribute(node, "group", group, f"a divisor of the {channels} input channels and "
                                                              f"{filters} filters with W of shape {weight.shape}")
        strides = self._ints(node, attrs, "strides", (1, 1))
        dilations = self._ints(node, attrs, "dilations", (1, 1))
        bias = self._weight(node, 2, "B", (filters,)) if self._present(node, 2) else None
        pads = self._explicit_pads(node, attrs, size, (kh, kw), strides, dilations)
        padding = self._padding_mode(pads, size, (kh, kw), strides, dilations)
        if padding is None:
            x, padding = self._pad_layer(node, x, pads), "valid"
        extra = self._following_bias(index, node, filters, 4, 1)
        if extra is not None:
            bias = extra if bias is None else bias + extra
        options = dict(strides=strides, padding=padding, data_format=self._data_format(), dilation_rate=dilations,
                       use_bias=bias is not None, name=self._name(node))
        if group == channels and group > 1:
            multiplier = filters // channels
            layer = L.DepthwiseConv2D((kh, kw), depth_multiplier=multiplier, **options)
            kernel = weight.reshape(channels, multiplier, kh, kw).transpose(2, 3, 0, 1)
        else:
            layer = L.Conv2D(filters, (kh, kw), groups=group, **options)
            kernel = _layout.oihw_to_hwio(weight)
        y = layer(x)
        layer.set_weights([kernel] + ([bias] if bias is not None else []))
        self._put(node, y, self.spatial)
        self._finish_fused()

    def _padding_mode(self, pads, size, kernel, strides, dilations):
        """"valid" or "same" where that is exactly ``pads``, else None."""
        if pads == ((0, 0), (0, 0)):
            return "valid"
        if pads == self._same_pads(size, kernel, strides, dilations):
            return "same"
        return None

    def _pool_geometry(self, node, attrs, size):
        kernel = self._ints(node, attrs, "kernel_shape", ())
        strides = self._ints(node, attrs, "strides", (1, 1))
        dilations = self._ints(node, attrs, "dilations", (1, 1))
        if dilations != (1, 1):
            self._unsupported_attribute(node, "dilations", list(dilations), "[1, 1]")
        pads = self._explicit_pads(node, attrs, size, kernel, strides, dilations)
        ceil_mode = int(attrs.get("ceil_mode", 0))
        if ceil_mode not in (0, 1):
            self._unsupported_attribute(node, "ceil_mode", ceil_mode, "0 or 1")
        ceil_pads = pads
        if ceil_mode:
            # ONNX's (and PyTorch's) rule: round the output up, but no window may start in the far padding
            padded = []
            for n, (before, after), k, s in zip(size, pads, kernel, strides):
                out = -(-(n + before + after - k) // s) + 1
                if (out - 1) * s >= n + before:
                    out -= 1
                padded.append((before, max(after, (out - 1) * s + k - n - before)))
            ceil_pads = tuple(padded)
        for n, (before, after), k in zip(size, ceil_pads, kernel):
            if n + before + after < k:
                self._fail(node, f"the input ({size[0]}, {size[1]}) is smaller than the window; received "
                                 f"kernel_shape={list(kernel)}")
        return kernel, strides, pads, ceil_pads, ceil_mode

    def _max_pool(self, index, node, attrs):
        self._check_attributes(node, attrs, {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                                             "storage_order", "strides"})
        self._no_extra_outputs(node, 1, "Indices")
        x, size, _ = self._spatial_input(node)
        kernel, strides, pads, ceil_pads, ceil_mode = self._pool_geometry(node, attrs, size)
        # Padded cells never win a max: that is "same" padding, or zeros when no input value is below zero.
        padding = self._padding_mode(ceil_pads, size, kernel, strides, (1, 1))
        if padding is None:
            nonnegative = node.input[0] in self.nonnegative
            if not nonnegative or any(p >= k for pair, k in zip(ceil_pads, kernel) for p in pair):
                what = "ceil_mode" if ceil_mode and ceil_pads != pads else "pads"
                value = ceil_mode if what == "ceil_mode" else attrs.get("pads", attrs.get("auto_pad"))
                self._unsupported_attribute(
                    node, what, value,
                    f'a padding MaxPooling2D can express: none, or "same" for this input size '
                    f'(pads {self._same_pads(size, kernel, strides, (1, 1))} as ((top, bottom), (left, right))), '
                    f'or any padding after a Relu/Sigmoid (where zero padding is exact); the padding here is '
                    f'{ceil_pads}')
            x, padding = self._pad_layer(node, x, ceil_pads), "valid"
        layer = L.MaxPooling2D(kernel, strides=strides, padding=padding, data_format=self._data_format(),
                               name=self._name(node))
        self._put(node, layer(x), self.spatial)

    def _average_pool(self, index, node, attrs):
        self._check_attributes(node, attrs, {"auto_pad", "ceil_mode", "count_include_pad", "dilations",
                                             "kernel_shape", "pads", "strides"})
        x, size, _ = self._spatial_input(node)
        kernel, strides, pads, ceil_pads, ceil_mode = self._pool_geometry(node, attrs, size)
        include = int(attrs.get("count_include_pad", 0))
        same = self._same_pads(size, kernel, strides, (1, 1))
        if ceil_pads == ((0, 0), (0, 0)):
            padding = "valid"
        elif include and ceil_pads == pads:
            # the padding counts in every divisor: zeros in front of an unpadded average
            x, padding = self._pad_layer(node, x, pads), "valid"
        elif not include and ceil_pads == same:
            padding = "same"  # padded cells are left out of each divisor, as in "same" average pooling
        else:
            if ceil_pads != pads:
                what, value = "ceil_mode", ceil_mode
            else:
                what, value = "pads", attrs.get("pads", attrs.get("auto_pad"))
            expressible = (f'"same" for this input size, {same}' if not include else
                           "explicit pads that ceil_mode does not extend")
            self._unsupported_attribute(
                node, what, value,
                f"a padding AveragePooling2D can express with count_include_pad={include} (none, or "
                f"{expressible}); the padding here is {ceil_pads} as ((top, bottom), (left, right))")
        layer = L.AveragePooling2D(kernel, strides=strides, padding=padding, data_format=self._data_format(),
                                   name=self._name(node))
        self._put(node, layer(x), self.spatial)

    def _global_pool(self, index, node, attrs):
        self._check_attributes(node, attrs, set())
        x, _, _ = self._spatial_input(node)
        cls = L.GlobalAveragePooling2D if node.op_type == "GlobalAveragePool" else L.GlobalMaxPooling2D
        layer = cls(data_format=self._data_format(), keepdims=True, name=self._name(node))
        self._put(node, layer(x), self.spatial)

    def _elementwise(self, node, layer):
        x, layout = self._primary(self._tensor_input(node, 0))
        self._put(node, layer(x), layout)

    def _relu(self, index, node, attrs):
        self._check_attributes(node, attrs, set())
        self._elementwise(node, L.ReLU(name=self._name(node)))

    def _leaky_relu(self, index, node, attrs):
        self._check_attributes(node, attrs, {"alpha"})
        alpha = float(attrs.get("alpha", 0.01))
        if not alpha >= 0:
            self._unsupported_attribute(node, "alpha", alpha, "non-negative")
        self._elementwise(node, L.LeakyReLU(negative_slope=alpha, name=self._name(node)))

    def _activation(self, index, node, attrs):
        self._check_attributes(node, attrs, set())
        self._elementwise(node, L.Activation(node.op_type.lower(), name=self._name(node)))

    def _clip(self, index, node, attrs):
        self._check_attributes(node, attrs, {"min", "max"})
        if self.opset < 11:
            low, high = attrs.get("min", -np.inf), attrs.get("max", np.inf)
        else:
            low = float(self._constant(node, 1, "min").reshape(-1)[0]) if self._present(node, 1) else -np.inf
            high = float(self._constant(node, 2, "max").reshape(-1)[0]) if self._present(node, 2) else np.inf
        if low != 0 or not high > 0:
            self._unsupported_attribute(node, "min", (low, high), "0 with a positive max or none (a capped ReLU) "
                                                                  "as (min, max)")
        layer = L.ReLU(max_value=None if high == np.inf else high, name=self._name(node))
        self._elementwise(node, layer)
        self.nonnegative.add(node.output[0])

    def _prelu(self, index, node, attrs):
        self._check_attributes(node, attrs, set())
        name = self._tensor_input(node, 0)
        x, layout = self._primary(name)
        rank = self.tensors[name].rank
        sample = self.tensors[name].onnx_shape
        slope = self._weight(node, 1, "slope")
        if slope.ndim == rank and slope.shape[0] == 1:
            slope = slope[0]
        if slope.ndim > rank - 1:
            self._fail(node, f"input 1 (slope) must broadcast to one sample of shape {sample}; received shape "
                             f"{slope.shape}")
        full = slope.reshape((1,) * (rank - 1 - slope.ndim) + slope.shape)
        if any(s not in (1, d) for s, d in zip(full.shape, sample)):
            self._fail(node, f"input 1 (slope) must broadcast to one sample of shape {sample}; received shape "
                             f"{slope.shape}")
        if layout == _NHWC:
            full = full.transpose(1, 2, 0)
        shape = x.shape[1:]
        shared = [axis + 1 for axis, (s, d) in enumerate(zip(full.shape, shape)) if s == 1 and d != 1]
        alpha = np.broadcast_to(full, tuple(1 if axis + 1 in shared else d for axis, d in enumerate(shape)))
        layer = L.PReLU(shared_axes=shared or None, name=self._name(node))
        self._put(node, layer(x), layout)
        layer.set_weights([alpha])

    def _softmax(self, index, node, attrs):
        self._check_attributes(node, attrs, {"axis"})
        name = self._tensor_input(node, 0)
        x, layout = self._primary(name)
        rank = self.tensors[name].rank
        axis = int(attrs.get("axis", -1 if self.opset >= 13 else 1))
        if not -rank <= axis < rank or axis % rank == 0:
            self._unsupported_attribute(node, "axis", axis, f"a non-batch axis of the {rank}-D input")
        axis %= rank
        sample = self.tensors[name].onnx_shape
        if self.opset < 13 and any(d != 1 for d in sample[axis:]):
            # before opset 13 the softmax runs over all the axes from `axis` on, flattened together
            self._unsupported_attribute(node, "axis", axis, f"the last non-unit axis of the input (opset "
                                                            f"{self.opset} normalises over every axis from axis on; "
                                                            f"input sample shape {sample})")
        if layout == _NHWC:
            axis = {1: 3, 2: 1, 3: 2}[axis]
        self._put(node, L.Softmax(axis=axis, name=self._name(node))(x), layout)

    def _batch_norm(self, index, node, attrs):
        self._check_attributes(node, attrs, {"epsilon", "momentum", "spatial", "training_mode", "is_test",
                                             "consumed_inputs"})
        if int(attrs.get("training_mode", 0)) != 0:
            self._unsupported_attribute(node, "training_mode", attrs["training_mode"], "0 (inference)")
        if int(attrs.get("spatial", 1)) != 1:
            self._unsupported_attribute(node, "spatial", attrs["spatial"], "1 (per-channel statistics)")
        self._no_extra_outputs(node, 1, "training statistics")
        name = self._tensor_input(node, 0)
        x, layout = self._primary(name)
        rank = self.tensors[name].rank
        channels = self.tensors[name].onnx_shape[0]
        scale, offset, mean, variance = (self._weight(node, i, what, (channels,))
                                         for i, what in enumerate(("scale", "B", "input_mean", "input_var"),
                                                                  start=1))
        momentum = float(attrs.get("momentum", 0.9))
        if not 0 <= momentum <= 1:
            self._unsupported_attribute(node, "momentum", momentum, "in [0, 1]")
        epsilon = float(attrs.get("epsilon", 1e-5))
        if not epsilon >= 0:
            self._unsupported_attribute(node, "epsilon", epsilon, "non-negative")
        layer = L.BatchNormalization(axis=self._channel_axis(layout, rank), momentum=momentum, epsilon=epsilon,
                                     name=self._name(node))
        self._put(node, layer(x), layout)
        layer.set_weights([scale, offset, mean, variance])

    def _dense(self, index, node, x, kernel, bias):
        """Dense on the last axis of ``x`` (ONNX layout), with a following constant Add folded in."""
        rank = len(x.shape)
        extra = self._following_bias(index, node, kernel.shape[1], rank, rank - 1)
        if extra is not None:
            bias = extra if bias is None else bias + extra
        layer = L.Dense(kernel.shape[1], use_bias=bias is not None, name=self._name(node))
        self._put(node, layer(x), _ONNX)
        layer.set_weights([kernel] + ([bias] if bias is not None else []))
        self._finish_fused()

    def _gemm(self, index, node, attrs):
        self._check_attributes(node, attrs, {"alpha", "beta", "transA", "transB"})
        if int(attrs.get("transA", 0)):
            self._unsupported_attribute(node, "transA", attrs["transA"], "0 (A must be the batch of rows)")
        name = self._tensor_input(node, 0, "A")
        if self.tensors[name].rank != 2:
            self._fail(node, f"input 0 (A) must be 2-D; received a {self.tensors[name].rank}-D tensor")
        b = self._weight(node, 1, "B")
        if b.ndim != 2:
            self._fail(node, f"input 1 (B) must be 2-D; received shape {b.shape}")
        kernel = b.T if int(attrs.get("transB", 0)) else b
        features = self.tensors[name].onnx_shape[0]
        if kernel.shape[0] != features:
            self._fail(node, f"input 1 (B) must have {features} rows (after transB); received shape {b.shape} "
                             f"with transB={attrs.get('transB', 0)}")
        units = kernel.shape[1]
        kernel = np.ascontiguousarray(kernel * np.float32(attrs.get("alpha", 1.0)), dtype=np.float32)
        bias = None
        if self._present(node, 2):
            c = self._weight(node, 2, "C")
            if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or (c.ndim and c.shape[-1] not in (1, units)):
                self._fail(node, f"input 2 (C) must broadcast as one row of {units} values (a per-sample C is not "
                                 f"supported); received shape {c.shape}")
            bias = np.broadcast_to(c.reshape(-1), (units,)) * np.float32(attrs.get("beta", 1.0))
        self._dense(index, node, self._view(name, _ONNX), kernel, bias)

    def _matmul(self, index, node, attrs):
        self._check_attributes(node, attrs, set())
        if self._is_constant(node, 0):
            self._fail(node, f"input 0 must be the tensor and input 1 the constant weight; received constant input "
                             f"0 {node.input[0]!r}")
        name = self._tensor_input(node, 0, "A")
        weight = self._weight(node, 1, "B (the weight)")
        if weight.ndim != 2:
            self._fail(node, f"input 1 (B) must be a 2-D (in, out) weight; received shape {weight.shape}")
        features = self.tensors[name].onnx_shape[-1] if self.tensors[name].rank > 1 else None
        if self.tensors[name].rank < 2 or weight.shape[0] != features:
            self._fail(node, f"input 1 (B) must have as many rows as input 0 has features ({features}); received "
                             f"shape {weight.shape}")
        self._dense(index, node, self._view(name, _ONNX), weight, None)

    def _add(self, index, node, attrs):
        self._check_attributes(node, attrs, {"axis", "broadcast"} if self.opset < 7 else set())
        if self.opset < 7 and attrs.get("broadcast", 0):
            self._unsupported_attribute(node, "broadcast", attrs["broadcast"], "0 (opset 7 broadcasting only)")
        constant = [i for i in (0, 1) if self._is_constant(node, i)]
        if constant:
            self._add_constant(node, self._tensor_input(node, 1 - constant[0]), self.constants[node.input[constant[0]]])
            return
        names = [self._tensor_input(node, i) for i in (0, 1)]
        ranks = {self.tensors[n].rank for n in names}
        if len(ranks) != 1:
            self._fail(node, f"both inputs must have the same rank; received shapes "
                             f"{[self.tensors[n].onnx_shape for n in names]} (batch axis excluded)")
        layouts = [set(self.tensors[n].views) for n in names]
        common = layouts[0] & layouts[1]
        layout = (self.spatial if self.spatial in common else next(iter(common))) if common else \
            (self.spatial if ranks == {4} else _ONNX)
        xs = [self._view(n, layout) for n in names]
        self._put(node, L.Add(name=self._name(node))(xs), layout)

    def _add_constant(self, node, name, constant):
        """``x + c`` when ``c`` varies along one axis at most: a frozen BatchNormalization (mean 0, variance 1,
        epsilon 0) whose offset is ``c``, which computes exactly ``x + c``."""
        x, layout = self._primary(name)
        rank = self.tensors[name].rank
        sample = self.tensors[name].onnx_shape
        if constant.dtype.kind != "f":
            self._fail(node, f"the constant operand must be floating-point; received dtype {constant.dtype}")
        if constant.ndim > rank or (constant.ndim == rank and constant.shape[0] != 1):
            self._fail(node, f"the constant operand must broadcast to one sample of shape {sample}; received "
                             f"shape {constant.shape}")
        full = constant.reshape((1,) * (rank - constant.ndim) + constant.shape)[0]
        if any(s not in (1, d) for s, d in zip(full.shape, sample)):
            self._fail(node, f"the constant operand must broadcast to one sample of shape {sample}; received "
                             f"shape {constant.shape}")
        if layout == _NHWC:
            full = full.transpose(1, 2, 0)
        varying = [axis for axis, s in enumerate(full.shape) if s != 1]
        if len(varying) > 1:
            self._fail(node, f"adding a constant that varies along several axes is not supported (only per-channel "
                             f"or scalar constants); received a constant of shape {constant.shape}")
        axis = varying[0] + 1 if varying else rank - 1
        size = x.shape[axis]
        beta = np.broadcast_to(full.reshape(-1), (size,)).astype(np.float32)
        layer = L.BatchNormalization(axis=axis, epsilon=0.0, scale=False, trainable=False, name=self._name(node))
        self._put(node, layer(x), layout)
        layer.set_weights([beta, np.zeros(size, np.float32), np.ones(size, np.float32)])

    def _concat(self, index, node, attrs):
        self._check_attributes(node, attrs, {"axis"})
        names = [self._tensor_input(node, i) for i in range(len(node.input))]
        rank = self.tensors[names[0]].rank
        if any(self.tensors[n].rank != rank for n in names):
            self._fail(node, f"all inputs must have the same rank; received shapes "
                             f"{[self.tensors[n].onnx_shape for n in names]} (batch axis excluded)")
        axis = int(attrs.get("axis", 1))
        if not -rank <= axis < rank or axis % rank == 0:
            self._unsupported_attribute(node, "axis", axis, f"a non-batch axis of the {rank}-D inputs")
        axis %= rank
        if len(names) == 1:
            self._alias(node, names[0])
            return
        layout = self.spatial if rank == 4 else _ONNX
        if layout == _NHWC:
            axis = {1: 3, 2: 1, 3: 2}[axis]
        xs = [self._view(n, layout) for n in names]
        self._put(node, L.Concatenate(axis=axis, name=self._name(node))(xs), layout)

    def _flatten(self, index, node, attrs):
        self._check_attributes(node, attrs, {"axis"})
        name = self._tensor_input(node, 0)
        rank = self.tensors[name].rank
        sample = self.tensors[name].onnx_shape
        axis = int(attrs.get("axis", 1))
        if not -rank <= axis <= rank:
            self._unsupported_attribute(node, "axis", axis, f"in [-{rank}, {rank}]")
        if axis < 0:
            axis += rank
        if axis == 0 or any(d != 1 for d in sample[:axis - 1]):
            self._unsupported_attribute(node, "axis", attrs.get("axis", 1),
                                        f"1 (or an axis after size-1 axes only): this Flatten would merge the batch "
                                        f"axis of a {sample} sample")
        if axis == rank:   # (N, ...) -> (N * ..., 1): only possible with size-1 sample axes, checked above
            layer = L.Reshape((1,), name=self._name(node))
        else:
            layer = L.Flatten(data_format="channels_last", name=self._name(node))   # plain C-order reshape
        self._put(node, layer(self._view(name, _ONNX)), _ONNX)

    def _reshape(self, index, node, attrs):
        self._check_attributes(node, attrs, {"allowzero", "shape"} if self.opset < 5 else {"allowzero"})
        name = self._tensor_input(node, 0, "data")
        sample = self.tensors[name].onnx_shape
        if self.opset < 5:
            target = np.asarray(attrs.get("shape", []), dtype=np.int64)
            mask = np.zeros(target.shape, dtype=bool)
        else:
            target = self._constant(node, 1, "shape")
            mask = self.batch_entries.get(node.input[1], np.zeros(target.shape, dtype=bool))
        if target.dtype.kind not in "iu" or target.ndim != 1 or target.size < 2:
            self._fail(node, f"input 1 (shape) must be a 1-D int tensor of at least 2 entries (batch, ...); "
                             f"received {target.tolist()!r}")
        target = [int(v) for v in target]
        allowzero = int(attrs.get("allowzero", 0))
        if allowzero and 0 in target:
            self._unsupported_attribute(node, "allowzero", allowzero, "0 when the shape holds a 0")
        first = target[0]
        rest = []
        for i, d in enumerate(target[1:], start=1):
            if d == 0:
                if i - 1 >= len(sample):
                    self._fail(node, f"shape entry {i} is 0 (copy) but the input has only {len(sample) + 1} axes; "
                                     f"received shape {target}")
                d = sample[i - 1]
            elif d < -1:
                self._fail(node, f"shape entries must be -1, 0 or positive; received shape {target}")
            rest.append(d)
        size = math.prod(sample)
        keeps_batch = bool(mask[0]) or first == 0 or (self.batch is not None and first == self.batch) or (
            first == -1 and -1 not in rest and math.prod(rest) == size)
        if mask[1:].any() or not keeps_batch or rest.count(-1) > 1:
            self._fail(node, f"the shape must keep the batch axis first (0, -1, the batch size, or the batch size "
                             f"read with Shape) and not use the batch size elsewhere; received shape {target}")
        if -1 in rest:
            known = math.prod(d for d in rest if d != -1)
            if known == 0 or size % known:
                self._fail(node, f"cannot reshape samples of shape {sample} to {target}; received shape {target}")
            rest = [size // known if d == -1 else d for d in rest]
        if math.prod(rest) != size:
            self._fail(node, f"cannot reshape samples of shape {sample} ({size} values) to {target}; received "
                             f"shape {target}")
        if tuple(rest) == sample:
            self._alias(node, name)
            return
        layer = L.Reshape(tuple(rest), name=self._name(node))
        self._put(node, layer(self._view(name, _ONNX)), _ONNX)

    def _transpose(self, index, node, attrs):
        self._check_attributes(node, attrs, {"perm"})
        name = self._tensor_input(node, 0)
        rank = self.tensors[name].rank
        perm = [int(p) for p in attrs.get("perm", range(rank - 1, -1, -1))]
        if sorted(perm) != list(range(rank)) or perm[0] != 0:
            self._unsupported_attribute(node, "perm", perm, f"a permutation of 0..{rank - 1} keeping the batch "
                                                            f"axis 0 first")
        if perm == list(range(rank)):
            self._alias(node, name)
            return
        layer = L.Permute(tuple(perm[1:]), name=self._name(node))
        self._put(node, layer(self._view(name, _ONNX)), _ONNX)

    def _dropout(self, index, node, attrs):
        self._check_attributes(node, attrs, {"ratio", "is_test", "seed", "consumed_inputs"})
        self._no_extra_outputs(node, 1, "mask")
        rate = float(attrs.get("ratio", 0.5))
        if self._present(node, 1):
            rate = float(self._constant(node, 1, "ratio").reshape(-1)[0])
        if self._present(node, 2) and bool(self._constant(node, 2, "training_mode").reshape(-1)[0]):
            self._fail(node, "input 2 (training_mode) must be false: fastconv converts inference graphs; received "
                             "training_mode=True")
        if not 0 <= rate < 1:
            self._unsupported_attribute(node, "ratio", rate, "in [0, 1)")
        self._elementwise(node, L.Dropout(rate, name=self._name(node)))

    def _identity(self, index, node, attrs):
        self._check_attributes(node, attrs, set())
        self._alias(node, self._tensor_input(node, 0))

    def _cast(self, index, node, attrs):
        self._check_attributes(node, attrs, {"to", "saturate", "round_mode"})
        to = attrs.get("to")
        if to not in (self.onnx.TensorProto.FLOAT, self.onnx.TensorProto.DOUBLE, self.onnx.TensorProto.FLOAT16):
            self._unsupported_attribute(node, "to", to, "a floating-point type (FLOAT) for a tensor")
        self._alias(node, self._tensor_input(node, 0))

    def _pad(self, index, node, attrs):
        self._check_attributes(node, attrs, {"mode", "pads", "value"} if self.opset < 11 else {"mode"})
        mode = attrs.get("mode", "constant")
        if mode != "constant":
            self._unsupported_attribute(node, "mode", mode, '"constant" (zero padding)')
        name = self._tensor_input(node, 0, "data")
        rank = self.tensors[name].rank
        if self.opset < 11:
            pads, value = list(attrs.get("pads", [])), float(attrs.get("value", 0.0))
            axes = list(range(rank))
        else:
            pads = [int(p) for p in self._constant(node, 1, "pads").reshape(-1)]
            value = 0.0
            if self._present(node, 2):
                value = float(self._constant(node, 2, "constant_value").reshape(-1)[0])
            axes = list(range(rank))
            if self._present(node, 3):
                axes = [int(a) % rank for a in self._constant(node, 3, "axes").reshape(-1)]
        if value != 0:
            self._fail(node, f"the padding value must be 0 (ZeroPadding2D); received constant_value={value!r}")
        if len(pads) != 2 * len(axes) or min(pads, default=0) < 0:
            self._unsupported_attribute(node, "pads", pads, f"{2 * len(axes)} non-negative ints")
        per_axis = {axis: (pads[i], pads[i + len(axes)]) for i, axis in enumerate(axes)}
        if any(p != (0, 0) for axis, p in per_axis.items() if axis not in (2, 3)) or rank != 4:
            if all(p == (0, 0) for p in per_axis.values()):
                self._alias(node, name)
                return
            self._unsupported_attribute(node, "pads", pads, "zero except on the spatial axes 2 and 3 of a 4-D "
                                                            "(N, C, H, W) tensor")
        spatial = (per_axis.get(2, (0, 0)), per_axis.get(3, (0, 0)))
        if spatial == ((0, 0), (0, 0)):
            self._alias(node, name)
            return
        x = self._view(name, self.spatial)
        self._put(node, self._pad_layer(node, x, spatial, suffix=""), self.spatial)

    # --- constants -----------------------------------------------------------------------------------------
    def _evaluate_constant(self, node, attrs):
        """Evaluate a shape computation on constants with NumPy (Shape reads a tensor's static shape)."""
        op = node.op_type
        inputs = [self.constants[n] if n in self.constants else None for n in node.input]
        masks = [self.batch_entries.get(n) if n else None for n in node.input]
        batchy = any(m is not None and m.any() for m in masks)
        if batchy and op not in _STRUCTURAL_OPS:
            self._fail(node, f"computes with the batch size read by Shape, which fastconv models leave free; "
                             f"received op_type={op!r} on {[n for n, m in zip(node.input, masks) if m is not None]}")
        size = self._constant_result_size(node, op, attrs, inputs)
        if size > _MAX_CONSTANT_ELEMENTS:
            self._fail(node, f"would compute a constant of {size} elements (at most {_MAX_CONSTANT_ELEMENTS} are "
                             f"evaluated at load time); received inputs of shapes "
                             f"{[None if v is None else v.shape for v in inputs]}")
        try:
            value, mask = self._constant_value(node, op, attrs, inputs, masks)
        except ValueError as exc:
            if str(exc).startswith("ONNX node"):
                raise
            self._fail(node, f"cannot evaluate it on its constant inputs ({exc}); received inputs of shapes "
                             f"{[None if v is None else v.shape for v in inputs]}")
        except Exception as exc:  # NumPy refusing a malformed constant computation
            self._fail(node, f"cannot evaluate it on its constant inputs ({type(exc).__name__}: {exc}); received "
                             f"inputs of shapes {[None if v is None else v.shape for v in inputs]}")
        value = np.asarray(value)
        if value.size > _MAX_CONSTANT_ELEMENTS:
            self._fail(node, f"computes a constant of {value.size} elements; received output shape {value.shape}")
        self.constants[node.output[0]] = value
        if mask is not None and np.asarray(mask).any():
            self.batch_entries[node.output[0]] = np.asarray(mask, dtype=bool)

    @staticmethod
    def _constant_result_size(node, op, attrs, inputs):
        """An upper bound of the number of elements ``op`` would produce, computed before it runs."""
        arrays = [v for v in inputs if v is not None]
        try:
            if op == "ConstantOfShape":
                return math.prod(max(int(d), 0) for d in arrays[0].reshape(-1))
            if op == "Concat":
                return sum(a.size for a in arrays)
            if op == "Gather":
                data, indices = arrays
                axis = int(attrs.get("axis", 0)) % max(data.ndim, 1)
                return data.size // max(data.shape[axis], 1) * indices.size if data.ndim else indices.size
            if op in ("Add", "Sub", "Mul", "Div"):
                return math.prod(np.broadcast_shapes(*(a.shape for a in arrays)))
        except (ValueError, IndexError, TypeError):
            return 0   # malformed: the evaluation itself reports it
        return max((a.size for a in arrays), default=0)

    def _constant_value(self, node, op, attrs, inputs, masks):
        """(value, batch mask or None). Structural ops apply the same operation to the mask."""
        if op == "Constant":
            for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
                if key in attrs:
                    value = attrs[key]
                    if key == "value":
                        return self._array(value, f"the value of Constant {node.name!r}"), None
                    return np.asarray(value, dtype=np.float32 if "float" in key else np.int64), None
            key = next(iter(attrs), "value")
            self._unsupported_attribute(node, key, attrs.get(key), "value, value_float(s) or value_int(s)")
        if op == "Shape":
            if node.input[0] in self.constants:
                return np.asarray(self.constants[node.input[0]].shape, dtype=np.int64), None
            tensor = self.tensors[self._tensor_input(node, 0)]
            shape = np.asarray((self.batch or 1,) + tensor.onnx_shape, dtype=np.int64)
            mask = np.zeros(shape.shape, dtype=bool)
            mask[0] = True
            start, end = attrs.get("start", 0), attrs.get("end", None)
            return shape[start:end], mask[start:end]
        if op == "ConstantOfShape":
            shape = [int(d) for d in inputs[0].reshape(-1)]
            if math.prod(shape) > _MAX_CONSTANT_ELEMENTS or min(shape, default=0) < 0:
                self._fail(node, f"the shape must be non-negative and at most {_MAX_CONSTANT_ELEMENTS} elements; "
                                 f"received shape {shape}")
            fill = self._array(attrs["value"], "its value").reshape(-1) if "value" in attrs else \
                np.zeros(1, np.float32)
            return np.full(shape, fill[0], dtype=fill.dtype), None
        if op in ("Identity",):
            return inputs[0], masks[0]
        if op == "Cast":
            dtype = self.onnx.helper.tensor_dtype_to_np_dtype(attrs["to"])
            return inputs[0].astype(dtype), masks[0]
        if op == "Concat":
            axis = int(attrs.get("axis", 0))
            if any(m is not None for m in masks):
                mask = np.concatenate([m if m is not None else np.zeros(a.shape, bool)
                                       for a, m in zip(inputs, masks)], axis=axis)
                return np.concatenate(inputs, axis=axis), mask
            return np.concatenate(inputs, axis=axis), None
        if op == "Reshape":
            target = [int(d) for d in inputs[1]]
            if not int(attrs.get("allowzero", 0)):
                target = [inputs[0].shape[i] if d == 0 else d for i, d in enumerate(target)]
            mask = None if masks[0] is None else masks[0].reshape(target)
            return inputs[0].reshape(target), mask
        if op == "Transpose":
            perm = attrs.get("perm", list(range(inputs[0].ndim - 1, -1, -1)))
            mask = None if masks[0] is None else np.transpose(masks[0], perm)
            return np.transpose(inputs[0], perm), mask
        if op == "Gather":
            axis = int(attrs.get("axis", 0))
            mask = None if masks[0] is None else np.take(masks[0], inputs[1], axis=axis)
            return np.take(inputs[0], inputs[1], axis=axis), mask
        if op == "Unsqueeze":
            axes = attrs["axes"] if self.opset < 13 else [int(a) for a in inputs[1].reshape(-1)]
            rank = inputs[0].ndim + len(axes)
            value, mask = inputs[0], masks[0]
            for axis in sorted(a % rank for a in axes):
                value = np.expand_dims(value, axis)
                mask = None if mask is None else np.expand_dims(mask, axis)
            return value, mask
        if op == "Squeeze":
            if self.opset < 13:
                axes = attrs.get("axes")
            else:
                axes = None if len(inputs) < 2 or inputs[1] is None else [int(a) for a in inputs[1].reshape(-1)]
            axes = tuple(a % inputs[0].ndim for a in axes) if axes is not None else None
            mask = None if masks[0] is None else np.squeeze(masks[0], axis=axes)
            return np.squeeze(inputs[0], axis=axes), mask
        if op == "Slice":
            data = inputs[0]
            if self.opset < 10:
                starts, ends = attrs["starts"], attrs["ends"]
                axes, steps = attrs.get("axes", list(range(len(starts)))), [1] * len(starts)
            else:
                starts, ends = [int(v) for v in inputs[1]], [int(v) for v in inputs[2]]
                axes = [int(v) for v in inputs[3]] if len(inputs) > 3 and inputs[3] is not None else \
                    list(range(len(starts)))
                steps = [int(v) for v in inputs[4]] if len(inputs) > 4 and inputs[4] is not None else \
                    [1] * len(starts)
            index = [slice(None)] * data.ndim
            for start, end, axis, step in zip(starts, ends, axes, steps):
                if step == 0:
                    self._fail(node, f"slice steps must not be 0; received steps {steps}")
                index[axis % data.ndim] = slice(start, end, step)
            mask = None if masks[0] is None else masks[0][tuple(index)]
            return data[tuple(index)], mask
        if op in ("Add", "Sub", "Mul", "Div"):
            a, b = inputs
            if op == "Div" and a.dtype.kind in "iu" and b.dtype.kind in "iu":
                quotient = np.abs(a) // np.abs(b)    # ONNX integer division truncates toward zero
                return (quotient * np.sign(a) * np.sign(b)).astype(np.result_type(a, b)), None
            fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
            return fn(a, b).astype(np.result_type(a, b)), None
        raise AssertionError(op)


_HANDLERS = {
    "Conv": _Converter._conv,
    "MaxPool": _Converter._max_pool,
    "AveragePool": _Converter._average_pool,
    "GlobalAveragePool": _Converter._global_pool,
    "GlobalMaxPool": _Converter._global_pool,
    "Relu": _Converter._relu,
    "LeakyRelu": _Converter._leaky_relu,
    "PRelu": _Converter._prelu,
    "Sigmoid": _Converter._activation,
    "Tanh": _Converter._activation,
    "Clip": _Converter._clip,
    "Softmax": _Converter._softmax,
    "BatchNormalization": _Converter._batch_norm,
    "Gemm": _Converter._gemm,
    "MatMul": _Converter._matmul,
    "Add": _Converter._add,
    "Concat": _Converter._concat,
    "Flatten": _Converter._flatten,
    "Reshape": _Converter._reshape,
    "Transpose": _Converter._transpose,
    "Dropout": _Converter._dropout,
    "Pad": _Converter._pad,
    "Identity": _Converter._identity,
    "Cast": _Converter._cast,
}
# Evaluated with NumPy when every input is a constant (Shape: when its input's shape is known).
_CONSTANT_OPS = {"Constant", "ConstantOfShape", "Shape", "Identity", "Cast", "Concat", "Reshape", "Transpose",
                 "Gather", "Unsqueeze", "Squeeze", "Slice", "Add", "Sub", "Mul", "Div"}
# Those that only move entries around, so may carry the batch size read by Shape into a Reshape's shape.
_STRUCTURAL_OPS = {"Shape", "Identity", "Cast", "Concat", "Reshape", "Transpose", "Gather", "Unsqueeze", "Squeeze",
                   "Slice"}

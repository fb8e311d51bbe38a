"""The Keras-style ``model.summary()`` table."""
from fastconv.layers.base import format_shape


def _size(n_params, itemsize):
    size = float(n_params * itemsize)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} GB"


def summary_lines(model, line_length=None, positions=None):
    """The lines of ``model.summary()``.

    Columns: ``Layer (type)``, ``Output Shape``, ``Param #``; then total, trainable and non-trainable parameter
    counts with their size in memory.
    """
    graph = getattr(model, "_graph", None)
    connected = graph is not None and type(model).__name__ != "Sequential"
    rows = []
    for layer in model.layers:
        shape = layer.output_shape
        shape = ", ".join(format_shape(s) for s in shape) if isinstance(shape, list) else format_shape(shape)
        row = [f" {layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}"]
        if connected:
            sources = [f"{t.layer.name}[{t.node.index}][{t.index}]" for node in graph.nodes if node.layer is layer
                       for t in node.inputs]
            row.append(", ".join(sources) if sources else "-")
        rows.append(tuple(row))
    headers = (" Layer (type)", "Output Shape", "Param #") + (("Connected to",) if connected else ())
    line_length = line_length or (98 if connected else 65)
    positions = positions or ([0.33, 0.55, 0.67, 1.0] if connected else [0.45, 0.85, 1.0])
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    widths = [positions[0]] + [b - a for a, b in zip(positions, positions[1:])]
    # Widen a column rather than cut a name or a shape.
    for i in range(len(headers)):
        longest = max([len(headers[i])] + [len(row[i]) for row in rows]) + 2
        widths[i] = max(widths[i], longest)
    total_width = sum(widths)

    def fmt(cells):
        return "".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    trainable = sum(w.value.size for w in model.trainable_weights)
    non_trainable = sum(w.value.size for w in model.non_trainable_weights)
    itemsize = model.weights[0].dtype.itemsize if model.weights else 4
    lines = [f'Model: "{model.name}"', "_" * total_width, fmt(headers), "=" * total_width]
    for i, row in enumerate(rows):
        lines.append(fmt(row))
        lines.append("=" * total_width if i == len(rows) - 1 else "_" * total_width)
    if not rows:
        lines.append("=" * total_width)
    lines += [f"Total params: {trainable + non_trainable:,} ({_size(trainable + non_trainable, itemsize)})",
              f"Trainable params: {trainable:,} ({_size(trainable, itemsize)})",
              f"Non-trainable params: {non_trainable:,} ({_size(non_trainable, itemsize)})",
              "_" * total_width]
    return lines

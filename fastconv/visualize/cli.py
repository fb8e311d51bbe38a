"""``fastconv visualize MODEL_FILE IMAGE_FILE --out DIR``: the three classic views of a convnet for one image.

Writes into DIR (created if missing), and lists:

- ``input.png``: the image as the model sees it (resized to its input, grey or RGB as its channels);
- ``activations_<position>_<layer>.png``: one grid per layer with a spatial output, a tile per channel;
- ``filters_<layer>.png``: the patterns that excite the first filters of one convolution layer most;
- ``gradcam_heatmap.png`` and ``gradcam_overlay.png``: the Grad-CAM heatmap of the predicted (or chosen) class,
  alone and blended over the original image (enlarged when it is smaller than 224 pixels).

File names are built from layer names with every character outside ``[A-Za-z0-9_.-]`` replaced, so a model file
can never make the command write outside DIR. Pillow is needed (``pip install Pillow``).
"""
import os
import sys

from fastconv._argtypes import non_negative_int as _non_negative_int
from fastconv._argtypes import positive_float as _positive_float
from fastconv._argtypes import positive_int as _positive_int
from fastconv._argtypes import unit_interval as _alpha

__all__ = ["add_parser", "run"]

#: the overlay is drawn at least this large (shorter side), so a 28 x 28 digit can still be looked at
_MIN_OVERLAY = 224


def add_parser(commands):
    """Add the ``visualize`` sub-command to an argparse sub-parsers object."""
    parser = commands.add_parser(
        "visualize", help="draw a model's intermediate activations, filter patterns and Grad-CAM for one image",
        description="Write into DIR the activation grids of every layer with a spatial output, a grid of filter "
                    "patterns (gradient ascent in input space) and the Grad-CAM heatmap and overlay for IMAGE_FILE, "
                    "and list the files written. The image is read with Pillow, converted to grey or RGB as the "
                    "model's input channels, resized to its input size and multiplied by --rescale.")
    parser.add_argument("model_file", metavar="MODEL_FILE", help="a model saved by model.save (fastconv demo --save)")
    parser.add_argument("image_file", metavar="IMAGE_FILE", help="an image Pillow can read (PNG, JPEG ...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the directory to write the pictures into")
    parser.add_argument("--layers", nargs="+", metavar="NAME",
                        help="the layers to draw activations of (default: every layer with a spatial output)")
    parser.add_argument("--filters-layer", metavar="NAME",
                        help="the layer whose filter patterns to draw (default: the last convolution layer)")
    parser.add_argument("--filters", type=_positive_int, default=64, metavar="N",
                        help="how many filters to draw (default: %(default)s)")
    parser.add_argument("--steps", type=_positive_int, default=40, help="gradient-ascent steps (default: 40)")
    parser.add_argument("--gradcam-layer", metavar="NAME",
                        help="the layer for Grad-CAM (default: the last convolution layer)")
    parser.add_argument("--class-index", type=_non_negative_int, metavar="K",
                        help="the class to explain (default: the top prediction)")
    parser.add_argument("--alpha", type=_alpha, default=0.4, help="the heatmap's weight in the overlay (0.4)")
    parser.add_argument("--rescale", type=_positive_float, default=1 / 255,
                        help="multiplies the 0..255 pixels before the model sees them (default: 1/255, as "
                             "fastconv train and demo expect)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the filter patterns' starting noise")
    parser.set_defaults(run=run)
    return parser


def _fail(message):
    print(f"fastconv visualize: {message}", file=sys.stderr)
    return 1


def _image_input(model):
    """(rows, cols, channels, data_format) of the model's image input, or ValueError."""
    from fastconv.layers.base import format_shape
    from fastconv.visualize import _graph

    shapes = [t.shape for t in model.inputs]
    layout = _graph.input_data_format(model)
    if len(shapes) == 1 and len(shapes[0]) == 4:
        shape = shapes[0]
        rows, cols, channels = (shape[1], shape[2], shape[3]) if layout == "channels_last" else \
            (shape[2], shape[3], shape[1])
        if channels in (1, 3) and rows is not None and cols is not None:
            return rows, cols, channels, layout
    raise ValueError(f"MODEL_FILE must hold a model with one image input of fixed size and 1 or 3 channels; its "
                     f"inputs have shapes {[format_shape(s) for s in shapes]}")


def _enlarged(image):
    from fastconv.visualize.images import resize

    factor = -(-_MIN_OVERLAY // min(image.shape[:2]))
    if factor <= 1:
        return image
    size = (image.shape[0] * factor, image.shape[1] * factor)
    return resize(image.astype(float) / 255.0, size).clip(0.0, 1.0)


def run(args):
    """Run the command for parsed ``args``; returns the exit status."""
    import numpy as np

    import fastconv
    from fastconv import visualize
    from fastconv.visualize import _graph
    from fastconv.visualize.activation_maps import safe_filename
    from fastconv.visualize.filters import _filter_target
    from fastconv.visualize.images import apply_colormap, resize

    try:
        model = fastconv.load_model(args.model_file, compile=False)
    except (ImportError, OSError, ValueError, KeyError) as exc:
        return _fail(f"cannot load MODEL_FILE {args.model_file!r}: {exc}")
    try:
        rows, cols, channels, layout = _image_input(model)
        original = visualize.read_image(args.image_file, "L" if channels == 1 else "RGB")
    except ImportError as exc:
        return _fail(str(exc))
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        return _fail(f"--out must be a directory; received --out {args.out!r}, which is a file")

    pixels = original if original.ndim == 3 else original[:, :, None]
    model_pixels = resize(pixels.astype(np.float64), (rows, cols)) if pixels.shape[:2] != (rows, cols) \
        else pixels.astype(np.float64)
    image = (model_pixels * args.rescale).astype(np.float32)                     # (rows, cols, channels)
    model_input = np.moveaxis(image, -1, 0) if layout == "channels_first" else image
    written = []
    try:
        # Everything a bad option can break is computed before the first file is written.
        scores, classes = visualize.class_scores(model, model_input, args.class_index)
        probabilities = model.predict(model_input[None], verbose=0)[0]
        heatmap = visualize.grad_cam(model, model_input, class_index=args.class_index, layer_name=args.gradcam_layer)
        convs = _graph.conv_layer_names(model)
        filters_layer = args.filters_layer or (convs[-1] if convs else None)
        if filters_layer is None:
            raise ValueError(f"the model has no convolution layer: pass --filters-layer (layers: "
                             f"{_graph.layer_names(model)})")
        _filter_target(model, filters_layer)
        for name in args.layers or []:
            tensor = _graph.layer_tensor(model, name, "--layers")
            if not _graph.is_spatial(tensor):
                raise ValueError(f"--layers: layer {name!r} has output shape {tensor.shape}, which is not an image "
                                 f"batch; layers with spatial outputs: {_graph.spatial_layer_names(model)}")

        os.makedirs(args.out, exist_ok=True)
        written.append(visualize.save_image(os.path.join(args.out, "input.png"),
                                            np.clip(np.round(model_pixels), 0, 255).astype(np.uint8)))
        written += visualize.plot_activations(model, model_input, args.layers, path=args.out)
        written.append(visualize.plot_filters(
            model, filters_layer, n=args.filters,
            path=os.path.join(args.out, f"filters_{safe_filename(filters_layer)}.png"), steps=args.steps,
            seed=args.seed, value_range=(0.0, 255.0 * args.rescale)))
        base = _enlarged(original)
        colours = apply_colormap(resize(heatmap, base.shape[:2]), "jet")
        written.append(visualize.save_image(os.path.join(args.out, "gradcam_heatmap.png"), colours))
        written.append(visualize.save_image(os.path.join(args.out, "gradcam_overlay.png"),
                                            visualize.overlay_heatmap(base, heatmap, alpha=args.alpha)))
    except (ImportError, ValueError) as exc:
        return _fail(str(exc))
    cls = int(classes[0])
    units = len(probabilities)
    shown = probabilities[cls] if units > 1 else (probabilities[0] if cls == 1 else 1 - probabilities[0])
    print(f"Predicted class {cls} (output {float(shown):.4f}, class score {float(scores[0]):.4f})"
          if args.class_index is None else
          f"Explaining class {cls} (output {float(shown):.4f}, class score {float(scores[0]):.4f})")
    for path in written:
        print(path)
    return 0

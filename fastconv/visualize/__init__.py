"""Seeing inside a convnet: intermediate activations, filter patterns and Grad-CAM heatmaps.

The functions that return arrays need only NumPy; writing pictures (``plot_*``, :func:`save_image`) needs Pillow,
imported when called. ``fastconv visualize MODEL_FILE IMAGE_FILE --out DIR`` draws all three for one image.

>>> import numpy as np, fastconv
>>> from fastconv import visualize
>>> from fastconv.layers import Input, Conv2D, MaxPooling2D, Flatten, Dense
>>> model = fastconv.Sequential([Input((16, 16, 1)), Conv2D(4, 3, activation="relu", name="conv"),
...                              MaxPooling2D(2, name="pool"), Flatten(), Dense(2, activation="softmax")])
>>> image = np.random.default_rng(0).random((16, 16, 1)).astype(np.float32)
>>> visualize.activations(model, image[None], ["conv", "pool"])["pool"].shape
(1, 7, 7, 4)
>>> visualize.grad_cam(model, image).shape          # at the resolution of the last conv layer
(14, 14)
>>> visualize.filter_pattern(model, "conv", 0, steps=10, seed=0).dtype
dtype('uint8')
>>> visualize.overlay_heatmap(image, visualize.grad_cam(model, image)).shape
(16, 16, 3)
"""
from fastconv.visualize.activation_maps import activation_grid, activations, plot_activations
from fastconv.visualize.filters import filter_pattern, filter_patterns, pattern_to_input, plot_filters
from fastconv.visualize.gradcam import class_scores, grad_cam, score_gradients
from fastconv.visualize.images import apply_colormap, image_grid, overlay_heatmap, read_image, resize, save_image

__all__ = [
    "activations", "activation_grid", "plot_activations",
    "filter_pattern", "filter_patterns", "pattern_to_input", "plot_filters",
    "grad_cam", "score_gradients", "class_scores",
    "overlay_heatmap", "save_image", "read_image", "apply_colormap", "image_grid", "resize",
]

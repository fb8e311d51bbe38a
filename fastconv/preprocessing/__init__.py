"""Data augmentation and image loading in Keras's style.

``ImageDataGenerator`` draws random rotations, shifts, shears, zooms and flips per image and applies them to a
whole batch at once as vectorised affine warps (``affine.py``); ``flow`` serves arrays, ``flow_from_directory``
reads one sub-folder of images per class with Pillow (an optional dependency: ``pip install Pillow``).

>>> import numpy as np
>>> from fastconv.preprocessing import ImageDataGenerator
>>> gen = ImageDataGenerator(rotation_range=15, width_shift_range=0.1, zoom_range=0.1, rescale=1 / 255)
>>> it = gen.flow(np.zeros((100, 28, 28, 1), np.uint8), np.arange(100), batch_size=32, seed=0)
>>> len(it), [xb.shape[0] for xb, yb in (next(it) for _ in range(4))]
(4, [32, 32, 32, 4])
"""
from fastconv.preprocessing.affine import affine_matrices, warp_affine
from fastconv.preprocessing.directory import DirectoryIterator
from fastconv.preprocessing.image import ImageDataGenerator
from fastconv.preprocessing.iterator import Iterator, NumpyArrayIterator

__all__ = [
    "ImageDataGenerator",
    "Iterator",
    "NumpyArrayIterator",
    "DirectoryIterator",
    "affine_matrices",
    "warp_affine",
]

"""Ready-made networks with the ImageNet weights Keras publishes for them (``keras.applications``).

Each network has Keras's layer names, shapes and weight layouts, so the published Keras weight files load into it
(they are taken from Keras's download cache, ``~/.keras/models``, or downloaded and verified there), and its
``preprocess_input`` turns RGB images into what those weights expect.

>>> from fastconv.applications import VGG16
>>> VGG16(weights=None, include_top=False, input_shape=(64, 64, 3)).output_shape
(None, 2, 2, 512)
"""
from fastconv.applications import imagenet_utils, vgg16
from fastconv.applications.vgg16 import VGG16

__all__ = ["VGG16", "vgg16", "imagenet_utils"]

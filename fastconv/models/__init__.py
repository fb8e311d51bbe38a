"""Models: ``Model`` (graphs of layers, Keras's functional API), ``Sequential`` (a stack of layers), both with
compile, fit, evaluate, predict, summary and save; and ``load_model``.

>>> import fastconv
>>> from fastconv.layers import Input, Conv2D, MaxPooling2D, Flatten, Dense
>>> model = fastconv.Sequential([Input((28, 28, 1)), Conv2D(8, 3, activation="relu"), MaxPooling2D(2),
...                              Flatten(), Dense(10, activation="softmax")])
>>> model.output_shape, model.count_params()
((None, 10), 13610)
"""
from fastconv.callbacks import History
from fastconv.models.saving import load_model, save_model
from fastconv.models.model import Model
from fastconv.models.sequential import Sequential

__all__ = ["Model", "Sequential", "load_model", "save_model", "History"]

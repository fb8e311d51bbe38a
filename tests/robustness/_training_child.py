"""Training that waits to be killed, for test_interrupted_training.py (run as a script).

Usage: ``python _training_child.py WORKDIR MODE``. The child trains :func:`build_model` on :func:`data` with a
``ModelCheckpoint`` after every epoch, and at a chosen moment writes ``WORKDIR/paused`` and sleeps until the parent
SIGKILLs it:

- ``epoch``: checkpoints ``ckpt-01.fcm``, ``ckpt-02.fcm`` ...; pauses as the third epoch begins;
- ``write``: one checkpoint ``last.fcm`` overwritten every epoch; pauses in the middle of writing the third (after
  three of its arrays), so the kill lands mid-write;
- ``weights``: ``ckpt-01.weights.h5`` ... (``save_weights_only``); pauses as the third epoch begins.

The model, data and fit arguments are defined here once, so that the parent's uninterrupted run is the same run.
"""
import os
import sys
import time

import numpy as np

import fastconv
from fastconv import layers
from fastconv.callbacks import Callback, ModelCheckpoint

SEED = 1234
EPOCHS = 5
FIT = {"batch_size": 8, "shuffle": False, "seed": SEED, "verbose": 0}


def data():
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((48, 8, 8, 1)).astype(np.float32)
    return x, rng.integers(0, 3, 48)


def build_model():
    """The same initial weights every time (the global seed is set first)."""
    fastconv.utils.set_random_seed(SEED)
    model = fastconv.Sequential([
        layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"), layers.BatchNormalization(),
        layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _pause(workdir):
    """Tell the parent (atomically: the marker appears whole) and wait for the SIGKILL."""
    tmp = os.path.join(workdir, ".paused.tmp")
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, os.path.join(workdir, "paused"))
    while True:
        time.sleep(60)


class PauseAtThirdEpoch(Callback):
    def __init__(self, workdir):
        super().__init__()
        self.workdir = workdir

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            _pause(self.workdir)


class PauseInThirdSave(Callback):
    """Runs before the checkpoint in on_epoch_end; arms a write_array that pauses after three arrays."""

    def __init__(self, workdir):
        super().__init__()
        self.workdir = workdir

    def on_epoch_end(self, epoch, logs=None):
        if epoch != 2:
            return
        real_write_array = np.lib.format.write_array
        written = []

        def write_array(*args, **kwargs):
            real_write_array(*args, **kwargs)
            written.append(1)
            if len(written) == 3:
                args[0].flush()
                _pause(self.workdir)

        np.lib.format.write_array = write_array


def main():
    workdir, mode = sys.argv[1], sys.argv[2]
    x, y = data()
    model = build_model()
    if mode == "epoch":
        callbacks = [ModelCheckpoint(os.path.join(workdir, "ckpt-{epoch:02d}.fcm")), PauseAtThirdEpoch(workdir)]
    elif mode == "write":
        callbacks = [PauseInThirdSave(workdir), ModelCheckpoint(os.path.join(workdir, "last.fcm"))]
    else:
        callbacks = [ModelCheckpoint(os.path.join(workdir, "ckpt-{epoch:02d}.weights.h5"), save_weights_only=True),
                     PauseAtThirdEpoch(workdir)]
    model.fit(x, y, epochs=EPOCHS, callbacks=callbacks, **FIT)
    sys.exit("training finished: the parent should have killed it")


if __name__ == "__main__":
    main()

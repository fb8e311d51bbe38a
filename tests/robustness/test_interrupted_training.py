"""Training killed halfway: the checkpoints already written are intact, and resuming from the last one finishes
with exactly the weights of a run that was never interrupted. A NaN loss stops training instead (see
test_terminate_on_nan.py).

The training runs in a child process (``_training_child.py``) that announces when it has reached the chosen
moment (the third epoch beginning, or the middle of writing the third checkpoint) and then waits; the test
SIGKILLs it there, so the kill is deterministic. The uninterrupted reference is the same model, data and fit
arguments run here.

fastconv's guarantee, found and held here: with the same data order, resuming a ``model.save`` checkpoint with
``fit(..., initial_epoch=k)`` reproduces the uninterrupted weights bit for bit (weights, optimizer state and
step count are restored exactly, and results do not depend on thread count). With ``shuffle=True`` and Dropout
too: ``fit`` derives epoch ``e``'s order and dropout masks from ``(seed, e)``, not from generators carried across
epochs.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastconv
from _training_child import EPOCHS, FIT, SEED, build_model, data
from fastconv import layers

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_training_child.py")
STEPS = 6  # 48 samples in batches of 8


def train_until_killed(workdir, mode):
    """Run the child in ``mode`` and SIGKILL it once it has written ``paused``."""
    process = subprocess.Popen([sys.executable, CHILD, str(workdir), mode], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not os.path.exists(os.path.join(workdir, "paused")):
            if process.poll() is not None:
                pytest.fail(f"the training child exited with {process.returncode} before pausing: "
                            f"{process.stderr.read().decode()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the training child did not reach the pause within 120 s")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    return sorted(os.listdir(workdir))


class _WeightsPerEpoch(fastconv.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


@pytest.fixture(scope="module")
def uninterrupted():
    """The reference: the weights after every epoch of a run that is never stopped."""
    x, y = data()
    model = build_model()
    record = _WeightsPerEpoch()
    model.fit(x, y, epochs=EPOCHS, callbacks=[record], **FIT)
    return record.weights


def assert_same_weights(expected, got):
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_killed_during_an_epoch_leaves_complete_checkpoints_and_resumes_exactly(tmp_path, uninterrupted):
    files = train_until_killed(tmp_path, "epoch")
    assert files == ["ckpt-01.fcm", "ckpt-02.fcm", "paused"]  # no temporary file, nothing from epoch 3
    for epoch in (1, 2):
        checkpoint = fastconv.load_model(tmp_path / f"ckpt-{epoch:02d}.fcm")
        assert_same_weights(uninterrupted[epoch - 1], checkpoint.get_weights())
        assert checkpoint.optimizer.get_state()["iterations"] == epoch * STEPS

    resumed = fastconv.load_model(tmp_path / "ckpt-02.fcm")
    x, y = data()
    history = resumed.fit(x, y, epochs=EPOCHS, initial_epoch=2, **FIT)
    assert history.epoch == [2, 3, 4]
    assert_same_weights(uninterrupted[-1], resumed.get_weights())  # bit for bit


def test_killed_while_writing_a_checkpoint_leaves_the_previous_one_intact(tmp_path, uninterrupted):
    files = train_until_killed(tmp_path, "write")
    temporary = [f for f in files if f not in ("last.fcm", "paused")]
    # the interrupted write went to a temporary name beside the target, which still holds epoch 2
    assert len(temporary) == 1 and temporary[0].startswith(".last.fcm.") and temporary[0].endswith(".tmp")
    last = fastconv.load_model(tmp_path / "last.fcm")
    assert_same_weights(uninterrupted[1], last.get_weights())
    assert last.optimizer.get_state()["iterations"] == 2 * STEPS
    with pytest.raises(ValueError, match=r"\.tmp"):  # the half-written file is refused, not half-loaded
        fastconv.load_model(tmp_path / temporary[0])


def test_weight_checkpoints_survive_the_kill_too(tmp_path, uninterrupted):
    pytest.importorskip("h5py")
    files = train_until_killed(tmp_path, "weights")
    assert files == ["ckpt-01.weights.h5", "ckpt-02.weights.h5", "paused"]
    model = build_model()
    model.load_weights(tmp_path / "ckpt-02.weights.h5")
    assert_same_weights(uninterrupted[1], model.get_weights())


def _with_dropout():
    fastconv.utils.set_random_seed(7)
    model = fastconv.Sequential([layers.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu"), layers.Flatten(),
                                 layers.Dropout(0.5), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("build", [build_model, _with_dropout], ids=["shuffle", "shuffle+dropout"])
def test_resuming_with_shuffling_matches_too(tmp_path, build):
    x, y = data()
    fit = dict(FIT, shuffle=True)
    reference = build()
    reference.fit(x, y, epochs=4, **fit)
    first_half = build()
    first_half.fit(x, y, epochs=2, **fit)
    first_half.save(tmp_path / "half.fcm")
    resumed = fastconv.load_model(tmp_path / "half.fcm")
    resumed.fit(x, y, epochs=4, initial_epoch=2, **fit)
    assert_same_weights(reference.get_weights(), resumed.get_weights())
    unseeded = build()  # and the seed matters: another one gives other weights
    unseeded.fit(x, y, epochs=4, **dict(fit, seed=SEED + 1))
    assert any(not np.array_equal(a, b) for a, b in zip(reference.get_weights(), unseeded.get_weights()))

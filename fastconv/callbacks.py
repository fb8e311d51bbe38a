"""Callbacks for ``fit``, ``evaluate`` and ``predict``, with Keras's hooks and semantics.

``fit`` always adds a :class:`History` (which it returns) and, unless ``verbose=0``, a :class:`ProgbarLogger`;
the callbacks you pass run in between, in order.

Examples
--------
>>> from fastconv import callbacks
>>> stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
>>> save = callbacks.ModelCheckpoint("best.fcm", monitor="val_accuracy", save_best_only=True)
>>> save.monitor_mode
'max'
"""
import math
import os
import sys
import time
import warnings

import numpy as np

__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "Progbar", "EarlyStopping", "ModelCheckpoint",
           "LearningRateScheduler", "TerminateOnNaN"]


class Callback:
    """Base class: override the hooks you need. ``self.model`` is the model being trained, ``self.params`` holds
    ``epochs``, ``steps`` and ``verbose``."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = dict(params)

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList(Callback):
    """Calls every hook on each callback in order."""

    def __init__(self, callbacks=None, model=None, **params):
        super().__init__()
        callbacks = [] if callbacks is None else list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must hold fastconv.callbacks.Callback objects; received {cb!r}")
        self.callbacks = callbacks
        if model is not None:
            self.set_model(model)
        self.set_params(params)

    def set_model(self, model):
        super().set_model(model)
        for cb in self.callbacks:
            cb.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for cb in self.callbacks:
            cb.set_params(params)

    def _call(self, hook, *args):
        for cb in self.callbacks:
            getattr(cb, hook)(*args)


def _forwarding(hook):
    def method(self, *args):
        self._call(hook, *args)
    method.__name__ = hook
    return method


for _hook in [name for name in vars(Callback) if name.startswith("on_")]:
    setattr(CallbackList, _hook, _forwarding(_hook))


class History(Callback):
    """Records the epoch logs: ``history.history["loss"]`` is the list of per-epoch training losses, and so on
    for every metric and its ``val_`` counterpart. ``fit`` returns it."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))


def _format_value(value):
    value = float(value)
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.4e}"


def _format_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{seconds:.0f}s"


class Progbar:
    """A Keras-style text progress bar: ``12/125 [==>...........] - ETA: 3s - loss: 0.4512``.

    On a terminal it redraws one line in place; elsewhere (logs, CI) it prints one line when finished.

    Parameters
    ----------
    target : int or None
        Total number of steps (None when unknown).
    width : int
        Width of the bar in characters.
    verbose : {1, 2}
        1: the bar; 2: one summary line at the end.
    interval : float
        Minimum seconds between redraws.
    unit_name : str
    stream : file, optional
        Where to write (``sys.stdout`` by default).
    """

    def __init__(self, target, width=30, verbose=1, interval=0.05, unit_name="step", stream=None):
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        self.stream = stream if stream is not None else sys.stdout
        isatty = getattr(self.stream, "isatty", None)
        self.dynamic = bool(isatty and isatty()) or "ipykernel" in sys.modules
        self.start = time.perf_counter()
        self.last_update = 0.0
        self.drawn_width = 0
        self.finished = False

    def update(self, current, values=None, finalize=None):
        """Show progress ``current`` (steps done) with the latest ``values`` (a dict of name -> number)."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.perf_counter()
        if self.finished or self.verbose == 0:
            return
        if not finalize and (not self.dynamic or self.verbose != 1 or now - self.last_update < self.interval):
            return
        self.last_update = now
        elapsed = now - self.start
        per_step = elapsed / current if current else 0.0
        metrics = "".join(f" - {k}: {_format_value(v)}" for k, v in (values or {}).items())
        speed = f"{per_step * 1e3:.0f}ms/{self.unit_name}" if per_step >= 1e-3 else \
            f"{per_step * 1e6:.0f}us/{self.unit_name}"
        if self.verbose == 2:
            line = f"{current}/{self.target or current} - {_format_time(elapsed)} - {speed}{metrics}"
        else:
            if self.target:
                digits = int(math.log10(self.target)) + 1
                done = int(self.width * min(current, self.target) / self.target)
                bar = "=" * done
                if current < self.target:
                    bar = bar[:-1] + ">" if done else ">"
                bar = f"{current:>{digits}}/{self.target} [{bar:.<{self.width}}]"
            else:
                bar = f"{current}/Unknown"
            if finalize:
                timing = f" - {_format_time(elapsed)} {speed}"
            else:
                eta = per_step * (self.target - current) if self.target else 0.0
                timing = f" - ETA: {_format_time(eta)}" if self.target else f" - {_format_time(elapsed)}"
            line = bar + timing + metrics
        if self.dynamic and self.verbose == 1:
            padding = max(0, self.drawn_width - len(line))
            self.stream.write("\r" + line + " " * padding)
            self.drawn_width = len(line)
        else:
            self.stream.write(line)
        if finalize:
            self.stream.write("\n")
            self.finished = True
        self.stream.flush()


class ProgbarLogger(Callback):
    """Prints ``Epoch i/n`` and a :class:`Progbar` per epoch (``verbose=1``) or one line per epoch
    (``verbose=2``); also a bar for ``evaluate`` and ``predict`` when they run on their own."""

    def __init__(self, stream=None):
        super().__init__()
        self.stream = stream
        self.progbar = None
        self._in_fit = False
        self._last_logs = {}

    def _verbose(self):
        return self.params.get("verbose", 1)

    def _write(self, text):
        stream = self.stream if self.stream is not None else sys.stdout
        stream.write(text)
        stream.flush()

    def _new_bar(self, steps):
        self.progbar = Progbar(steps, verbose=self._verbose(), stream=self.stream)

    def on_train_begin(self, logs=None):
        self._in_fit = True

    def on_train_end(self, logs=None):
        self._in_fit = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._verbose():
            self._write(f"Epoch {epoch + 1}/{self.params.get('epochs', 1)}\n")
        self._new_bar(self.params.get("steps"))
        self._seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        self._last_logs = dict(logs or {})
        self.progbar.update(self._seen, self._last_logs, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        self.progbar.update(self._seen, logs or self._last_logs, finalize=True)

    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._new_bar(self.params.get("steps"))
            self._seen = 0

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit:
            self._seen = batch + 1
            self._last_logs = dict(logs or {})
            self.progbar.update(self._seen, self._last_logs, finalize=False)

    def on_test_end(self, logs=None):
        if not self._in_fit:
            self.progbar.update(self._seen, logs or self._last_logs, finalize=True)

    def on_predict_begin(self, logs=None):
        self._new_bar(self.params.get("steps"))
        self._seen = 0

    def on_predict_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        self.progbar.update(self._seen, None, finalize=False)

    def on_predict_end(self, logs=None):
        self.progbar.update(self._seen, None, finalize=True)


def _monitor_mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f'mode must be "auto", "min" or "max"; received mode={mode!r}')
    if mode != "auto":
        return mode
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if name in ("acc", "accuracy") or name.endswith("accuracy") or name.endswith("auc") else "min"


class _Monitoring(Callback):
    def __init__(self, monitor, mode):
        super().__init__()
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a str; received monitor={monitor!r}")
        self.monitor = monitor
        self.monitor_mode = _monitor_mode(monitor, mode)

    def _better(self, value, reference, min_delta=0.0):
        if reference is None:
            return True
        if self.monitor_mode == "max":
            return value - min_delta > reference
        return value + min_delta < reference

    def _monitor_value(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"{type(self).__name__} monitors {self.monitor!r}, which is not among the logged "
                          f"values {sorted(logs or {})}", RuntimeWarning, stacklevel=3)
            return None
        return float(value)


class EarlyStopping(_Monitoring):
    """Stop training when a monitored value has stopped improving, Keras's ``EarlyStopping``.

    Parameters
    ----------
    monitor : str
        A key of the epoch logs (``"val_loss"`` by default).
    min_delta : float
        Smaller changes do not count as improvements.
    patience : int
        Epochs without improvement before stopping.
    verbose : int
        1 prints the epoch at which training stopped.
    mode : {"auto", "min", "max"}
        "auto" maximises accuracies and minimises everything else.
    baseline : float, optional
        Training stops if the monitored value does not beat it within ``patience`` epochs.
    restore_best_weights : bool
        When stopping, restore the weights of the best epoch.
    start_from_epoch : int
        Epochs to wait before monitoring starts.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode)
        self.min_delta = abs(float(min_delta))
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"patience must be a non-negative int; received patience={patience!r}")
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current, self.best, self.min_delta):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline, self.min_delta):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.restore_best_weights and self.best_weights is not None:
                if self.verbose:
                    print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
                self.model.set_weights(self.best_weights)

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(_Monitoring):
    """Save the model (or its weights) at the end of epochs, Keras's ``ModelCheckpoint``.

    Every file is written atomically: to a temporary file in the same directory, then moved over the target with
    ``os.replace``, so a crash mid-write never leaves a truncated checkpoint in place.

    Parameters
    ----------
    filepath : str or os.PathLike
        May contain ``str.format`` fields filled from ``epoch`` (1-based) and the epoch logs, e.g.
        ``"ckpt-{epoch:02d}-{val_loss:.2f}.fcm"``.
    monitor : str
    verbose : int
    save_best_only : bool
        Only save when the monitored value improves (and then overwrite ``filepath`` if it has no fields).
    save_weights_only : bool
        Save with ``model.save_weights`` instead of ``model.save``.
    mode : {"auto", "min", "max"}
    save_freq : "epoch"
    initial_value_threshold : float, optional
        Only save once the monitored value beats this.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        if save_freq != "epoch":
            raise ValueError(f'save_freq must be "epoch"; received save_freq={save_freq!r}')
        self.best = None if initial_value_threshold is None else float(initial_value_threshold)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except KeyError as exc:
            raise KeyError(f"filepath {self.filepath!r} names {exc} which is not among epoch, "
                           f"{', '.join(sorted(logs))}") from None
        if self.save_best_only:
            current = self._monitor_value(logs)
            if current is None or not self._better(current, self.best):
                if self.verbose and current is not None:
                    print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose:
                previous = "inf" if self.best is None else f"{self.best:.5f}"
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {previous} to {current:.5f}, "
                      f"saving model to {path}")
            self.best = current
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch, Keras's ``LearningRateScheduler``.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch, lr) -> new_lr`` with the 0-based epoch and the current learning rate.
    verbose : int
        1 prints each change.

    Examples
    --------
    >>> from fastconv.callbacks import LearningRateScheduler
    >>> halve_after_5 = LearningRateScheduler(lambda epoch, lr: lr if epoch < 5 else lr / 2)
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable as schedule(epoch, lr); received schedule={schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        lr = float(self.schedule(epoch, optimizer.learning_rate))
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"schedule must return a positive learning rate; received {lr!r} at epoch {epoch}")
        if self.verbose and lr != optimizer.learning_rate:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:g}.")
        optimizer.learning_rate = lr

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or infinite, Keras's ``TerminateOnNaN``.

    The loss ``fit`` logs after each batch is the epoch's running mean, so it stays invalid once one batch's loss
    was. By default the callback prints ``Batch N: Invalid loss, terminating training`` and sets
    ``model.stop_training``: the batch ends, the epoch ends (its ``on_epoch_end`` hooks run, as in Keras), and
    ``fit`` returns. The weights are those after the invalid batch's update.

    Parameters
    ----------
    raise_error : bool
        Raise a RuntimeError at that batch instead, so that no later hook (a checkpoint of the damaged weights, the
        other callbacks' ``on_train_end``) runs.

    Examples
    --------
    >>> from fastconv.callbacks import TerminateOnNaN
    >>> stop = TerminateOnNaN()
    >>> stop.raise_error
    False
    """

    def __init__(self, raise_error=False):
        super().__init__()
        if not isinstance(raise_error, (bool, np.bool_)):
            raise TypeError(f"raise_error must be a bool; received raise_error={raise_error!r}")
        self.raise_error = bool(raise_error)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        if self.raise_error:
            raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {float(loss)}. "
                               f"Terminating training immediately.")
        print(f"Batch {batch}: Invalid loss, terminating training")
        self.model.stop_training = True

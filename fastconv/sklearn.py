"""``ConvNetClassifier``: a fastconv convnet as a scikit-learn classifier, for pipelines, cross-validation and
hyperparameter searches (``GridSearchCV``, in parallel on a Dask cluster through ``joblib.parallel_backend("dask")``).

Inputs
------
``X`` may be images ``(n, H, W, C)``, grayscale images ``(n, H, W)`` (a channel axis is appended) or a table
``(n, d)``, which is read as ``n`` images of ``d x 1`` pixels with one channel (so scikit-learn's generic checks
and tabular data run through the same convnet). ``build_fn`` receives that per-image shape.

Parameters of ``build_fn``
--------------------------
Give them with the prefix ``build_fn__`` (``ConvNetClassifier(build_fn__filters=16)``, or
``param_grid={"build_fn__filters": [8, 16]}`` in a search), as nested parameters are named in scikit-learn;
``get_params`` and ``set_params`` list and set them like every other parameter.

Pickling
--------
An estimator pickles as its parameters plus, once fitted, its model saved in fastconv's own format
(configuration and ``.npy`` weights, optimizer state included), never as a pickled model object.

>>> import numpy as np, pytest
>>> _ = pytest.importorskip("sklearn")
>>> from fastconv.sklearn import ConvNetClassifier
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((64, 6, 6, 1)).astype(np.float32)
>>> y = np.where(X[:, :3].mean(axis=(1, 2, 3)) > X[:, 3:].mean(axis=(1, 2, 3)), "top", "bottom")
>>> clf = ConvNetClassifier(epochs=3, seed=0, build_fn__filters=4).fit(X, y)
>>> clf.classes_, clf.predict_proba(X[:2]).shape
(array(['bottom', 'top'], dtype='<U6'), (2, 2))
"""
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["ConvNetClassifier", "build_convnet"]

_PREFIX = "build_fn__"


def build_convnet(input_shape, n_classes, filters=8, kernel_size=3, hidden_units=0):
    """The default ``build_fn``: ``Conv2D(filters, kernel_size, "same", relu)`` - ``MaxPooling2D(2)`` (when both
    spatial sizes are at least 4) - ``Flatten`` - [``Dense(hidden_units, relu)``] - ``Dense(n_classes, softmax)``.

    The kernel is clipped to the image (``(3, 1)`` on the ``d x 1`` images of a table).

    Parameters
    ----------
    input_shape : tuple of int
        ``(H, W, C)``.
    n_classes : int
    filters, kernel_size, hidden_units : int
        ``hidden_units=0`` leaves the hidden Dense layer out.

    Returns
    -------
    fastconv.Sequential
        Uncompiled.

    Examples
    --------
    >>> from fastconv.sklearn import build_convnet
    >>> build_convnet((8, 8, 1), 3).output_shape
    (None, 3)
    """
    from fastconv.layers import Conv2D, Dense, Flatten, Input, MaxPooling2D
    from fastconv.models import Sequential

    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C); received input_shape={tuple(input_shape)!r}")
    height, width = input_shape[0], input_shape[1]
    kernel = (min(kernel_size, height), min(kernel_size, width))
    layers = [Input(tuple(input_shape)), Conv2D(filters, kernel, padding="same", activation="relu")]
    if height >= 4 and width >= 4:
        layers.append(MaxPooling2D(2))
    layers.append(Flatten())
    if hidden_units:
        layers.append(Dense(hidden_units, activation="relu"))
    layers.append(Dense(n_classes, activation="softmax"))
    return Sequential(layers)


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int; received {name}={value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int; received {name}={value!r}")
    return int(value)


def _as_images(X):
    """``(n, d)`` -> ``(n, d, 1, 1)``; ``(n, H, W)`` -> ``(n, H, W, 1)``; ``(n, H, W, C)`` as is."""
    if X.ndim == 2:
        return X[:, :, None, None]
    if X.ndim == 3:
        return X[..., None]
    return X


class ConvNetClassifier(ClassifierMixin, BaseEstimator):
    """A fastconv convnet as a scikit-learn classifier.

    Parameters
    ----------
    build_fn : callable, optional
        ``build_fn(input_shape, n_classes, **build_params)`` returns an uncompiled fastconv model with one input of
        ``input_shape`` (``(H, W, C)``, see the module notes) and one ``(None, n_classes)`` output ending in a
        softmax. :func:`build_convnet` by default.
    epochs : int
    batch_size : int
        For training and prediction.
    optimizer : str or fastconv.optimizers.Optimizer
        ``"adam"``, ``"sgd"``, ``"rmsprop"`` or an optimizer object (each fit trains a fresh copy of it).
    learning_rate : float, optional
        Replaces the optimizer's learning rate.
    loss : str or fastconv.losses.Loss, optional
        ``"sparse_categorical_crossentropy"`` (the default, integer targets) or ``"categorical_crossentropy"``
        (one-hot targets).
    validation_split : float
        Fraction of the training data (the last rows) held out to report validation loss in ``history_``.
    seed : int, optional
        Seeds the initial weights, the shuffling and the dropout masks: two fits with the same seed and data give
        the same model. None draws from fastconv's global generator (``fastconv.utils.set_random_seed``).
    verbose : {0, 1, 2}
    **build_params
        ``build_fn__<name>=value``: passed to ``build_fn`` as ``name=value``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted; predictions are drawn from them.
    n_features_in_ : int
        ``X.shape[1]`` as scikit-learn counts it (columns of a table, the image height for images).
    feature_names_in_ : ndarray of str
        When ``X`` is a DataFrame with string column names.
    input_shape_ : tuple of int
        The per-sample shape of ``X`` seen in ``fit`` (``X.shape[1:]``); ``predict`` requires the same.
    model_ : fastconv.Sequential or fastconv.Model
        The trained model (compiled).
    history_ : dict
        Per-epoch ``"loss"`` (and ``"val_loss"``) from ``model_.fit``.

    Examples
    --------
    >>> import numpy as np, pytest
    >>> _ = pytest.importorskip("sklearn")
    >>> from sklearn.model_selection import GridSearchCV
    >>> from fastconv.sklearn import ConvNetClassifier
    >>> rng = np.random.default_rng(1)
    >>> X = rng.standard_normal((60, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> search = GridSearchCV(ConvNetClassifier(epochs=2, seed=0),
    ...                       {"build_fn__filters": [2, 4], "learning_rate": [0.01]}, cv=2).fit(X, y)
    >>> sorted(search.best_params_)
    ['build_fn__filters', 'learning_rate']
    """

    def __init__(self, build_fn=None, epochs=10, batch_size=32, optimizer="adam", learning_rate=None, loss=None,
                 validation_split=0.0, seed=None, verbose=0, **build_params):
        self.build_fn = build_fn
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.loss = loss
        self.validation_split = validation_split
        self.seed = seed
        self.verbose = verbose
        for key, value in build_params.items():
            # What Python itself does for an unknown keyword; values are only checked in fit.
            if not key.startswith(_PREFIX) or key == _PREFIX:
                raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {key!r}; give "
                                f"build_fn's parameters with the prefix {_PREFIX!r} (build_fn__filters=16)")
            setattr(self, key, value)

    # --- parameters --------------------------------------------------------------------------------------
    def _build_params(self):
        return {key[len(_PREFIX):]: value for key, value in vars(self).items() if key.startswith(_PREFIX)}

    def get_params(self, deep=True):
        """The constructor's parameters, ``build_fn__*`` ones included."""
        params = super().get_params(deep=deep)
        params.update({key: value for key, value in vars(self).items() if key.startswith(_PREFIX)})
        return params

    def set_params(self, **params):
        """Set parameters (``build_fn__<name>`` ones too, new names included); returns self."""
        for key in [k for k in params if k.startswith(_PREFIX)]:
            if key == _PREFIX:
                raise ValueError(f"invalid parameter {key!r} for estimator {type(self).__name__}: name the "
                                 f"build_fn argument after the prefix (build_fn__filters)")
            setattr(self, key, params.pop(key))
        if params:
            super().set_params(**params)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # images (n, H, W) and (n, H, W, C) as well as tables
        tags.non_deterministic = self.seed is None
        return tags

    # --- pickling ----------------------------------------------------------------------------------------
    def __getstate__(self):
        from fastconv.dask._payload import model_to_bytes

        state = dict(super().__getstate__())  # a copy: object.__getstate__ returns the live __dict__
        model = state.pop("model_", None)
        if model is not None:
            state["_model_archive"] = model_to_bytes(model, include_optimizer=True)
        return state

    def __setstate__(self, state):
        from fastconv.dask._payload import model_from_bytes

        state = dict(state)
        archive = state.pop("_model_archive", None)
        super().__setstate__(state)
        if archive is not None:
            self.model_ = model_from_bytes(archive, compile=True)

    # --- fit ---------------------------------------------------------------------------------------------
    def _check_params(self):
        from fastconv import utils

        epochs = _positive_int(self.epochs, "epochs")
        batch_size = _positive_int(self.batch_size, "batch_size")
        split = self.validation_split
        if isinstance(split, (bool, np.bool_)) or not isinstance(split, (int, float, np.integer, np.floating)) \
                or not 0 <= split < 1:
            raise ValueError(f"validation_split must be a float in [0, 1); received validation_split={split!r}")
        if self.verbose not in (0, 1, 2) or isinstance(self.verbose, bool):
            raise ValueError(f"verbose must be 0, 1 or 2; received verbose={self.verbose!r}")
        seed = utils.check_seed(self.seed)
        build_fn = build_convnet if self.build_fn is None else self.build_fn
        if not callable(build_fn):
            raise TypeError(f"build_fn must be a callable build_fn(input_shape, n_classes, **params) or None; "
                            f"received build_fn={self.build_fn!r}")
        return epochs, batch_size, float(split), seed, build_fn

    def _new_optimizer(self):
        from fastconv import optimizers

        # A fresh copy each fit: a fitted estimator must not share (or alter) the optimizer object it was given.
        config = optimizers.serialize(optimizers.get(self.optimizer))
        if self.learning_rate is not None:
            config["config"]["learning_rate"] = self.learning_rate
        return optimizers.deserialize(config)

    def _new_loss(self):
        from fastconv import losses

        loss = losses.get("sparse_categorical_crossentropy" if self.loss is None else self.loss)
        if not isinstance(loss, losses.CategoricalCrossentropy):
            raise ValueError(f"loss must be 'sparse_categorical_crossentropy' or 'categorical_crossentropy' (or "
                             f"their Loss objects); received loss={self.loss!r}")
        return loss

    def _build_model(self, build_fn, seed, input_shape, n_classes):
        from fastconv import utils
        from fastconv.models.model import Model

        rng = None if seed is None else np.random.default_rng(seed)
        with utils.seeded_global_generator(rng):  # the initial weights follow the seed
            model = build_fn(input_shape, n_classes, **self._build_params())
        name = getattr(build_fn, "__name__", repr(build_fn))
        if not isinstance(model, Model):
            raise TypeError(f"build_fn must return a fastconv model; received {type(model).__name__} from "
                            f"build_fn={name}")
        if model._graph is None or model.multi_input or not model._graph.single_output:
            raise ValueError(f"build_fn must return a built model with one input and one output; received model "
                             f"{model.name!r} from build_fn={name}")
        if tuple(model.output_shape[1:]) != (n_classes,):
            raise ValueError(f"build_fn must return a model whose output has shape (None, {n_classes}) (one unit "
                             f"per class); received output shape {model.output_shape} from build_fn={name}")
        return model

    def fit(self, X, y):
        """Train a new model on ``X`` (tables, grayscale or colour images; see the module notes) and labels ``y``.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Bad parameters or data (NaN, fewer than 2 classes, continuous targets ...), or a ``build_fn`` model
            that does not fit the data.
        """
        from fastconv import losses
        from fastconv.dask._workers import task_threads

        epochs, batch_size, split, seed, build_fn = self._check_params()
        X, y = validate_data(self, X, y, reset=True, allow_nd=True, dtype=np.float32)
        if X.ndim > 4:
            raise ValueError(f"X must be 2-D (n, d), 3-D (n, H, W) or 4-D (n, H, W, C); received X with shape "
                             f"{X.shape}")
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(f"y must hold at least 2 classes to train a classifier; received 1 class: "
                             f"{encoder.classes_.tolist()[0]!r}")
        loss = self._new_loss()
        optimizer = self._new_optimizer()
        images = _as_images(X)
        n_classes = len(encoder.classes_)
        model = self._build_model(build_fn, seed, images.shape[1:], n_classes)
        model.compile(optimizer=optimizer, loss=loss)
        targets = encoder.transform(y)
        if not isinstance(loss, losses.SparseCategoricalCrossentropy):
            targets = np.eye(n_classes, dtype=np.float32)[targets]
        with task_threads():
            history = model.fit(images, targets, batch_size=batch_size, epochs=epochs, verbose=self.verbose,
                                validation_split=split, shuffle=True, seed=seed)
        self.classes_ = encoder.classes_
        self.input_shape_ = tuple(X.shape[1:])
        self.model_ = model
        self.history_ = dict(history.history)
        return self

    # --- predict -----------------------------------------------------------------------------------------
    def _check_X(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=np.float32)
        if tuple(X.shape[1:]) != self.input_shape_:
            raise ValueError(f"X must have per-sample shape {self.input_shape_} as in fit; received X with shape "
                             f"{X.shape}")
        return X

    def predict_proba(self, X):
        """Class probabilities, ``(n_samples, n_classes)`` float64, columns in the order of ``classes_``.

        Raises
        ------
        ValueError
            If the model's outputs are not probabilities (a ``build_fn`` without a final softmax).
        """
        from fastconv.dask._workers import task_threads

        X = self._check_X(X)
        with task_threads():
            proba = self.model_.predict(_as_images(X), batch_size=_positive_int(self.batch_size, "batch_size"),
                                        verbose=0).astype(np.float64)
        sums = proba.sum(axis=1)
        if len(proba) and ((proba < 0).any() or not np.allclose(sums, 1.0, atol=1e-3)):
            raise ValueError("the model's outputs are not probabilities (rows must be non-negative and sum to 1): "
                             "build_fn must end with a softmax over the classes; received rows summing to "
                             f"{sums[:3]}")
        return proba / sums[:, None] if len(proba) else proba

    def predict(self, X):
        """The most probable class of each sample, as a label of ``classes_``."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is looked up
        return self.classes_[np.argmax(proba, axis=1)]

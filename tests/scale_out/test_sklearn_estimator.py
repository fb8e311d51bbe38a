"""fastconv.sklearn.ConvNetClassifier: scikit-learn's estimator checks, parameters, data shapes, pickling."""
import pickle
import pickletools

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastconv  # noqa: E402
from fastconv import optimizers  # noqa: E402
from fastconv.layers import Dense, Flatten, Input  # noqa: E402
from fastconv.sklearn import ConvNetClassifier, build_convnet  # noqa: E402

# Checks that cannot pass, with the reason.
EXPECTED_FAILED_CHECKS = {
    "check_do_not_raise_errors_in_init_or_set_params":
        "the check passes the name of **build_params itself as a keyword (build_params=...): like any Python "
        "callable, ConvNetClassifier raises TypeError for a keyword it does not take (build_fn parameters must "
        "be spelled build_fn__<name>); every declared parameter is stored without validation",
}


@pytest.fixture(autouse=True)
def one_thread(threads):
    """Tiny models train far faster on one thread of this shared machine (the results are the same)."""
    threads.set_num_threads(1)


def _blobs(n=90, shape=(6, 6, 1), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n,) + shape).astype(np.float32)
    flat = X.reshape(n, -1)
    half = flat.shape[1] // 2
    y = (flat[:, :half].mean(axis=1) > flat[:, half:].mean(axis=1)).astype(int)
    X.reshape(n, -1)[:, :half] += (y[:, None] - 0.5)  # make the classes easy to tell apart
    return X, y


@parametrize_with_checks([ConvNetClassifier(epochs=5, learning_rate=0.01, seed=0)],
                         expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_init_stores_parameters_as_given_and_fit_validates_them():
    odd = object()
    clf = ConvNetClassifier(epochs=-3, optimizer=odd, build_fn__filters="many")
    assert clf.epochs == -3 and clf.optimizer is odd and clf.build_fn__filters == "many"
    X, y = _blobs(20)
    with pytest.raises(ValueError, match="epochs must be a positive int; received epochs=-3"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match=r"validation_split must be a float in \[0, 1\); received validation_split=1"):
        ConvNetClassifier(validation_split=1).fit(X, y)
    with pytest.raises(TypeError, match="build_fn must be a callable.*received build_fn='convnet'"):
        ConvNetClassifier(build_fn="convnet").fit(X, y)
    with pytest.raises(ValueError, match="loss must be 'sparse_categorical_crossentropy' or.*received loss='mse'"):
        ConvNetClassifier(loss="mse").fit(X, y)
    with pytest.raises(TypeError, match="unexpected keyword argument 'filters'.*prefix 'build_fn__'"):
        ConvNetClassifier(filters=4)


def test_build_fn_parameters_are_nested_parameters():
    clf = ConvNetClassifier(epochs=2, build_fn__filters=4)
    assert clf.get_params()["build_fn__filters"] == 4
    clf.set_params(build_fn__hidden_units=8, epochs=3)
    assert clf.get_params()["build_fn__hidden_units"] == 8 and clf.epochs == 3
    copy = clone(clf)
    assert copy.get_params() == clf.get_params() and copy is not clf
    assert "build_fn__filters=4" in repr(clf)
    with pytest.raises(ValueError, match="invalid parameter 'build_fn__'"):
        clf.set_params(build_fn__=1)

    seen = {}

    def build(input_shape, n_classes, width=1):
        seen.update(input_shape=input_shape, n_classes=n_classes, width=width)
        return fastconv.Sequential([Input(input_shape), Flatten(), Dense(width), Dense(n_classes, "softmax")])

    X, y = _blobs(30, (5, 4))
    ConvNetClassifier(build_fn=build, epochs=1, build_fn__width=3).fit(X, np.array(["a", "b", "c"])[y + (y > 5)])
    assert seen == {"input_shape": (5, 4, 1), "n_classes": 2, "width": 3}


@pytest.mark.parametrize("shape, image, wrong, match", [
    ((6, 6, 1), (6, 6, 1), (6, 6, 3), r"per-sample shape \(6, 6, 1\) as in fit; received X with shape \(2, 6, 6, 3\)"),
    ((6, 6), (6, 6, 1), (6, 5), r"per-sample shape \(6, 6\) as in fit; received X with shape \(2, 6, 5\)"),
    ((8,), (8, 1, 1), (9,), "X has 9 features, but ConvNetClassifier is expecting 8 features"),
])
def test_images_grayscale_images_and_tables(shape, image, wrong, match):
    X, y = _blobs(80, shape)
    labels = np.array(["cat", "dog"])[y]
    clf = ConvNetClassifier(epochs=15, learning_rate=0.01, seed=1).fit(X, labels)
    assert clf.input_shape_ == shape and clf.model_.input_shape == (None,) + image
    assert clf.n_features_in_ == shape[0]
    proba = clf.predict_proba(X)
    assert proba.shape == (80, 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert set(clf.predict(X)) <= {"cat", "dog"}
    assert clf.score(X, labels) == np.mean(clf.predict(X) == labels) > 0.8
    with pytest.raises(ValueError, match=match):
        clf.predict(np.zeros((2,) + wrong, np.float32))


def test_same_seed_same_model_and_the_given_optimizer_is_untouched():
    X, y = _blobs(40)
    given = optimizers.SGD(learning_rate=0.5, momentum=0.9)
    a = ConvNetClassifier(epochs=2, optimizer=given, learning_rate=0.05, seed=3).fit(X, y)
    b = ConvNetClassifier(epochs=2, optimizer=given, learning_rate=0.05, seed=3).fit(X, y)
    for wa, wb in zip(a.model_.get_weights(), b.model_.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert a.model_.optimizer is not given and a.model_.optimizer.learning_rate == 0.05
    assert given.learning_rate == 0.5 and given.iterations == 0


def test_categorical_loss_validation_split_and_history():
    X, y = _blobs(60)
    clf = ConvNetClassifier(epochs=2, loss="categorical_crossentropy", validation_split=0.25, seed=0).fit(X, y + 5)
    assert list(clf.classes_) == [5, 6]
    assert sorted(clf.history_) == ["loss", "val_loss"] and len(clf.history_["loss"]) == 2


def test_build_fn_models_that_do_not_fit_are_rejected():
    X, y = _blobs(20)

    def wrong_units(input_shape, n_classes):
        return fastconv.Sequential([Input(input_shape), Flatten(), Dense(n_classes + 1, "softmax")])

    def no_softmax(input_shape, n_classes):
        return fastconv.Sequential([Input(input_shape), Flatten(), Dense(n_classes)])

    with pytest.raises(ValueError, match=r"output has shape \(None, 2\).*received output shape \(None, 3\)"):
        ConvNetClassifier(build_fn=wrong_units, epochs=1).fit(X, y)
    with pytest.raises(TypeError, match="build_fn must return a fastconv model; received str"):
        ConvNetClassifier(build_fn=lambda s, n: "model", epochs=1).fit(X, y)
    clf = ConvNetClassifier(build_fn=no_softmax, epochs=1, loss="categorical_crossentropy", seed=0).fit(X, y)
    with pytest.raises(ValueError, match="not probabilities.*softmax"):
        clf.predict_proba(X)
    with pytest.raises(ValueError, match="at least 2 classes.*received 1 class: 7"):
        ConvNetClassifier(epochs=1).fit(X, np.full(20, 7))


def test_pickle_holds_parameters_and_the_saved_model_never_model_objects():
    X, y = _blobs(40)
    clf = ConvNetClassifier(epochs=2, seed=0, build_fn__filters=3).fit(X, y)
    data = pickle.dumps(clf)

    globals_named = {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")
                     and arg}
    strings = [arg for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)]
    assert not any(s.startswith("fastconv.") and s != "fastconv.sklearn" for s in strings), strings
    assert "ConvNetClassifier" in strings and "Sequential" not in strings and "Conv2D" not in strings
    assert not any("fastconv.models" in str(g) or "fastconv.layers" in str(g) for g in globals_named)
    state = clf.__getstate__()
    assert "model_" not in state and isinstance(state["_model_archive"], bytes)
    assert hasattr(clf, "model_")  # pickling leaves the estimator as it was

    back = pickle.loads(data)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.get_params() == clf.get_params()
    assert back.model_.optimizer.iterations == clf.model_.optimizer.iterations  # can resume training
    assert clone(back).get_params() == clf.get_params() and not hasattr(clone(back), "model_")


def test_grid_search_over_build_fn_parameters_serially():
    X, y = _blobs(60)
    search = GridSearchCV(ConvNetClassifier(epochs=2, seed=0), {"build_fn__filters": [2, 4]}, cv=2).fit(X, y)
    assert search.best_params_["build_fn__filters"] in (2, 4)
    assert search.best_estimator_.model_.layers[0].filters == search.best_params_["build_fn__filters"]


def test_default_build_fn_clips_the_kernel_to_the_image():
    model = build_convnet((5, 1, 1), 3, filters=2)
    assert model.layers[0].kernel.shape == (3, 1, 1, 2) and model.output_shape == (None, 3)
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\); received input_shape=\(5, 1\)"):
        build_convnet((5, 1), 3)

"""Graph (functional) models: construction, forward and backward through branches, merges, shared layers and
nested models, gradients, training, saving, and the errors a malformed graph gets."""
import json

import numpy as np
import pytest

import fastconv
from fastconv import layers
from fastconv.layers import Add, Concatenate, Conv2D, Dense, Flatten, Input, MaxPooling2D


def _residual_model(dtype="float32"):
    inputs = Input((8, 8, 3), dtype=dtype, name="image")
    x = Conv2D(4, 3, padding="same", activation="relu", name="stem", dtype=dtype)(inputs)
    y = Conv2D(4, 3, padding="same", activation="relu", name="branch_a", dtype=dtype)(x)
    y = Conv2D(4, 3, padding="same", name="branch_b", dtype=dtype)(y)
    z = Add(name="add", dtype=dtype)([x, y])
    z = MaxPooling2D(2, name="pool", dtype=dtype)(z)
    out = Dense(3, activation="softmax", name="head", dtype=dtype)(Flatten(name="flat", dtype=dtype)(z))
    return fastconv.Model(inputs, out, name="residual")


def _numeric_input_grad(fn, x, eps=1e-6, samples=10, rng=None):
    rng = rng or np.random.default_rng(0)
    flat = rng.choice(x.size, size=min(samples, x.size), replace=False)
    result = []
    for i in flat:
        idx = np.unravel_index(i, x.shape)
        saved = x[idx]
        x[idx] = saved + eps
        plus = fn(x)
        x[idx] = saved - eps
        minus = fn(x)
        x[idx] = saved
        result.append((idx, (plus - minus) / (2 * eps)))
    return result


def test_graph_structure_and_summary(capsys):
    model = _residual_model()
    assert [layer.name for layer in model.layers] == ["image", "stem", "branch_a", "branch_b", "add", "pool",
                                                       "flat", "head"]
    assert model.input_shape == (None, 8, 8, 3) and model.output_shape == (None, 3)
    assert model.input.shape == (None, 8, 8, 3) and model.output.shape == (None, 3)
    assert model.count_params() == 3 * 9 * 4 + 4 + 2 * (4 * 9 * 4 + 4) + 64 * 3 + 3
    model.summary()
    text = capsys.readouterr().out
    assert 'Model: "residual"' in text and "Connected to" in text
    assert "stem[0][0], branch_b[0][0]" in text    # the Add reads both branches


def test_forward_equals_manual_composition(rng):
    model = _residual_model()
    x = rng.standard_normal((5, 8, 8, 3)).astype(np.float32)
    get = model.get_layer
    h = get("stem")(x)
    z = get("add")([h, get("branch_b")(get("branch_a")(h))])
    expected = get("head")(get("flat")(get("pool")(z)))
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    np.testing.assert_array_equal(model(x), expected)


def test_backward_sums_gradients_of_a_tensor_that_feeds_two_layers(rng):
    """d/dx of a residual graph against central differences, float64 (the stem output feeds two layers)."""
    model = _residual_model("float64")
    x = rng.standard_normal((2, 8, 8, 3))
    r = rng.standard_normal((2, 3))
    grad = model.gradients(x, r)
    for idx, numeric in _numeric_input_grad(lambda v: float(np.sum(model(v) * r)), x, rng=rng):
        np.testing.assert_allclose(grad[idx], numeric, rtol=1e-5, atol=1e-8)


def test_shared_layer_gets_the_sum_of_its_gradients(rng):
    """One Dense applied to two inputs: its weight gradient sums both calls (finite differences, float64)."""
    a, b = Input((4,), dtype="float64"), Input((4,), dtype="float64")
    shared = Dense(3, activation="tanh", dtype="float64", name="shared")
    out = Dense(1, dtype="float64", name="out")(Concatenate(dtype="float64")([shared(a), shared(b)]))
    model = fastconv.Model([a, b], out)
    assert len(shared._inbound_nodes) == 2 and model.count_params() == 4 * 3 + 3 + 6 + 1
    xa, xb = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    y = rng.standard_normal((5, 1))
    model.compile(optimizer=fastconv.optimizers.SGD(learning_rate=1.0), loss="mse")
    before = shared.kernel.numpy()

    def loss_of(kernel_value):
        shared.kernel.value[...] = kernel_value
        return float(np.mean((model([xa, xb]) - y) ** 2))

    numeric = np.zeros_like(before)
    for idx in np.ndindex(before.shape):
        k = before.copy()
        k[idx] += 1e-6
        plus = loss_of(k)
        k[idx] -= 2e-6
        minus = loss_of(k)
        numeric[idx] = (plus - minus) / 2e-6
    shared.kernel.value[...] = before
    model.train_on_batch([xa, xb], y)
    np.testing.assert_allclose(before - shared.kernel.numpy(), numeric, rtol=1e-5, atol=1e-9)


def test_gradients_with_respect_to_an_inner_layer(rng):
    model = _residual_model("float64")
    x = rng.standard_normal((2, 8, 8, 3))
    r = rng.standard_normal((2, 3))
    inner = fastconv.Model(model.input, model.get_layer("add").output)
    rest_input = Input((8, 8, 4), dtype="float64")
    get = model.get_layer
    rest = get("head")(get("flat")(get("pool")(rest_input)))
    tail = fastconv.Model(rest_input, rest)
    z = inner(x)
    outputs, grad = model.gradients(x, r, wrt="add", return_outputs=True)
    np.testing.assert_allclose(outputs, model(x))
    np.testing.assert_allclose(grad, tail.gradients(z, r), rtol=1e-12)
    # a callable seed: the gradient of the top class score
    top = model.gradients(x, lambda y: np.eye(3)[y.argmax(1)], wrt=["add", "stem"])
    assert [g.shape for g in top] == [(2, 8, 8, 4), (2, 8, 8, 4)]


def test_intermediate_model_shares_weights():
    model = _residual_model()
    features = fastconv.Model(model.input, model.get_layer("add").output)
    assert features.get_layer("stem") is model.get_layer("stem")
    model.get_layer("stem").kernel.value[...] = 0.5
    assert (features.get_layer("stem").kernel.value == 0.5).all()
    assert features.output_shape == (None, 8, 8, 4) and len(features.weights) == 6


def test_fit_evaluate_and_freezing(rng):
    model = _residual_model()
    x = rng.standard_normal((32, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model._fused == [True]
    history = model.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=0, seed=1)
    assert sorted(history.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss) and 0 <= accuracy <= 1
    model.get_layer("stem").trainable = False
    frozen = model.get_layer("stem").get_weights()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for before, after in zip(frozen, model.get_layer("stem").get_weights()):
        np.testing.assert_array_equal(before, after)


def test_seeded_fit_is_reproducible(rng):
    x = rng.standard_normal((24, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    results = []
    for _ in range(2):
        model = _residual_model()
        model.set_weights([np.full(w.shape, 0.01 * (i + 1), w.dtype) for i, w in enumerate(model.get_weights())])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, seed=3)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_several_outputs_fit_predict_and_evaluate(rng):
    inputs = Input((6,))
    hidden = Dense(8, activation="relu", name="hidden")(inputs)
    cls = Dense(3, activation="softmax", name="cls")(hidden)
    reg = Dense(1, name="reg")(hidden)
    model = fastconv.Model(inputs, [cls, reg])
    model.compile("adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  loss_weights=[1.0, 0.5], metrics={"cls": ["accuracy"]})
    x = rng.standard_normal((40, 6)).astype(np.float32)
    labels, values = rng.integers(0, 3, 40), rng.standard_normal((40, 1)).astype(np.float32)
    history = model.fit(x, [labels, values], epochs=2, batch_size=10, verbose=0, seed=0)
    assert sorted(history.history) == ["cls_accuracy", "cls_loss", "loss", "reg_loss"]
    logs = model.evaluate(x, {"cls": labels, "reg": values}, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], logs["cls_loss"] + 0.5 * logs["reg_loss"], rtol=1e-5)
    probs, regression = model.predict(x, verbose=0)
    assert probs.shape == (40, 3) and regression.shape == (40, 1)
    assert model.metrics_names == ["loss", "cls_loss", "reg_loss", "cls_accuracy"]


def test_model_nested_in_sequential_as_a_frozen_base(rng):
    base_in = Input((8, 8, 3))
    base = fastconv.Model(base_in, MaxPooling2D(2)(Conv2D(4, 3, padding="same", activation="relu")(base_in)),
                          name="conv_base")
    base.trainable = False
    model = fastconv.Sequential([base, Flatten(), Dense(1, activation="sigmoid")])
    assert model.built and model.input_shape == (None, 8, 8, 3)
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2
    frozen = base.get_weights()
    x = rng.standard_normal((16, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 2, 16).astype(np.float32)
    model.compile("rmsprop", "binary_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for before, after in zip(frozen, base.get_weights()):
        np.testing.assert_array_equal(before, after)
    base.trainable = True   # fine-tuning: the base now learns too
    model.compile("rmsprop", "binary_crossentropy")
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert any((b != a).any() for b, a in zip(frozen, base.get_weights()))


def test_nested_model_backward_matches_finite_differences(rng):
    inner_in = Input((5,), dtype="float64")
    inner = fastconv.Model(inner_in, Dense(4, activation="tanh", dtype="float64")(inner_in), name="inner")
    outer_in = Input((5,), dtype="float64")
    outer = fastconv.Model(outer_in, Dense(2, dtype="float64")(inner(outer_in)))
    x = rng.standard_normal((3, 5))
    r = rng.standard_normal((3, 2))
    grad = outer.gradients(x, r)
    for idx, numeric in _numeric_input_grad(lambda v: float(np.sum(outer(v) * r)), x, rng=rng):
        np.testing.assert_allclose(grad[idx], numeric, rtol=1e-6)


def test_save_and_load_round_trip(tmp_path, rng):
    model = _residual_model()
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    x = rng.standard_normal((8, 8, 8, 3)).astype(np.float32)
    model.fit(x, rng.integers(0, 3, 8), epochs=1, verbose=0)
    path = tmp_path / "residual.fcm"
    model.save(path)
    loaded = fastconv.load_model(path)
    assert type(loaded) is fastconv.Model and [la.name for la in loaded.layers] == [la.name for la in model.layers]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    config = json.loads(json.dumps(model.get_config()))
    assert config["input_layers"] == [["image", 0, 0]] and config["output_layers"] == [["head", 0, 0]]
    add = next(entry for entry in config["layers"] if entry["name"] == "add")
    assert add["inbound_nodes"] == [[["stem", 0, 0], ["branch_b", 0, 0]]]


def test_shared_layer_config_round_trip(rng):
    a, b = Input((4,), name="a"), Input((4,), name="b")
    shared = Dense(3, name="shared")
    model = fastconv.Model([a, b], Add(name="sum")([shared(a), shared(b)]))
    clone = fastconv.Model.from_config(json.loads(json.dumps(model.get_config())))
    clone.set_weights(model.get_weights())
    xs = [rng.standard_normal((2, 4)).astype(np.float32) for _ in range(2)]
    np.testing.assert_array_equal(clone.predict(xs, verbose=0), model.predict(xs, verbose=0))
    assert len(clone.get_layer("shared")._inbound_nodes) == 2


def test_errors_name_the_layer_or_tensor():
    a, b = Input((4,), name="first"), Input((4,), name="second")
    c = Dense(2, name="uses_b")(b)
    with pytest.raises(ValueError, match=r"disconnected.*'second'"):
        fastconv.Model(a, c)
    with pytest.raises(ValueError, match=r"shape \(None, 8, 8, 3\).*received x with shape \(2, 8, 8, 4\)"):
        _residual_model().predict(np.zeros((2, 8, 8, 4), np.float32), verbose=0)
    with pytest.raises(ValueError, match=r"conv.*4-D"):
        Conv2D(2, 3, name="conv")(Input((5,)))
    with pytest.raises(TypeError, match="symbolic tensor"):
        fastconv.Model(a, np.zeros(3))
    with pytest.raises(ValueError, match="both inputs and outputs"):
        fastconv.Model(a)
    dup_in = Input((4,))
    with pytest.raises(ValueError, match="unique"):
        fastconv.Model(dup_in, Dense(2, name="same")(Dense(2, name="same")(dup_in)))
    model = fastconv.Model([a, b], Add()([a, b]))
    with pytest.raises(ValueError, match="list of 2 arrays"):
        model.predict(np.zeros((2, 4), np.float32), verbose=0)


def test_a_cycle_is_reported_not_looped_on():
    a = Input((4,))
    d = Dense(4, name="loop")
    y = d(a)
    y.node.inputs = [y]        # tamper with the graph: the layer now reads its own output
    with pytest.raises(ValueError, match="cycle.*'loop'"):
        fastconv.Model(a, y)


@pytest.mark.parametrize("kind", ["depthwise", "separable"])
def test_gradients_through_depthwise_layers_match_finite_differences(kind):
    """Regression: these layers once kept their backward state only when training, so model.gradients
    (an inference pass) could not go through them."""
    rng = np.random.default_rng(3)
    inp = layers.Input((6, 6, 2), dtype="float64")
    conv = (layers.DepthwiseConv2D(3, depth_multiplier=2, dtype="float64") if kind == "depthwise"
            else layers.SeparableConv2D(3, 3, dtype="float64"))
    model = fastconv.Model(inp, layers.Flatten(dtype="float64")(conv(inp)))
    x = rng.standard_normal((2, 6, 6, 2))
    g = rng.standard_normal(model.predict(x, verbose=0).shape)
    grad = model.gradients(x, g)
    eps, k = 1e-6, (1, 2, 3, 1)
    xp, xm = x.copy(), x.copy()
    xp[k] += eps
    xm[k] -= eps
    numeric = (np.sum(model.predict(xp, verbose=0) * g) - np.sum(model.predict(xm, verbose=0) * g)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(grad)[k], numeric, rtol=1e-6)

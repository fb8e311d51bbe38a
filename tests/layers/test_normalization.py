"""BatchNormalization and fastconv.functional_norm: against the NumPy reference, Keras 3 (torch autograd through
the Keras layer), finite differences, and bad arguments."""
import json

import numpy as np
import pytest

import fastconv
import reference as ref
from fastconv import functional_norm as FN
from fastconv import layers
from gradcheck import check_layer_gradients

# Keras's torch variables warn on np.array(variable) under NumPy 2 (inside keras, on get/set_weights): not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
# Keras 3's BatchNormalization computes in float32 even for a float64 layer (its result_type(float64, "float32") is
# float32), so it is compared at float32 tolerance; float64 accuracy is checked against the reference instead.
KERAS_TOL = TOL[np.float32]
DTYPES = [np.float32, np.float64]

# (input shape, axis): channels_last images, channels_first images, Dense outputs, a 3-D sequence
CASES = [((4, 5, 6, 3), -1), ((4, 3, 5, 6), 1), ((8, 5), -1), ((3, 4, 6), 2), ((3, 4, 6), -2)]


def noncontiguous(a):
    """The same values, as a non-contiguous view."""
    wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def channel_params(rng, c, dtype):
    return (rng.uniform(0.5, 2.0, c).astype(dtype), rng.standard_normal(c).astype(dtype),
            rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2.0, c).astype(dtype))


# --- functional API against the NumPy reference -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", CASES)
def test_moments_and_forward_match_reference(shape, axis, dtype, rng):
    x = (3 + 2 * rng.standard_normal(shape)).astype(dtype)
    mean, variance = FN.batch_norm_moments(noncontiguous(x), axis=axis)
    ref_mean, ref_var = ref.batch_norm_moments(x, axis)
    assert mean.dtype == variance.dtype == dtype and mean.shape == (shape[axis],)
    np.testing.assert_allclose(mean, ref_mean, **TOL[dtype])
    np.testing.assert_allclose(variance, ref_var, **TOL[dtype])

    gamma, beta, mm, mv = channel_params(rng, shape[axis], dtype)
    for g, b in ((gamma, beta), (None, beta), (gamma, None), (None, None)):
        y = FN.batch_norm_forward(noncontiguous(x), mm, mv, g, b, axis=axis, epsilon=1e-3)
        assert y.dtype == dtype and y.shape == shape and y.flags.c_contiguous
        np.testing.assert_allclose(y, ref.batch_norm_forward(x, mm, mv, g, b, axis, 1e-3), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", CASES[:3])
@pytest.mark.parametrize("batch_statistics", [True, False])
def test_backward_matches_reference(shape, axis, batch_statistics, dtype, rng):
    x = (1 + rng.standard_normal(shape)).astype(dtype)
    gy = rng.standard_normal(shape).astype(dtype)
    gamma, beta, mm, mv = channel_params(rng, shape[axis], dtype)
    if batch_statistics:
        mean, variance = FN.batch_norm_moments(x, axis=axis)
        ref_stats = {}
    else:
        mean, variance = mm, mv
        ref_stats = dict(mean=mm, variance=mv)
    for g in (gamma, None):
        gx, gg, gb = FN.batch_norm_backward(noncontiguous(gy), noncontiguous(x), mean, variance, g, axis=axis,
                                            epsilon=1e-3, batch_statistics=batch_statistics)
        rgx, rgg, rgb = ref.batch_norm_backward(gy, x, g, axis, 1e-3, **ref_stats)
        assert gx.dtype == gg.dtype == gb.dtype == dtype and gx.shape == shape
        np.testing.assert_allclose(gx, rgx, **TOL[dtype])
        np.testing.assert_allclose(gg, rgg, **TOL[dtype])
        np.testing.assert_allclose(gb, rgb, **TOL[dtype])
        only_x = FN.batch_norm_backward(gy, x, mean, variance, g, axis=axis, batch_statistics=batch_statistics,
                                        need_param_grads=False)
        np.testing.assert_array_equal(only_x[0], gx)
        assert only_x[1:] == (None, None)
        only_params = FN.batch_norm_backward(gy, x, mean, variance, g, axis=axis, need_input_grad=False)
        assert only_params[0] is None
        np.testing.assert_array_equal(only_params[1], gg)


def test_blocked_passes_match_one_block(rng, monkeypatch):
    # many blocks (one outer row each) against a single block: the same float64 sums, the same results
    x = (5 + rng.standard_normal((37, 3, 11))).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)

    def run():
        mean, variance = FN.batch_norm_moments(x, axis=1)
        y = FN.batch_norm_forward(x, mean, variance, np.full(3, 2.0), np.ones(3), axis=1)
        return (mean, variance, y) + FN.batch_norm_backward(g, x, mean, variance, np.full(3, 2.0), axis=1)

    one = run()
    monkeypatch.setattr(FN, "_BLOCK", 1)
    many = run()
    for a, b in zip(one, many):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_moving_statistics_update_matches_reference(rng):
    mm, mv = rng.standard_normal(4).astype(np.float32), rng.uniform(1, 2, 4).astype(np.float32)
    mean, variance = rng.standard_normal(4), rng.uniform(0, 3, 4)
    expected = ref.batch_norm_moving_average(mm, mean, 0.9), ref.batch_norm_moving_average(mv, variance, 0.9)
    FN.update_moving_statistics(mm, mv, mean, variance, 0.9)
    assert mm.dtype == mv.dtype == np.float32
    np.testing.assert_allclose(mm, expected[0], rtol=1e-6)
    np.testing.assert_allclose(mv, expected[1], rtol=1e-6)


def test_float32_statistics_stay_accurate_for_a_large_mean(rng):
    # mean 1e3, std 0.1: E[x^2] - E[x]^2 in float32 loses every digit of the variance (E[x^2] ~ 1e6 has an ulp
    # of 0.06, the variance is 0.01); the two-pass float64 sums keep it. The float32 mean itself is off by up to
    # half an ulp of 1e3 (3e-5, 3e-4 standard deviations), which bounds the error of the output.
    x = (1e3 + 0.1 * rng.standard_normal((2000, 50, 2))).astype(np.float32)
    mean, variance = FN.batch_norm_moments(x, axis=-1)
    ref_mean, ref_var = ref.batch_norm_moments(x, -1)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-7)
    np.testing.assert_allclose(variance, ref_var, rtol=1e-5)
    y = FN.batch_norm_forward(x, mean, variance, epsilon=0.0)
    np.testing.assert_allclose(y, ref.batch_norm_forward(x, ref_mean, ref_var, axis=-1, epsilon=0.0), atol=1e-3)
    np.testing.assert_allclose(y.std(axis=(0, 1), dtype=np.float64), 1, rtol=1e-3)


def test_functional_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"axis must be in \[-2, 2\).*received axis=2"):
        FN.batch_norm_moments(x, axis=2)
    with pytest.raises(TypeError, match=r"axis must be an int; received axis=1.0"):
        FN.batch_norm_moments(x, axis=1.0)
    with pytest.raises(ValueError, match=r"at least one element per channel.*\(0, 3\)"):
        FN.batch_norm_moments(np.zeros((0, 3)), axis=-1)
    with pytest.raises(ValueError, match=r"mean must have shape \(3,\).*received mean with shape \(2,\)"):
        FN.batch_norm_forward(x, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\).*\(3, 1\)"):
        FN.batch_norm_forward(x, np.zeros(3), np.ones(3), gamma=np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"epsilon must be non-negative; received epsilon=-1"):
        FN.batch_norm_forward(x, np.zeros(3), np.ones(3), epsilon=-1)
    with pytest.raises(TypeError, match=r"x must be a real array.*dtype=complex128"):
        FN.batch_norm_moments(np.zeros((2, 3), complex))
    with pytest.raises(ValueError, match=r"grad_output must have the shape of x \(2, 3\); received.*\(3, 2\)"):
        FN.batch_norm_backward(np.zeros((3, 2)), x, np.zeros(3), np.ones(3))
    with pytest.raises(TypeError, match=r"batch_statistics must be a bool; received batch_statistics=1"):
        FN.batch_norm_backward(x, x, np.zeros(3), np.ones(3), batch_statistics=1)
    mm, mv = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1.0\]; received momentum=1.5"):
        FN.update_moving_statistics(mm, mv, np.zeros(3), np.ones(3), 1.5)
    with pytest.raises(TypeError, match=r"moving_mean must be a 1-D float numpy array.*list"):
        FN.update_moving_statistics([0.0] * 3, mv, np.zeros(3), np.ones(3), 0.9)
    mv.flags.writeable = False
    with pytest.raises(ValueError, match=r"moving_variance must be writable"):
        FN.update_moving_statistics(mm, mv, np.zeros(3), np.ones(3), 0.9)


# --- the layer against Keras 3 ------------------------------------------------------------------------------------
def make_pair(keras, shape, axis, dtype, rng, **kwargs):
    """A fastconv BatchNormalization and a Keras one with the same random weights, both built for ``shape``."""
    name = np.dtype(dtype).name
    ours = layers.BatchNormalization(axis=axis, dtype=name, **kwargs)
    ours.build((None,) + shape[1:])
    c = shape[axis]
    gamma, beta, mm, mv = channel_params(rng, c, dtype)
    values = dict(gamma=gamma, beta=beta, moving_mean=mm, moving_variance=mv)
    ours.set_weights([values[w.name] for w in ours.weights])
    theirs = keras.layers.BatchNormalization(axis=axis, dtype=name, **kwargs)
    theirs.build((None,) + shape[1:])
    assert [w.name for w in theirs.weights] == [w.name for w in ours.weights]
    assert [w.trainable for w in theirs.weights] == [w.trainable for w in ours.weights]
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def keras_forward_backward(torch, layer, x, grad_out, training):
    for w in layer.trainable_weights:
        w.value.grad = None
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx, training=training)
    ty.backward(torch.tensor(grad_out))
    grads = [w.value.grad.numpy() for w in layer.trainable_weights]
    return ty.detach().numpy(), tx.grad.numpy(), grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", CASES[:4])
def test_training_steps_match_keras(shape, axis, dtype, rng, keras, torch):
    ours, theirs = make_pair(keras, shape, axis, dtype, rng, momentum=0.9)
    for step in range(3):
        x = (step + rng.standard_normal(shape) * (1 + step)).astype(dtype)
        grad_out = rng.standard_normal(shape).astype(dtype)
        y = ours(x, training=True)
        grad_x, grads = ours.backward(grad_out)
        ky, kgx, kgrads = keras_forward_backward(torch, theirs, x, grad_out, training=True)
        assert y.dtype == grad_x.dtype == dtype and len(grads) == 2
        np.testing.assert_allclose(y, ky, **KERAS_TOL)
        np.testing.assert_allclose(grad_x, kgx, **KERAS_TOL)
        for g, k in zip(grads, kgrads):
            np.testing.assert_allclose(g, k, **KERAS_TOL)
        for w, k in zip(ours.weights, theirs.weights):                    # moving statistics after each step
            np.testing.assert_allclose(w.value, k.numpy(), **KERAS_TOL, err_msg=w.path)
    # inference uses the moving statistics Keras holds after the three steps
    x = rng.standard_normal(shape).astype(dtype)
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x), training=False).detach().numpy(), **KERAS_TOL)


@pytest.mark.parametrize("center, scale", [(False, True), (True, False), (False, False)])
def test_center_and_scale_switches_match_keras(center, scale, rng, keras, torch):
    shape = (6, 4, 3)
    ours, theirs = make_pair(keras, shape, -1, np.float64, rng, center=center, scale=scale)
    assert [w.name for w in ours.weights] == ([] if not scale else ["gamma"]) + ([] if not center else ["beta"]) + [
        "moving_mean", "moving_variance"]
    x, grad_out = rng.standard_normal(shape), rng.standard_normal(shape)
    y = ours(x, training=True)
    grad_x, grads = ours.backward(grad_out)
    ky, kgx, kgrads = keras_forward_backward(torch, theirs, x, grad_out, training=True)
    np.testing.assert_allclose(y, ky, **KERAS_TOL)
    np.testing.assert_allclose(grad_x, kgx, **KERAS_TOL)
    assert len(grads) == len(kgrads) == scale + center
    for g, k in zip(grads, kgrads):
        np.testing.assert_allclose(g, k, **KERAS_TOL)
    no_input, same = ours.backward(grad_out, need_input_grad=False)          # the first layer with weights
    assert no_input is None and len(same) == len(grads)
    for a, b in zip(same, grads):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", [CASES[0], CASES[1]])
def test_frozen_layer_runs_in_inference_mode_like_keras(shape, axis, dtype, rng, keras, torch):
    ours, theirs = make_pair(keras, shape, axis, dtype, rng)
    ours.trainable = theirs.trainable = False
    before = ours.get_weights()
    x = (2 + rng.standard_normal(shape)).astype(dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    y = ours(x, training=True)
    grad_x, grads = ours.backward(grad_out)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx, training=True)
    ty.backward(torch.tensor(grad_out))
    assert grads == [] and ours.trainable_weights == [] and len(ours.non_trainable_weights) == 4
    np.testing.assert_allclose(y, ty.detach().numpy(), **KERAS_TOL)
    np.testing.assert_allclose(y, ours(x, training=False), **KERAS_TOL)          # the inference output
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), **KERAS_TOL)
    for w, b, k in zip(ours.get_weights(), before, theirs.get_weights()):           # statistics untouched
        np.testing.assert_array_equal(w, b)
        np.testing.assert_allclose(w, k, **KERAS_TOL)
    ours.trainable = True                                                            # thawed: batch statistics
    ours(x, training=True)
    assert not np.array_equal(ours.moving_mean.value, before[2])


def test_inference_call_changes_nothing_and_keeps_nothing(rng):
    bn = layers.BatchNormalization(axis=1)
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    y = bn(x)
    assert bn._cache is None and y.dtype == np.float32
    np.testing.assert_allclose(y, x / np.sqrt(np.float32(1 + 1e-3)), rtol=1e-6)     # initial moving stats 0, 1
    np.testing.assert_array_equal(bn.moving_mean.value, 0)
    with pytest.raises(RuntimeError, match=r"backward needs a forward call with training=True"):
        bn.backward(y)


def test_results_do_not_depend_on_the_thread_count(rng, threads):
    x = rng.standard_normal((4, 6, 6, 5)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        threads.set_num_threads(n)
        bn = layers.BatchNormalization()
        y = bn(x, training=True)
        results.append((y, *bn.backward(g)[:1], *bn.backward(g)[1], bn.moving_variance.value.copy()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


# --- finite differences ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, shape", [
    (dict(), (5, 4)),
    (dict(axis=1), (3, 2, 4, 3)),
    (dict(axis=-1, epsilon=0.1), (2, 3, 3, 4)),
    (dict(axis=2, center=False), (3, 2, 4)),
    (dict(axis=-1, scale=False), (6, 3)),
])
@pytest.mark.parametrize("frozen", [False, True])
def test_gradients_against_finite_differences(kwargs, shape, frozen, rng):
    layer = layers.BatchNormalization(**kwargs, dtype="float64", gamma_initializer="random_normal",
                                      beta_initializer="random_normal", moving_mean_initializer="random_normal",
                                      moving_variance_initializer=fastconv.initializers.RandomUniform(0.5, 2.0))
    layer.trainable = not frozen
    check_layer_gradients(layer, rng.standard_normal(shape), rng)


# --- bad arguments, wrong inputs, configs ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(axis=1.0), TypeError, r"axis must be an int; received axis=1.0"),
    (dict(momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\]; received momentum=1.5"),
    (dict(momentum="0.9"), TypeError, r"momentum must be a float; received momentum='0.9'"),
    (dict(epsilon=-1e-3), ValueError, r"epsilon must be at least 0.0; received epsilon=-0.001"),
    (dict(center="yes"), TypeError, r"center must be a bool; received center='yes'"),
    (dict(scale=None), TypeError, r"scale must be a bool; received scale=None"),
    (dict(gamma_initializer="onez"), ValueError, r"gamma_initializer must be one of.*gamma_initializer='onez'"),
    (dict(renorm=True), TypeError, r"unexpected keyword arguments; received \{'renorm': True\}"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        layers.BatchNormalization(**kwargs)


@pytest.mark.parametrize("axis, shape, match", [
    (0, (None, 4), r"axis of layer 'bn' must name a non-batch axis.*received axis=0"),
    (2, (None, 4), r"axis of layer 'bn' must name a non-batch axis of its 2-D input.*received axis=2"),
    (-3, (None, 4), r"received axis=-3"),
    (-1, (None,), r"input of layer 'bn' must have at least 2 axes.*\(None,\)"),
    (1, (None, None, 4), r"input of layer 'bn' must have a known size along axis=1.*\(None, None, 4\)"),
])
def test_bad_input_shapes_at_build(axis, shape, match):
    with pytest.raises(ValueError, match=match):
        layers.BatchNormalization(axis=axis, name="bn").build(shape)


def test_input_of_another_shape_is_refused():
    bn = layers.BatchNormalization(name="bn")
    bn(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"input of layer 'bn' must have shape \(None, 4, 4, 3\); received.*\(2, 3\)"):
        bn(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"received input with shape \(2, 4, 4, 5\)"):
        bn(np.zeros((2, 4, 4, 5), np.float32))


def test_config_round_trips_through_json_and_keeps_the_weights_in_keras_order():
    bn = layers.BatchNormalization(axis=1, momentum=0.9, epsilon=1e-5, center=False,
                                   gamma_initializer=fastconv.initializers.RandomNormal(stddev=0.1, seed=3),
                                   moving_variance_initializer="zeros", name="bn_1", trainable=False)
    config = json.loads(json.dumps(layers.serialize(bn)))
    clone = layers.deserialize(config)
    assert type(clone) is layers.BatchNormalization and clone.get_config() == bn.get_config()
    clone.build((None, 3, 4, 4))
    assert [w.path for w in clone.weights] == ["bn_1/gamma", "bn_1/moving_mean", "bn_1/moving_variance"]
    assert clone.trainable is False and (clone.moving_variance.value == 0).all()


def test_sequential_training_updates_statistics_and_saving_keeps_them(rng, tmp_path):
    model = fastconv.Sequential([layers.Input((6, 6, 2)), layers.Conv2D(4, 3), layers.BatchNormalization(),
                                 layers.ReLU(), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((16, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    bn = model.layers[1]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not (bn.moving_mean.value == 0).all() and len(model.trainable_weights) == 6
    path = tmp_path / "bn.fastconv"
    model.save(path)
    loaded = fastconv.load_model(path)
    np.testing.assert_array_equal(loaded.layers[1].moving_variance.value, bn.moving_variance.value)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)

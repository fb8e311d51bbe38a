"""Optimizers against torch.optim on identical gradient sequences, and Keras's epsilon placement."""
import numpy as np
import pytest

from fastconv import optimizers
from fastconv.layers import Variable

STEPS = 25


def run_fastconv(optimizer, w0, grads):
    w = Variable(w0.copy(), "kernel", "layer/kernel")
    for g in grads:
        optimizer.apply([g], [w])
    return w.value


def run_torch(torch, make, w0, grads):
    p = torch.nn.Parameter(torch.tensor(w0.copy()))
    opt = make([p])
    for g in grads:
        opt.zero_grad()
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy()


def sequence(rng, dtype, shape=(4, 5)):
    w0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(STEPS)]
    return w0, grads


TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True)])
def test_sgd_matches_torch(momentum, nesterov, dtype, rng, torch):
    w0, grads = sequence(rng, dtype)
    mine = run_fastconv(optimizers.SGD(learning_rate=0.05, momentum=momentum, nesterov=nesterov), w0, grads)
    theirs = run_torch(torch, lambda p: torch.optim.SGD(p, lr=0.05, momentum=momentum, nesterov=nesterov), w0, grads)
    np.testing.assert_allclose(mine, theirs, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum, centered", [(0.0, False), (0.9, False), (0.0, True), (0.5, True)])
def test_rmsprop_matches_torch_with_zero_epsilon(momentum, centered, dtype, rng, torch):
    """With epsilon = 0 Keras's and PyTorch's RMSprop are the same update (Keras's rho is torch's alpha)."""
    w0, grads = sequence(rng, dtype)
    mine = run_fastconv(optimizers.RMSprop(learning_rate=0.01, rho=0.8, momentum=momentum, epsilon=0.0,
                                           centered=centered), w0, grads)
    theirs = run_torch(torch, lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.8, eps=0.0, momentum=momentum,
                                                            centered=centered), w0, grads)
    np.testing.assert_allclose(mine, theirs, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_matches_torch_with_zero_epsilon(amsgrad, dtype, rng, torch):
    w0, grads = sequence(rng, dtype)
    mine = run_fastconv(optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.95, epsilon=0.0, amsgrad=amsgrad),
                        w0, grads)
    theirs = run_torch(torch, lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.95), eps=0.0, amsgrad=amsgrad),
                       w0, grads)
    np.testing.assert_allclose(mine, theirs, **TOL[dtype])


def test_rmsprop_epsilon_goes_inside_the_square_root(rng, torch):
    """Keras: lr * g / sqrt(v + eps). PyTorch: lr * g / (sqrt(v) + eps). fastconv follows Keras."""
    g = np.full((3,), 1e-3)
    eps, rho, lr = 1e-4, 0.9, 0.1
    v = (1 - rho) * g * g
    keras_step = lr * g / np.sqrt(v + eps)
    torch_step = lr * g / (np.sqrt(v) + eps)
    mine = -run_fastconv(optimizers.RMSprop(learning_rate=lr, rho=rho, epsilon=eps), np.zeros(3), [g])
    np.testing.assert_allclose(mine, keras_step, rtol=1e-12)
    theirs = -run_torch(torch, lambda p: torch.optim.RMSprop(p, lr=lr, alpha=rho, eps=eps), np.zeros(3), [g])
    np.testing.assert_allclose(theirs, torch_step, rtol=1e-12)
    assert not np.allclose(mine, theirs, rtol=1e-3)               # the difference is real, and documented


def test_adam_epsilon_is_epsilon_hat(rng, torch):
    """Keras's epsilon is added to sqrt(v) before bias correction; PyTorch's eps equals epsilon / sqrt(1 - b2^t),
    so a per-step rescaled eps reproduces Keras with torch for one step."""
    w0, grads = sequence(rng, np.float64, shape=(6,))
    grads = [g * 1e-4 for g in grads]                              # small gradients make epsilon matter
    eps, b2 = 1e-4, 0.999
    mine = run_fastconv(optimizers.Adam(learning_rate=0.01, epsilon=eps), w0, grads[:1])
    theirs_same_eps = run_torch(torch, lambda p: torch.optim.Adam(p, lr=0.01, eps=eps), w0, grads[:1])
    theirs_rescaled = run_torch(torch, lambda p: torch.optim.Adam(p, lr=0.01, eps=eps / np.sqrt(1 - b2)), w0,
                                grads[:1])
    np.testing.assert_allclose(mine, theirs_rescaled, rtol=1e-12)
    assert not np.allclose(mine - w0, theirs_same_eps - w0, rtol=1e-2)


def test_keras_defaults():
    assert optimizers.SGD().get_config() == {"name": "SGD", "learning_rate": 0.01, "momentum": 0.0,
                                             "nesterov": False}
    assert optimizers.RMSprop().get_config() == {"name": "RMSprop", "learning_rate": 0.001, "rho": 0.9,
                                                 "momentum": 0.0, "epsilon": 1e-7, "centered": False}
    assert optimizers.Adam().get_config() == {"name": "adam", "learning_rate": 0.001, "beta_1": 0.9,
                                              "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}


def test_state_round_trip_continues_identically(rng):
    w0, grads = sequence(rng, np.float32)
    a = optimizers.Adam(learning_rate=0.01, amsgrad=True)
    wa = Variable(w0.copy(), "kernel", "l/kernel")
    for g in grads[:10]:
        a.apply([g], [wa])
    b = optimizers.deserialize(optimizers.serialize(a))
    b.set_state(a.get_state())
    wb = Variable(wa.value.copy(), "kernel", "l/kernel")
    for g in grads[10:]:
        a.apply([g], [wa])
        b.apply([g], [wb])
    np.testing.assert_array_equal(wa.value, wb.value)
    assert a.iterations == b.iterations == STEPS


def test_updates_stay_float32_and_in_place(rng):
    w = Variable(np.ones((3,), dtype=np.float32), "k", "l/k")
    buffer = w.value
    optimizers.Adam().apply([np.ones(3)], [w])                     # a float64 gradient is cast
    assert w.value is buffer and w.value.dtype == np.float32


@pytest.mark.parametrize("make, exc, pattern", [
    (lambda: optimizers.SGD(learning_rate=0), ValueError, r"learning_rate.*received learning_rate=0"),
    (lambda: optimizers.SGD(momentum=1.5), ValueError, r"momentum.*received momentum=1.5"),
    (lambda: optimizers.SGD(nesterov="yes"), TypeError, r"nesterov.*received nesterov='yes'"),
    (lambda: optimizers.RMSprop(rho=1.0), ValueError, r"rho.*received rho=1.0"),
    (lambda: optimizers.Adam(beta_1=-0.1), ValueError, r"beta_1.*received beta_1=-0.1"),
    (lambda: optimizers.Adam(epsilon=-1), ValueError, r"epsilon.*received epsilon=-1"),
    (lambda: optimizers.Adam(learning_rate="fast"), TypeError, r"learning_rate.*received learning_rate='fast'"),
    (lambda: optimizers.get("adamw"), ValueError, r"optimizer must be one of .*received optimizer='adamw'"),
    (lambda: optimizers.get(None), TypeError, r"received optimizer=None"),
])
def test_bad_arguments(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        make()


def test_gradient_shape_mismatch():
    w = Variable(np.ones((3,), dtype=np.float32), "k", "l/k")
    with pytest.raises(ValueError, match=r"'l/k'.*\(3,\).*\(4,\)"):
        optimizers.SGD().apply([np.ones(4)], [w])

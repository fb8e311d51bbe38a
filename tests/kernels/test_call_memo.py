"""The functional API remembers validated call signatures (fastconv._call_memo): a remembered signature must
never stand in for a call that differs in anything it did not fix (values, out=, dtypes, byte order, types of
option values), and a bad call must raise however often good calls with the same shapes came first."""
import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import _call_memo

RNG = np.random.default_rng(7)
X = RNG.standard_normal((2, 7, 7, 3)).astype(np.float32)
W = RNG.standard_normal((3, 3, 3, 5)).astype(np.float32)
B = RNG.standard_normal(5).astype(np.float32)
GO = RNG.standard_normal((2, 7, 7, 5)).astype(np.float32)
OPTIONS = dict(stride=1, padding="same")


def _calls():
    """Each remembered function, called on fresh arrays built from lists (so never through the memo)."""
    pooled, indices = F.max_pool2d(X, 2, return_indices=True, index_format="window")
    return {
        "conv2d": (lambda: F.conv2d(X, W, B, **OPTIONS),
                   lambda: F.conv2d(X.tolist(), W.tolist(), B.tolist(), **OPTIONS)),
        "conv2d_relu": (lambda: F.conv2d_relu(X, W, B, **OPTIONS),
                        lambda: F.conv2d_relu(X.tolist(), W.tolist(), B.tolist(), **OPTIONS)),
        "grad_input": (lambda: F.conv2d_grad_input(GO, W, X.shape, **OPTIONS),
                       lambda: F.conv2d_grad_input(GO.tolist(), W.tolist(), list(X.shape), **OPTIONS)),
        "grad_weight": (lambda: F.conv2d_grad_weight(GO, X, W.shape, **OPTIONS),
                        lambda: F.conv2d_grad_weight(GO.tolist(), X.tolist(), list(W.shape), **OPTIONS)),
        "max_pool2d": (lambda: F.max_pool2d(X, 2), lambda: F.max_pool2d(X.tolist(), 2)),
        "max_pool2d_grad": (
            lambda: F.max_pool2d_grad(pooled, indices, X.shape, pool_size=2, index_format="window"),
            lambda: F.max_pool2d_grad(pooled.tolist(), indices, list(X.shape), pool_size=2,
                                      index_format="window")),
    }


@pytest.mark.parametrize("name", list(_calls()))
def test_remembered_calls_give_the_validated_result(name):
    remembered, fresh = _calls()[name]
    first = remembered()
    for _ in range(3):
        np.testing.assert_array_equal(remembered(), first)
    validated = fresh()  # (lists: validated every time, float64 in, float64 out)
    assert validated.dtype == np.float64 and first.dtype == np.float32
    np.testing.assert_allclose(validated, first, rtol=1e-4, atol=1e-4)


def test_dtype_and_byte_order_are_part_of_the_signature():
    expected = F.conv2d(X, W, **OPTIONS)
    as64 = F.conv2d(X.astype(np.float64), W.astype(np.float64), **OPTIONS)
    assert as64.dtype == np.float64
    swapped = F.conv2d(X.astype(">f4"), W.astype(">f4"), **OPTIONS)
    assert swapped.dtype == np.float32
    np.testing.assert_array_equal(swapped, expected)
    with pytest.raises(TypeError, match="x must be a real array"):
        F.conv2d(X.astype(np.complex64), W, **OPTIONS)


def test_per_call_checks_still_run_on_remembered_signatures():
    out = np.empty((2, 7, 7, 5), np.float32)
    F.conv2d(X, W, out=out, **OPTIONS)
    with pytest.raises(TypeError, match="out must have dtype"):
        F.conv2d(X, W, out=out.astype(np.float64), **OPTIONS)
    buffer = np.zeros(out.size + X.size, np.float32)
    shared_out = buffer[:out.size].reshape(out.shape)
    F.conv2d(X, W, out=shared_out, **OPTIONS)  # (remembered, with no overlap)
    overlapping_x = buffer[out.size - 10:out.size - 10 + X.size].reshape(X.shape)
    with pytest.raises(ValueError, match="must not overlap"):
        F.conv2d(overlapping_x, W, out=shared_out, **OPTIONS)
    with pytest.raises(ValueError, match="bias must have shape"):
        F.conv2d(X, W, B[:4], **OPTIONS)
    pooled, indices = F.max_pool2d(X, 2, return_indices=True, index_format="window")
    F.max_pool2d_grad(pooled, indices, X.shape, pool_size=2, index_format="window")
    with pytest.raises(ValueError, match="indices must name"):
        F.max_pool2d_grad(pooled, np.full_like(indices, 200), X.shape, pool_size=2, index_format="window")


def test_values_still_decide_the_algorithm():
    # A NaN weight after finite ones of the same shapes: "auto" still sends it down the exact (im2col) path.
    bad = W.copy()
    bad[0, 0, 0, 0] = np.nan
    F.conv2d(X, W, padding=1)
    np.testing.assert_array_equal(F.conv2d(X, bad, padding=1), F.conv2d(X, bad, padding=1, algorithm="im2col"))


@pytest.mark.parametrize("call", [
    lambda: F.conv2d_grad_input(GO, W, (2, 7, 7, True), **OPTIONS),
    lambda: F.conv2d_grad_weight(GO, X, (3, 3, 3, 5.0), **OPTIONS),
    lambda: F.conv2d(X, W, stride=1.0, padding="same"),
    lambda: F.max_pool2d(X, 2.0),
])
def test_equal_but_not_plain_options_are_checked_every_time(call):
    F.conv2d_grad_input(GO, W, X.shape, **OPTIONS)
    F.conv2d_grad_weight(GO, X, W.shape, **OPTIONS)
    F.max_pool2d(X, 2)
    for _ in range(2):
        with pytest.raises(TypeError):
            call()


def test_signatures_need_exact_ndarrays_and_plain_options():
    class Sub(np.ndarray):
        pass

    assert _call_memo.signature((X, None), (1, "same")) == (((X.shape, X.dtype), None), (1, "same"), (int, str))
    assert _call_memo.signature((X.view(Sub),), (1,)) is None
    assert _call_memo.signature((X.tolist(),), (1,)) is None
    assert _call_memo.signature((X,), (1.0,)) is None
    assert _call_memo.signature((X,), ((True, 1),)) is None
    # True == 1 and hashes alike: the types keep them apart
    assert _call_memo.signature((X,), (True,)) != _call_memo.signature((X,), (1,))


def test_the_table_stays_bounded():
    memo = _call_memo.CallMemo()
    for i in range(_call_memo.REMEMBERED_CALLS + 10):
        memo.put(((i,), (), ()), i)
        assert len(memo) <= _call_memo.REMEMBERED_CALLS
    memo.put(None, "never")
    assert memo.get(None) is None
    memo.clear()
    assert len(memo) == 0


def test_thread_count_changes_apply_to_remembered_signatures():
    expected = F.conv2d(X, W, **OPTIONS)
    previous = fastconv.get_num_threads()
    try:
        for n in (1, 2, 1):
            fastconv.set_num_threads(n)
            np.testing.assert_array_equal(F.conv2d(X, W, **OPTIONS), expected)
    finally:
        fastconv.set_num_threads(previous)

"""The functional API remembers the problems it has validated (fastconv._problem): a remembered problem must never
stand in for arguments that only compare equal to it, and a bad call must raise however often good ones came first."""
import numpy as np
import pytest

import fastconv
from fastconv import _problem

X = np.ones((1, 6, 6, 2), np.float32)
W = np.ones((3, 3, 2, 4), np.float32)


@pytest.mark.parametrize("options, error", [
    (dict(stride=True), TypeError),                    # True == 1
    (dict(stride=(True, 1)), TypeError),
    (dict(stride=1.0), TypeError),                     # 1.0 == 1
    (dict(dilation=(1.0, 1)), TypeError),
    (dict(padding=((True, 1), (1, 1))), TypeError),    # (True, 1) == (1, 1)
    (dict(padding=((1.5, 1), (1, 1))), TypeError),
    (dict(groups=True), TypeError),
    (dict(padding="sideways"), ValueError),
    (dict(stride=0), ValueError),
])
@pytest.mark.parametrize("good", [dict(stride=1, padding=((1, 1), (1, 1)), dilation=1, groups=1),
                                  dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)])
def test_bad_options_raise_after_equal_good_ones(options, error, good):
    expected = fastconv.conv2d(X, W, **good)
    for _ in range(2):  # remembered now
        np.testing.assert_array_equal(fastconv.conv2d(X, W, **good), expected)
        with pytest.raises(error):
            fastconv.conv2d(X, W, **{**good, **options})


def test_equal_values_of_other_types_are_validated_afresh():
    # NumPy integers and lists are accepted, but checked every time rather than looked up.
    a = fastconv.conv2d(X, W, stride=np.int64(2), padding=[[1, 1], [1, 1]])
    b = fastconv.conv2d(X, W, stride=2, padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(a, b)
    assert _problem._plain((1, 2)) and _problem._plain(((1, 1), (0, 0))) and _problem._plain("same")
    for value in [(True, 1), ((True, 1), (1, 1)), (1.0, 1), [1, 1], np.int64(1), ((1, 1), [1, 1]), 1.0]:
        assert not _problem._plain(value), value


def test_remembered_problems_are_the_validated_ones():
    kwargs = dict(stride=1, padding="same", dilation=1, groups=1, channels_last=True)
    first = _problem.conv_problem((2, 9, 7, 3), (3, 3, 3, 5), **kwargs)
    assert _problem.conv_problem((2, 9, 7, 3), (3, 3, 3, 5), **kwargs) is first
    other = _problem.conv_problem((2, 9, 8, 3), (3, 3, 3, 5), **kwargs)
    assert (other.in_w, other.out_w) == (8, 8) and (first.in_w, first.out_w) == (7, 7)
    with pytest.raises(ValueError, match="groups must divide"):
        _problem.conv_problem((2, 9, 7, 3), (3, 3, 3, 5), **{**kwargs, "groups": 2})
    for _ in range(_problem.REMEMBERED_PROBLEMS + 5):  # a full table is emptied, never grown without bound
        _problem.pool_problem((1, 4, 4, 1), pool_size=2, stride=None, padding="valid", ceil_mode=False,
                              channels_last=True, input_name=f"x{_}")
    with pytest.raises(ValueError, match="padding must be smaller"):
        _problem.pool_problem((1, 4, 4, 1), pool_size=2, stride=None, padding=2, ceil_mode=False,
                              channels_last=True)

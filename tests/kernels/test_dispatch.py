"""Run-time instruction-set dispatch: FASTCONV_ISA selects a level, and every level computes the same thing."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv

SCRIPT = """
import sys, numpy as np, fastconv
rng = np.random.default_rng(7)
x = rng.standard_normal((2, 11, 13, 10)).astype(np.float32)
w = rng.standard_normal((3, 3, 5, 22)).astype(np.float32)
y = fastconv.conv2d(x, w, rng.standard_normal(22).astype(np.float32), padding=((1, 2), (0, 1)), stride=(1, 2),
                    groups=2, algorithm="direct")
# Max-pooling's channel loops are dispatched too; 37 channels leave a vector tail at every level, ties and a NaN
# exercise the winner rules, and stride 1 makes windows overlap in the backward gather.
xp = rng.integers(0, 4, (2, 9, 8, 37)).astype(np.float32)
xp[1, 3, 4, 5] = np.nan
pooled, idx = fastconv.max_pool2d(xp, 3, stride=1, padding="same", return_indices=True)
gp = fastconv.max_pool2d_grad(rng.standard_normal(pooled.shape).astype(np.float32), idx, xp.shape, pool_size=3,
                              stride=1, padding="same")
np.savez(sys.argv[1], conv=y, pooled=pooled, idx=idx, pool_grad=gp)
print(fastconv.show_config()["isa"])
"""


def _run(tmp_path, isa):
    env = dict(os.environ, FASTCONV_ISA=isa)
    path = tmp_path / f"{isa or 'default'}.npz"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, capture_output=True, text=True,
                          check=True)
    return proc.stdout.strip().splitlines()[-1], np.load(path), proc.stderr


def test_baseline_level_can_be_forced_and_agrees_with_the_best(tmp_path):
    best_name, best, _ = _run(tmp_path, "")
    assert best_name == fastconv.show_config()["best_isa"]
    base_name, base, _ = _run(tmp_path, "baseline")
    assert base_name == "baseline"
    np.testing.assert_allclose(base["conv"], best["conv"], rtol=1e-5, atol=1e-4)
    for name in ("pooled", "idx", "pool_grad"):  # selects and sums in one fixed order: equal to the bit
        np.testing.assert_array_equal(base[name], best[name], err_msg=name)


@pytest.mark.parametrize("value", ["sse9", "avx512"])
def test_unknown_or_unsupported_level_warns_and_falls_back(tmp_path, value):
    name, _, stderr = _run(tmp_path, value)
    if value == "avx512" and fastconv.show_config()["best_isa"] == "avx512":
        assert name == "avx512"
    else:
        assert name == fastconv.show_config()["best_isa"]
        assert "FASTCONV_ISA" in stderr

"""python -m fastconv.bench runs end to end and writes its results (its timings are never asserted)."""
import json
import sys

import pytest

import fastconv
from fastconv.bench import report, run, training
from fastconv.bench.__main__ import main


def test_bench_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "mnist_c2", "--ops", "forward,grad_weight", "--no-pool", "--rounds", "1",
                 "--no-training", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mnist_c2" in printed and "geometric mean" in printed
    results = json.loads(out.read_text())
    assert [row["op"] for row in results["conv"]] == ["forward", "grad_weight"]
    assert all(t > 0 for row in results["conv"] for t in row["seconds"].values())


def test_bench_rejects_unknown_layer():
    with pytest.raises(SystemExit, match="unknown layer"):
        main(["--layers", "no_such_layer"])


def test_bench_training_step_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "mnist_c2", "--ops", "forward", "--no-pool", "--rounds", "1",
                 "--json", str(out)]) == 0
    assert "mnist_convnet" in capsys.readouterr().out
    rows = json.loads(out.read_text())["training"]
    assert [row["case"] for row in rows] == ["mnist_convnet"]
    assert "fastconv_nhwc" in rows[0]["seconds"]
    assert all(t > 0 for t in rows[0]["seconds"].values())


def test_bench_no_training_flag(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "mnist_c2", "--ops", "forward", "--no-pool", "--rounds", "1",
                 "--no-training", "--json", str(out)]) == 0
    assert "mnist_convnet" not in capsys.readouterr().out
    assert json.loads(out.read_text())["training"] == []


def test_bench_training_without_torch(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    rows = run.training_rows([training.TRAINING_MODELS[0]], threads=1, rounds=1, min_seconds=0.0)
    assert list(rows[0]["seconds"]) == ["fastconv_nhwc"]
    assert "mnist_convnet" in report.training_table(rows)


def test_training_models_match_torch_step_for_step():
    """Same weights, same batch, same SGD: the losses of the first steps agree (a check of the bench's models)."""
    pytest.importorskip("torch")
    model = training.TRAINING_MODELS[0]
    fastconv_step = training.fastconv_step(model)
    torch_step = training.torch_step(model, channels_last=True, threads=fastconv.get_num_threads())
    for _ in range(2):
        assert float(torch_step()) == pytest.approx(fastconv_step(), rel=1e-5)


def test_numpy_peers_compute_what_fastconv_computes():
    """The plain-NumPy baselines time real work: their results equal fastconv's on the same inputs."""
    import numpy as np

    from fastconv.bench import peers, suite

    layer = suite.ConvLayer("tiny", 2, 3, 9, 4, 3, 2, 1)
    x, w, _ = peers.conv_inputs(layer)
    expected = fastconv.conv2d(x, w, stride=2, padding=1)
    np.testing.assert_allclose(peers.numpy_conv(layer)().reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)
    case = suite.PoolCase("tiny", 2, 7, 3, 3, 2, "same")
    np.testing.assert_array_equal(peers.numpy_pool(case)(),
                                  fastconv.max_pool2d(peers.pool_inputs(case), 3, stride=2, padding="same"))


def test_bench_reports_each_installed_peer(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "mnist_c2", "--ops", "forward", "--no-pool", "--rounds", "1",
                 "--no-training", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert "numpy" in results["peers"] and "numpy" in results["conv"][0]["seconds"]
    assert "vs each peer" in printed and "numpy" in printed
    assert set(results["conv"][0]["ratios"]) >= {"numpy"}


def test_bench_with_numpy_as_the_only_peer(tmp_path, monkeypatch, capsys):
    """A wheel installed without torch or onnxruntime still benchmarks (against NumPy) and plots."""
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["--quick", "--layers", "mnist_c2", "--ops", "forward", "--rounds", "1", "--no-training",
                 "--json", str(out), "--plot", str(png)]) == 0
    results = json.loads(out.read_text())
    assert list(results["peers"]) == ["numpy"] and png.stat().st_size > 0
    assert "channels_first vs NCHW" not in capsys.readouterr().out


@pytest.mark.parametrize("mode", ["memory", "warmup", "torch"])
def test_memory_and_warmup_children_report_their_measurements(mode):
    # bench/bench_memory_warmup.py measures each case in a fresh child process; each mode's child runs and
    # reports what the tables print (PyTorch's child reports null without PyTorch).
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "bench_memory_warmup.py"
    if not path.exists():
        pytest.skip("the bench/ scripts are not beside these tests")
    spec = importlib.util.spec_from_file_location("bench_memory_warmup", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for op in script.OPS:
        got = script._child("mnist_c2", 2, op, 1, mode)
        if mode == "torch" and got is None:
            pytest.importorskip("torch")
        keys = {"extra", "result", "rss_extra"} if mode == "memory" else {"first", "steady"}
        assert set(got) == keys and all(got[k] >= 0 for k in keys if k != "rss_extra"), (op, got)

"""python -m fastconv.bench runs end to end and writes its results (its timings are never asserted)."""
import json

import pytest

from fastconv.bench.__main__ import main


def test_bench_quick_run_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["--quick", "--layers", "mnist_c2", "--ops", "forward,grad_weight", "--no-pool", "--rounds", "1",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mnist_c2" in printed and "geometric mean" in printed
    results = json.loads(out.read_text())
    assert [row["op"] for row in results["conv"]] == ["forward", "grad_weight"]
    assert all(t > 0 for row in results["conv"] for t in row["seconds"].values())


def test_bench_rejects_unknown_layer():
    with pytest.raises(SystemExit, match="unknown layer"):
        main(["--layers", "no_such_layer"])

"""Every file reader, fed mutated and truncated versions of valid files, fails cleanly or loads.

For each reader (``_hostile_targets.READERS``: Keras HDF5 in its three layouts, ``.keras``, PyTorch zip,
safetensors, ONNX, fastconv's model and weights files, images) Hypothesis draws mutations of the seed files in
``corpus/`` (``_hostile_mutations.py``: byte edits, and structural edits inside zip members, JSON documents and
HDF5 attributes). Each case is opened in a sandboxed worker process (``_hostile_harness.py``), which must answer
within the per-case timeout with a clean load or one of the reader's allowed exceptions (see SECURITY.md) whose
message names the file; a crash, a hang, any other exception, a MemoryError behind the exception, a forbidden
action (writing a file, starting a process, unpickling, compiling code, opening a socket), a payload's sentinel
file, or any change to the sandbox fails the test, with the offending file saved.

CI runs the same 150 cases per reader every time. ``--fuzz-long`` draws 10,000 new ones per reader, counts every
violation instead of stopping at the first, and prints each reader's figures (run with ``-s``; set
``FASTCONV_FUZZ_FAILURES`` to a folder to keep the failing files).
"""
import os
import time

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

import _hostile_mutations as mutations  # noqa: E402
from _hostile_harness import Harness  # noqa: E402
from _hostile_targets import CORPUS, READERS  # noqa: E402

CASES = 150
LONG_CASES = 10_000


@pytest.fixture(scope="module")
def harness(tmp_path_factory, request):
    # the long mode counts every violation before failing; CI stops at the first
    h = Harness(tmp_path_factory.mktemp("hostile-files"), timeout=60,
                keep_going=request.config.getoption("--fuzz-long", default=False))
    yield h
    h.close()


def _seeds(reader):
    seeds = mutations.Seeds()
    for name in reader.seeds:
        with open(os.path.join(CORPUS, name), "rb") as f:
            seeds[name] = f.read()
    return seeds


@pytest.mark.parametrize("name", sorted(READERS))
def test_reader_fails_cleanly_on_hostile_files(name, harness, request):
    reader = READERS[name]
    if reader.needs:
        pytest.importorskip(reader.needs)
    seeds = _seeds(reader)
    for seed in seeds.values():  # the seeds themselves load, in the sandbox too
        assert harness.run(reader, seed) == "ok"
    payloads = mutations.Payloads(mutations.pickle_payloads(harness.sentinel))
    long_mode = request.config.getoption("--fuzz-long", default=False)

    # No shrinking: the failing file is saved whole, and shrinking a hang or a crash costs a timeout per try.
    # CI runs the same cases every time (derandomize), so a bug found by the long mode in a library below
    # fastconv (see SECURITY.md) cannot make it fail by chance; the long mode draws new cases on every run.
    @settings(max_examples=LONG_CASES if long_mode else CASES, deadline=None, database=None,
              derandomize=not long_mode, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=mutations.hostile_file(seeds, payloads))
    def survives(case):
        harness.run(reader, case[1])

    start = time.perf_counter()
    survives()
    print(f"\n{harness.summary(name)}; {time.perf_counter() - start:.0f} s in all")
    found = harness.violations[name]
    assert not found, f"{len(found)} violations; one of each kind:\n" + "\n\n".join(
        {v.splitlines()[0][:160]: v for v in found}.values())

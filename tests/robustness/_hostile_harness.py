"""The parent side of the hostile-file fuzz: one sandboxed worker process per reader, and the checks.

Each case is written to ``<sandbox>/case/fuzzcase-<reader><suffix>`` and opened by a worker process
(``_hostile_worker.py``) whose working directory, ``TMPDIR`` and ``HOME`` are empty folders of the sandbox. A case
passes when the worker answers in time with a clean load or an allowed exception whose message names the file,
and

- the worker is still alive (a segfault or abort is reported with the signal and the log's tail),
- it answered within the per-case timeout (else: a hang; the worker's stacks go to its log, then it is killed),
- no MemoryError lies behind the exception, unless NumPy refused an array larger than the machine's memory,
- it raised no forbidden audit event (writes, processes, unpickling, string code, sockets),
- the sandbox holds exactly the case file, unchanged (nothing written next to it, in the working directory,
  the temporary directory or the home directory), and no pickle payload's sentinel file exists.

A worker serves many cases (starting one costs an interpreter and fastconv); it is restarted after a failure.
"""
import collections
import hashlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_hostile_worker.py")
STARTUP_TIMEOUT = 120.0
PARENT_MEMORY_GROWTH = 2 << 30


def _resident_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


_UNITS = {"B": 0, "KiB": 1, "MiB": 2, "GiB": 3, "TiB": 4, "PiB": 5, "EiB": 6}


def _impossible_allocation(message):
    """Whether a MemoryError is NumPy refusing at once an array larger than this machine's memory: a clear error
    before any work, unlike a request the machine could grant (and a file could then make fastconv fill)."""
    match = re.search(r"Unable to allocate ([0-9.]+) (B|[KMGTPE]iB)", message)
    if match is None:
        return False
    requested = float(match.group(1)) * 1024 ** _UNITS[match.group(2)]
    return requested > os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class Violation(AssertionError):
    """A fuzz case broke one of the promises (the message says which, and where the file was saved)."""


def _tree(root):
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, root)] = os.path.isdir(path)
    return found


class Worker:
    def __init__(self, reader, sandbox):
        self.reader = reader
        self.sandbox = sandbox
        self.log_path = os.path.join(sandbox, "log", f"{reader.name}.log")
        env = dict(os.environ, TMPDIR=os.path.join(sandbox, "tmp"), HOME=os.path.join(sandbox, "home"),
                   PYTHONFAULTHANDLER="1", KERAS_HOME=os.path.join(sandbox, "home", ".keras"))
        env.pop("PYTHONSTARTUP", None)
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, WORKER, reader.name], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, cwd=os.path.join(sandbox, "cwd"),
                                        env=env, start_new_session=True)
        self._buffer = b""
        ready = self._read_line(STARTUP_TIMEOUT)
        if ready is None or "ready" not in json.loads(ready):
            detail = self.failure_detail()
            self.close()
            raise RuntimeError(f"the fuzz worker for {reader.name} did not start: {detail}")

    def _read_line(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # the worker closed its end: it is dying; let it finish so its status is known
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def ask(self, path, timeout):
        """The worker's answer for ``path``, or None if it died or timed out."""
        try:
            self.process.stdin.write((json.dumps({"path": path}) + "\n").encode())
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._read_line(timeout)
        return None if line is None else json.loads(line)

    def failure_detail(self):
        code = self.process.poll()
        if code is None:
            state = "still running (no answer in time); its stacks are in the log"
            try:
                os.kill(self.process.pid, signal.SIGUSR1)  # faulthandler writes every thread's stack to the log
                time.sleep(1.0)
            except ProcessLookupError:
                pass
        elif code < 0:
            state = f"killed by signal {signal.Signals(-code).name}"
        else:
            state = f"exited with status {code}"
        self.log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(max(0, os.path.getsize(self.log_path) - 3000))
            tail = f.read().decode(errors="replace")
        return f"{state}; log tail:\n{tail}"

    def close(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.log.close()


class Harness:
    """Runs fuzz cases for the readers of ``_hostile_targets.READERS`` in ``sandbox`` (a fresh directory)."""

    def __init__(self, sandbox, timeout=30.0, keep_going=False):
        self.sandbox = str(sandbox)
        self.timeout = timeout
        # keep_going: record each violation (in self.violations) and go on, for long runs that count them all
        self.keep_going = keep_going
        self.violations = collections.defaultdict(list)
        # where a failing case is saved: FASTCONV_FUZZ_FAILURES names a folder that outlives pytest's tmp dirs
        self.failures = os.environ.get("FASTCONV_FUZZ_FAILURES") or os.path.join(self.sandbox, "failures")
        for folder in ("case", "cwd", "tmp", "home", "log", self.failures):
            os.makedirs(os.path.join(self.sandbox, folder), exist_ok=True)
        self.sentinel = os.path.join(self.sandbox, "cwd", "PWNED-by-a-fuzzed-file")
        self.workers = {}
        self._cases = 0
        self._resident_at_start = _resident_bytes()
        self.stats = collections.defaultdict(collections.Counter)
        self.seconds = collections.Counter()
        self._watched = [os.path.join(self.sandbox, f) for f in ("case", "cwd", "tmp", "home")]

    def _worker(self, reader):
        worker = self.workers.get(reader.name)
        if worker is None:
            worker = self.workers[reader.name] = Worker(reader, self.sandbox)
        return worker

    def _fail(self, reader, data, what):
        name = f"{reader.name}-{hashlib.sha256(data).hexdigest()[:16]}{reader.suffix}"
        saved = os.path.join(self.failures, name)
        with open(saved, "wb") as f:
            f.write(data)
        self.stats[reader.name]["VIOLATION"] += 1
        raise Violation(f"{reader.name}: {what}\n(the file is saved as {saved})")

    def run(self, reader, data):
        """Open ``data`` with ``reader`` in the worker; raise :class:`Violation` if a promise is broken.
        Returns the outcome: ``"ok"`` or the exception's type name."""
        self._cases += 1
        if self._cases % 256 == 0:
            self._check_own_memory()
        case = os.path.join(self.sandbox, "case", f"fuzzcase-{reader.name}{reader.suffix}")
        with open(case, "wb") as f:
            f.write(data)
        try:
            return self._check(reader, data, case)
        except Violation as violation:
            if not self.keep_going:
                raise
            self.violations[reader.name].append(str(violation))
            return "VIOLATION"
        finally:
            if os.path.exists(case):
                os.unlink(case)

    def _check_own_memory(self):
        """Stop if this (the generating) process grows: the machine is shared, and the cases are small."""
        grown = _resident_bytes() - self._resident_at_start
        if grown > PARENT_MEMORY_GROWTH:
            raise RuntimeError(f"the fuzz parent grew by {grown >> 20} MiB: a mutation strategy keeps growing")

    def _check(self, reader, data, case):
        before = {os.path.relpath(case, self.sandbox): False}
        worker = self._worker(reader)
        start = time.perf_counter()
        answer = worker.ask(case, self.timeout)
        self.seconds[reader.name] += time.perf_counter() - start
        if answer is None:
            detail = worker.failure_detail()
            worker.close()
            del self.workers[reader.name]
            hang = "did not answer within" if "still running" in detail else "crashed (died) on a case within"
            self._fail(reader, data, f"the reader {hang} {self.timeout:.0f} s: {detail}")
        self.last_answer = answer
        outcome = "ok" if answer["outcome"] == "ok" else answer["type"]
        self.stats[reader.name][outcome] += 1
        if os.path.exists(self.sentinel):
            os.unlink(self.sentinel)
            self._fail(reader, data, f"a pickle payload ran: its sentinel file was created; forbidden actions "
                                     f"while reading: {answer['events']}")
        if answer["events"]:
            self._fail(reader, data, f"forbidden actions while reading: {answer['events']}")
        after = {}
        for folder in self._watched:
            after.update({os.path.relpath(os.path.join(folder, k), self.sandbox): v
                          for k, v in _tree(folder).items()})
        if after != before:
            self._fail(reader, data, f"files appeared or vanished around the target: before {sorted(before)}, "
                                     f"after {sorted(after)}")
        with open(case, "rb") as f:
            if f.read() != data:
                self._fail(reader, data, "the reader modified the file it read")
        if answer["outcome"] == "error":
            for kind, message in [(answer["type"], answer["message"])] + answer["causes"]:
                if kind == "MemoryError" and not _impossible_allocation(message):
                    self._fail(reader, data, f"a file of {len(data)} bytes made the reader run out of memory (the "
                                             f"worker may use 6 GiB): {message}\n{answer['traceback']}")
            allowed = {f"{c.__module__}.{c.__qualname__}" for c in reader.allowed}
            if not allowed & set(answer["mro"]):
                self._fail(reader, data, f"raised {answer['type']}, which is not among the allowed "
                                         f"{sorted(allowed)}: {answer['message']}\n{answer['traceback']}")
            if os.path.basename(case) not in answer["message"]:
                self._fail(reader, data, f"raised {answer['type']} with a message that does not name the file: "
                                         f"{answer['message']!r}\n{answer['traceback']}")
        return outcome

    def close(self):
        for worker in self.workers.values():
            worker.close()
        self.workers.clear()

    def summary(self, only=None):
        """One line per reader: cases, seconds in the worker, outcomes by exception type."""
        lines = []
        for name in sorted(self.stats) if only is None else [only]:
            counts = self.stats[name]
            total = sum(counts.values())
            detail = ", ".join(f"{k} {v}" for k, v in counts.most_common())
            lines.append(f"{name}: {total} cases in {self.seconds[name]:.1f} s ({detail})")
        return "\n".join(lines)

"""The process that opens fuzzed files for ``_hostile_harness.py`` (run as a script, one per reader).

Usage: ``python _hostile_worker.py READER`` with the sandbox as the working directory. Requests arrive on stdin, one
JSON line each (``{"path": ...}``); each answer is one JSON line on the original stdout: the outcome (``ok`` or
the exception's type, base classes and message) and the *audit events* the case raised that a reader must never
cause: a file opened for writing, a process started, a pickle global resolved by the standard unpickler, code
compiled from a string outside an import, a socket. Everything else the process prints goes to stderr, which the
parent keeps in a log file (a crash's traceback from faulthandler lands there too).

Memory is capped (``RLIMIT_AS``) so that a file declaring a huge array fails fast with MemoryError, which the
parent reports, instead of exhausting the machine.
"""
import faulthandler
import json
import os
import resource
import signal
import sys
import traceback

_MEMORY_LIMIT = 6 << 30

_FORBIDDEN_EVENTS = ("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                     "subprocess.Popen", "pickle.find_class", "socket.connect", "socket.bind", "socket.getaddrinfo",
                     "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link", "os.truncate",
                     "os.chmod", "os.chown", "shutil.rmtree", "shutil.move", "shutil.copyfile", "shutil.unpack_archive",
                     "urllib.Request", "webbrowser.open")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class _Audit:
    def __init__(self):
        self.active = False
        self.events = []

    @staticmethod
    def _harmless(compiling=False):
        """Inside an import (a module of fastconv's dependencies loading: its own code, not the file's), or, for
        compile, in ast.literal_eval (NumPy parses .npy headers with it: literals only)."""
        frame = sys._getframe(2)
        while frame is not None:
            code = frame.f_code
            if code.co_filename.startswith("<frozen importlib") or (
                    compiling and code.co_name == "literal_eval" and code.co_filename.endswith("ast.py")):
                return True
            frame = frame.f_back
        return False

    def __call__(self, event, args):
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and not self._harmless():
                self.events.append(f"open for writing: {path!r} mode={mode!r} flags={flags!r}")
        elif event.startswith(_FORBIDDEN_EVENTS):
            if not self._harmless():
                self.events.append(f"{event}: {str(args)[:200]}")
        elif event in ("exec", "compile"):
            code = args[0]
            filename = getattr(code, "co_filename", None) if event == "exec" else args[1]
            if isinstance(filename, bytes):
                filename = filename.decode(errors="replace")
            if (filename is None or str(filename).startswith("<")) and not self._harmless(compiling=True):
                self.events.append(f"{event} of code from {filename!r}")


def _causes(exc):
    """``[type name, message]`` of the exceptions ``exc`` was raised from (``raise ... from``, or in handling)."""
    found, seen = [], {id(exc)}
    exc = exc.__cause__ or exc.__context__
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        found.append([type(exc).__name__, str(exc)[:500]])
        exc = exc.__cause__ or exc.__context__
    return found


def main():
    reader_name = sys.argv[1]
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # C libraries and print() write to the log, not into the protocol
    sys.stdout = sys.stderr
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the parent asks for the stacks of a hang
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(_MEMORY_LIMIT, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import warnings

    warnings.simplefilter("ignore")
    from _hostile_targets import CORPUS, READERS, SELF_TEST_READERS

    reader = READERS[reader_name] if reader_name in READERS else SELF_TEST_READERS[reader_name]
    for module in ("h5py", "onnx", "onnx.checker", "onnx.shape_inference", "PIL.Image"):
        # any reader may be handed another format (they go by content): load every optional dependency now
        try:
            __import__(module)
        except ImportError:
            pass
    for seed in reader.seeds:  # warm up: lazy imports happen now, and every seed must load cleanly
        reader.load(os.path.join(CORPUS, seed))
    audit = _Audit()
    sys.addaudithook(audit)
    protocol.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        audit.events = []
        audit.active = True
        try:
            reader.load(request["path"])
            audit.active = False
            answer = {"outcome": "ok"}
        except BaseException as exc:  # noqa: B902 - the parent judges every kind
            audit.active = False  # formatting a traceback compiles source lines (3.11's caret anchors)
            answer = {"outcome": "error", "type": type(exc).__name__,
                      "mro": [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__],
                      "message": str(exc)[:2000], "causes": _causes(exc),
                      "traceback": "".join(traceback.format_exception(exc))[-4000:]}
        answer["events"] = audit.events
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()

"""Which instruction set the tiled kernels use: the best one this CPU supports, unless FASTCONV_ISA asks for a
lower one ("baseline", "avx2", "avx512"), which is how the tests exercise every level a machine can run."""
import os
import warnings

cdef extern from "direct_tile.h" nogil:
    int fc_cpu_best_isa()
    int FC_ISA_BASELINE, FC_ISA_AVX2, FC_ISA_AVX512

ISA_NAMES = {FC_ISA_BASELINE: "baseline", FC_ISA_AVX2: "avx2", FC_ISA_AVX512: "avx512"}
_LEVELS = {name: level for level, name in ISA_NAMES.items()}

cdef int _best = fc_cpu_best_isa()
cdef int _active = _best


def _choose(requested):
    global _active
    requested = requested.strip().lower()
    if not requested:
        _active = _best
    elif requested not in _LEVELS:
        warnings.warn(f"FASTCONV_ISA must be one of {sorted(_LEVELS)}; received FASTCONV_ISA={requested!r}; "
                      f"using {ISA_NAMES[_best]}")
        _active = _best
    elif _LEVELS[requested] > _best:
        warnings.warn(f"FASTCONV_ISA={requested!r} is not supported by this CPU; using {ISA_NAMES[_best]}")
        _active = _best
    else:
        _active = _LEVELS[requested]


_choose(os.environ.get("FASTCONV_ISA", ""))


cdef int active_isa() noexcept nogil:
    return _active


def active_isa_name():
    """The instruction set the kernels run with."""
    return ISA_NAMES[_active]


def best_isa_name():
    """The best instruction set this CPU supports."""
    return ISA_NAMES[_best]

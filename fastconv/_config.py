"""fastconv.show_config(): how this installation was built and what it will run with."""
import platform

from fastconv._version import __version__


def config():
    """The facts show_config prints, as a dict."""
    from fastconv import _memory, _threads
    from fastconv._kernels import cpu_dispatch, openmp_helpers

    blas = [
        {"library": lib.filepath, "api": lib.internal_api, "version": lib.version, "threads": lib.num_threads}
        for lib in _threads._scipy_blas_libraries()
    ]
    return {
        "version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "openmp": openmp_helpers.openmp_enabled(),
        "num_threads": _threads.get_num_threads(),
        "isa": cpu_dispatch.active_isa_name(),
        "best_isa": cpu_dispatch.best_isa_name(),
        "blas": blas,
        "block_cache": _memory.block_cache_info(),
    }


def show_config():
    """Print fastconv's build and runtime configuration (OpenMP, thread count, BLAS) and return it as a dict.

    Examples
    --------
    >>> import fastconv
    >>> info = fastconv.show_config()  # doctest: +ELLIPSIS
    fastconv ...
    >>> sorted(info)
    ['best_isa', 'blas', 'block_cache', 'isa', 'machine', 'num_threads', 'openmp', 'python', 'version']
    """
    info = config()
    openmp = "enabled" if info["openmp"] else "DISABLED (built without OpenMP: kernels run serially)"
    lines = [
        f"fastconv {info['version']} (Python {info['python']}, {info['machine']})",
        f"  OpenMP:      {openmp}",
        f"  threads:     {info['num_threads']}",
        f"  SIMD:        {info['isa']} (best on this CPU: {info['best_isa']}; FASTCONV_ISA forces a lower one)",
    ]
    cache = info["block_cache"]
    lines.append(f"  block cache: {cache['held_bytes'] / 2**20:.0f} of at most {cache['limit_bytes'] / 2**20:.0f} MiB "
                 f"held in freed blocks (set_block_cache_limit, FASTCONV_BLOCK_CACHE_MB)")
    for lib in info["blas"]:
        lines.append(f"  BLAS:        {lib['api']} {lib['version']} ({lib['library']})")
    print("\n".join(lines))
    return info

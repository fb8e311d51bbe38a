"""fastconv.get_include(): where other Cython extensions find the kernels' ``.pxd`` files."""
import os

# The declarations an embedding extension cimports; each must sit beside its compiled kernel module.
_PXD_FILES = ("geometry.pxd", "conv_direct.pxd", "pooling.pxd", "avg_pooling.pxd")


def get_include():
    """The directory to put on Cython's ``include_path`` to ``cimport fastconv._kernels.*``.

    It holds ``fastconv/_kernels/*.pxd``, the declarations of the compiled kernels (see docs/embedding.md).
    In a wheel install this is the ``site-packages`` directory that holds ``fastconv``; in an editable
    (development) install it is the source tree's ``src`` directory, where the kernels are built in place.
    Either way it is found from the kernel modules actually imported, so the declarations always match the
    binaries the cimported functions are loaded from at run time. The kernels need no C headers, so adding
    this directory to a C extension's ``include_dirs`` is not needed (and harmless).

    Returns
    -------
    str
        An absolute directory path.

    Raises
    ------
    FileNotFoundError
        If the ``.pxd`` files were not installed beside the kernel modules (a broken or stripped install).

    Examples
    --------
    >>> import os, fastconv
    >>> os.path.isfile(os.path.join(fastconv.get_include(), "fastconv", "_kernels", "conv_direct.pxd"))
    True
    """
    from fastconv import _kernels

    kernels_dir = os.path.dirname(os.path.abspath(_kernels.__file__))
    # Cython resolves `cimport fastconv._kernels.x` as <include dir>/fastconv/_kernels/x.pxd, whatever the
    # directory of the `fastconv` Python package itself (an editable install maps _kernels to src/).
    root = os.path.dirname(os.path.dirname(kernels_dir))
    missing = [name for name in _PXD_FILES if not os.path.isfile(os.path.join(kernels_dir, name))]
    laid_out = os.path.relpath(kernels_dir, root) == os.path.join("fastconv", "_kernels")
    if missing or not laid_out:
        raise FileNotFoundError(
            f"fastconv's Cython declarations are not installed beside its kernels; expected "
            f"{', '.join(_PXD_FILES)} in a fastconv/_kernels directory (missing: {', '.join(missing) or 'none'}); "
            f"received kernels_dir={kernels_dir!r}"
        )
    return root

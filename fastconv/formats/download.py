"""Fetching published weight files: Keras's cache first, then a verified, atomic download.

:func:`get_file` looks for the file where Keras keeps its downloads (``$KERAS_HOME/models``, else
``~/.keras/models``), so weights Keras already fetched are reused as they are. Otherwise it downloads the file with
:mod:`urllib` into a temporary file beside its final name, checks its hash (sha256 for a 64-digit hash, md5 for a
32-digit one, as Keras's ``get_file`` decides) and only then moves it into place with ``os.replace``: a truncated,
corrupted or substituted download is never cached. Without network access the error names the URL and the exact
path where a copy of the file can be put by hand.
"""
import hashlib
import http.client
import os
import string
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

from fastconv.models.saving import atomic_write

__all__ = ["get_file", "keras_home", "hash_file", "DownloadError"]

_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be downloaded (no network, the server refused, the connection broke). The message names
    the URL that failed and where a copy of the file can be placed instead."""


class _NetworkError(Exception):
    """Wraps a failure reading the response, so it is told apart from a failure writing the cache."""


def keras_home():
    """Keras's base directory for downloads: ``$KERAS_HOME`` when set, else ``~/.keras``.

    Examples
    --------
    >>> import os
    >>> from fastconv.formats.download import keras_home
    >>> keras_home() == (os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"))
    True
    """
    home = os.environ.get("KERAS_HOME")
    return home if home else os.path.join(os.path.expanduser("~"), ".keras")


def _algorithm(file_hash):
    if not isinstance(file_hash, str):
        raise TypeError(f"file_hash must be a hex string (64 digits for sha256, 32 for md5); received "
                        f"file_hash={file_hash!r}")
    digits = file_hash.strip().lower()
    if len(digits) not in (32, 64) or any(c not in string.hexdigits for c in digits):
        raise ValueError(f"file_hash must be a hex string of 64 digits (sha256) or 32 digits (md5); received "
                         f"file_hash={file_hash!r}")
    return ("sha256" if len(digits) == 64 else "md5"), digits


def hash_file(path, algorithm="sha256"):
    """The hex digest of a file, read in chunks.

    Parameters
    ----------
    path : str or os.PathLike
    algorithm : {"sha256", "md5"}

    Returns
    -------
    str

    Examples
    --------
    >>> import os, tempfile
    >>> from fastconv.formats.download import hash_file
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = os.path.join(d, "empty")
    ...     open(path, "wb").close()
    ...     hash_file(path, "md5")
    'd41d8cd98f00b204e9800998ecf8427e'
    """
    if algorithm not in ("sha256", "md5"):
        raise ValueError(f'algorithm must be "sha256" or "md5"; received algorithm={algorithm!r}')
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _check_fname(fname):
    if not isinstance(fname, str):
        raise TypeError(f"fname must be a file name (a str); received fname={fname!r}")
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not fname or fname in (".", "..") or "\0" in fname or any(s in fname for s in separators):
        raise ValueError(f"fname must be a plain file name, without directories (use cache_dir and cache_subdir "
                         f"for those); received fname={fname!r}")
    return fname


def _check_subdir(cache_subdir):
    if not isinstance(cache_subdir, str):
        raise TypeError(f"cache_subdir must be a relative directory name (a str); received "
                        f"cache_subdir={cache_subdir!r}")
    parts = cache_subdir.replace("\\", "/").split("/")
    if os.path.isabs(cache_subdir) or "\0" in cache_subdir or ".." in parts or cache_subdir.startswith(("/", "\\")):
        raise ValueError(f"cache_subdir must be a directory inside the cache (relative, without '..'); received "
                         f"cache_subdir={cache_subdir!r}")
    return cache_subdir


def _check_origin(origin):
    if not isinstance(origin, str):
        raise TypeError(f"origin must be an http(s) URL (a str); received origin={origin!r}")
    parts = urllib.parse.urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"origin must be an http:// or https:// URL; received origin={origin!r}")
    return origin


def _check_timeout(timeout):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds; received timeout={timeout!r}")
    return float(timeout)


def _place_by_hand(origin, target, algorithm, digest, cache_subdir):
    return (f"To work offline, download {origin} on a machine with network access and copy it to {target} (its "
            f"{algorithm} must be {digest}), or set KERAS_HOME (or pass cache_dir) to a directory whose "
            f"{cache_subdir or '.'}/ already holds {os.path.basename(target)}.")


def _progress(fname, done, total):
    if total:
        line = f"\rDownloading {fname}: {done / 1e6:.1f}/{total / 1e6:.1f} MB ({100 * done // total}%)"
    else:
        line = f"\rDownloading {fname}: {done / 1e6:.1f} MB"
    sys.stderr.write(line)
    sys.stderr.flush()


def _download(origin, target, algorithm, digest, timeout, show_progress):
    """Stream ``origin`` into a temporary file beside ``target``; hash it on the way; move it onto ``target`` only
    when complete and matching. Raises _NetworkError for the network's failures, ValueError for a bad hash."""
    from fastconv import __version__

    request = urllib.request.Request(origin, headers={"User-Agent": f"fastconv/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError and timeouts are all OSErrors
        raise _NetworkError(exc) from exc
    fname = os.path.basename(target)
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None

        def write(f):
            hasher = hashlib.new(algorithm)
            done, shown = 0, 0.0
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _NetworkError(exc) from exc
                if not chunk:
                    break
                hasher.update(chunk)
                f.write(chunk)
                done += len(chunk)
                if show_progress and time.monotonic() - shown > 0.2:
                    _progress(fname, done, total)
                    shown = time.monotonic()
            if show_progress:
                _progress(fname, done, total)
                sys.stderr.write("\n")
            if total is not None and done != total:
                raise _NetworkError(f"the connection closed after {done} of {total} bytes")
            received = hasher.hexdigest()
            if received != digest:
                raise ValueError(f"the file downloaded from {origin} has {algorithm} {received}, not the expected "
                                 f"{digest}: it is corrupted or not the published file, so it was not saved to "
                                 f"{target}")

        atomic_write(target, write)


def get_file(fname, origin, file_hash, cache_subdir="models", cache_dir=None, *, timeout=60.0):
    """The local path of a published file: from the cache when it is there with the right hash, else downloaded,
    verified and cached.

    Parameters
    ----------
    fname : str
        The file's name in the cache (a plain name, no directories).
    origin : str
        Its http(s) URL.
    file_hash : str
        Its sha256 (64 hex digits) or md5 (32 hex digits) digest; every file returned matches it.
    cache_subdir : str
        Directory inside ``cache_dir`` (``"models"``, where Keras keeps application weights).
    cache_dir : str or os.PathLike, optional
        Defaults to Keras's: ``$KERAS_HOME`` when set, else ``~/.keras``.
    timeout : float
        Seconds to wait for the server at each step (connecting, each read).

    Returns
    -------
    str
        ``cache_dir/cache_subdir/fname``.

    Raises
    ------
    DownloadError
        An ``OSError``: the download failed (offline, server unreachable, HTTP error, broken connection). The
        message names the URL and the path where a copy of the file can be placed.
    ValueError
        The downloaded file does not match ``file_hash`` (nothing is cached), or an argument is malformed.

    Notes
    -----
    A cached file with the wrong hash (incomplete, or an older version) is downloaded again, with a warning; if
    that download fails the error says so. A progress line goes to stderr only when stderr is a terminal.

    Examples
    --------
    >>> import hashlib, os, tempfile
    >>> from fastconv.formats.download import get_file
    >>> with tempfile.TemporaryDirectory() as home:
    ...     os.makedirs(os.path.join(home, "models"))
    ...     with open(os.path.join(home, "models", "w.h5"), "wb") as f:
    ...         _ = f.write(b"weights")
    ...     path = get_file("w.h5", "https://example.com/w.h5", hashlib.sha256(b"weights").hexdigest(),
    ...                     cache_dir=home)     # already cached: no network needed
    ...     os.path.relpath(path, home)
    'models/w.h5'
    """
    fname = _check_fname(fname)
    origin = _check_origin(origin)
    algorithm, digest = _algorithm(file_hash)
    cache_subdir = _check_subdir(cache_subdir)
    timeout = _check_timeout(timeout)
    if cache_dir is None:
        cache_dir = keras_home()
    elif not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a directory path or None; received cache_dir={cache_dir!r}")
    directory = os.path.join(os.path.expanduser(os.fspath(cache_dir)), cache_subdir)
    target = os.path.join(directory, fname)
    by_hand = _place_by_hand(origin, target, algorithm, digest, cache_subdir)

    stale = False
    if os.path.lexists(target):
        if not os.path.isfile(target):
            raise ValueError(f"the cache path {target} exists but is not a file; remove it so {fname} can be "
                             f"downloaded there")
        if hash_file(target, algorithm) == digest:
            return target
        stale = True
        warnings.warn(f"the cached {target} does not match its {algorithm} {digest} (incomplete or outdated): "
                      f"downloading it again from {origin}", stacklevel=2)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the cache directory {directory} ({exc.strerror or exc}) to download "
                            f"{origin}. {by_hand}") from exc
    show_progress = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    try:
        _download(origin, target, algorithm, digest, timeout, show_progress)
    except _NetworkError as exc:
        reason = exc.args[0]
        if isinstance(reason, urllib.error.URLError) and not isinstance(reason, urllib.error.HTTPError):
            reason = reason.reason
        note = f" The cached copy at {target} has the wrong hash." if stale else ""
        raise DownloadError(f"could not download {fname} from {origin} ({reason}).{note} {by_hand}") from exc
    return target

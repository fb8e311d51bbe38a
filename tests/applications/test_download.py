"""get_file against a local HTTP server: download once, then the cache; the hash checked before the file becomes
visible; a clear error naming the URL and the path to fill when the server cannot be reached."""
import hashlib
import io
import os
import socket
import time
import warnings

import pytest

from fastconv.formats import download
from fastconv.formats.download import DownloadError, get_file

BODY = os.urandom(3 * (1 << 20) + 123)  # several read chunks
SHA256 = hashlib.sha256(BODY).hexdigest()
MD5 = hashlib.md5(BODY).hexdigest()


def _closed_port_url(path="/w.h5"):
    """A URL on 127.0.0.1 where nothing listens (the port was just bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _cache_entries(keras_home):
    models = keras_home / "models"
    return sorted(os.listdir(models)) if models.exists() else []


@pytest.mark.parametrize("file_hash", [SHA256, MD5, SHA256.upper()])
def test_downloads_once_then_uses_the_cache(file_server, keras_home, file_hash):
    file_server.files["/w.h5"] = BODY
    path = get_file("w.h5", file_server.url("/w.h5"), file_hash)
    assert path == str(keras_home / "models" / "w.h5")
    with open(path, "rb") as f:
        assert f.read() == BODY
    assert file_server.requests == ["/w.h5"]
    assert get_file("w.h5", file_server.url("/w.h5"), file_hash) == path
    assert file_server.requests == ["/w.h5"]  # the second call made no request
    assert _cache_entries(keras_home) == ["w.h5"]  # no temporary file left behind


def test_a_cached_file_needs_no_network(keras_home):
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / "w.h5").write_bytes(BODY)
    assert get_file("w.h5", _closed_port_url(), SHA256) == str(keras_home / "models" / "w.h5")


def test_hash_mismatch_is_refused_and_not_cached(file_server, keras_home):
    file_server.files["/w.h5"] = BODY
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ValueError, match="not saved") as info:
        get_file("w.h5", file_server.url("/w.h5"), wrong)
    assert SHA256 in str(info.value) and wrong in str(info.value) and file_server.url("/w.h5") in str(info.value)
    assert _cache_entries(keras_home) == []
    # The same with an md5 hash, and with a file already cached under that name: it stays as it was.
    (keras_home / "models" / "w.h5").write_bytes(b"old")
    with pytest.warns(UserWarning, match="does not match"), pytest.raises(ValueError, match="md5"):
        get_file("w.h5", file_server.url("/w.h5"), hashlib.md5(b"x").hexdigest())
    assert (keras_home / "models" / "w.h5").read_bytes() == b"old"
    assert _cache_entries(keras_home) == ["w.h5"]


def test_a_stale_cached_file_is_downloaded_again(file_server, keras_home):
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / "w.h5").write_bytes(BODY[:1000])  # an interrupted download by another tool
    file_server.files["/w.h5"] = BODY
    with pytest.warns(UserWarning, match="downloading it again"):
        path = get_file("w.h5", file_server.url("/w.h5"), SHA256)
    with open(path, "rb") as f:
        assert f.read() == BODY
    assert file_server.requests == ["/w.h5"]


def test_unreachable_server_names_the_url_and_where_to_put_the_file(keras_home):
    origin = _closed_port_url()
    with pytest.raises(DownloadError) as info:
        get_file("w.h5", origin, SHA256)
    message = str(info.value)
    assert isinstance(info.value, OSError)
    assert origin in message
    assert str(keras_home / "models" / "w.h5") in message
    assert SHA256 in message and "KERAS_HOME" in message
    assert _cache_entries(keras_home) == []


def test_unreachable_server_with_a_stale_cached_file_says_so(keras_home):
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / "w.h5").write_bytes(b"old")
    with pytest.warns(UserWarning), pytest.raises(DownloadError, match="wrong hash"):
        get_file("w.h5", _closed_port_url(), SHA256)
    assert (keras_home / "models" / "w.h5").read_bytes() == b"old"


def test_http_error_is_a_download_error(file_server, keras_home):
    with pytest.raises(DownloadError, match="404") as info:
        get_file("w.h5", file_server.url("/missing.h5"), SHA256)
    assert file_server.url("/missing.h5") in str(info.value)
    assert _cache_entries(keras_home) == []


def test_truncated_download_is_not_cached(file_server, keras_home):
    file_server.files["/w.h5"] = BODY
    file_server.truncate.add("/w.h5")
    with pytest.raises(DownloadError) as info:
        get_file("w.h5", file_server.url("/w.h5"), SHA256)
    assert file_server.url("/w.h5") in str(info.value)
    assert _cache_entries(keras_home) == []


def test_a_silent_server_times_out(keras_home):
    """A server that accepts the connection but never answers: the timeout ends the wait."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # never accepted: the kernel completes the handshake, nobody replies
        origin = f"http://127.0.0.1:{listener.getsockname()[1]}/w.h5"
        start = time.monotonic()
        with pytest.raises(DownloadError, match="timed out") as info:
            get_file("w.h5", origin, SHA256, timeout=0.3)
    assert time.monotonic() - start < 10
    assert origin in str(info.value)


def test_default_cache_is_home_keras_without_keras_home(file_server, tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    file_server.files["/w.h5"] = BODY
    path = get_file("w.h5", file_server.url("/w.h5"), SHA256)
    assert path == str(tmp_path / "home" / ".keras" / "models" / "w.h5")
    assert download.keras_home() == str(tmp_path / "home" / ".keras")


def test_cache_dir_and_cache_subdir_are_honoured(file_server, keras_home, tmp_path):
    file_server.files["/w.h5"] = BODY
    path = get_file("w.h5", file_server.url("/w.h5"), SHA256, cache_subdir="weights/vgg", cache_dir=tmp_path / "c")
    assert path == str(tmp_path / "c" / "weights" / "vgg" / "w.h5")
    assert not keras_home.exists()


def test_progress_goes_to_stderr_only_on_a_terminal(file_server, keras_home, monkeypatch, capsys):
    file_server.files["/w.h5"] = BODY
    get_file("w.h5", file_server.url("/w.h5"), SHA256)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    get_file("w2.h5", file_server.url("/w.h5"), SHA256)
    assert "Downloading w2.h5" in terminal.getvalue() and "(100%)" in terminal.getvalue()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(fname="../w.h5"), ValueError, "fname"),
    (dict(fname="sub/w.h5"), ValueError, "fname"),
    (dict(fname=".."), ValueError, "fname"),
    (dict(fname=""), ValueError, "fname"),
    (dict(fname=3), TypeError, "fname"),
    (dict(origin="file:///etc/passwd"), ValueError, "origin"),
    (dict(origin="ftp://127.0.0.1/w.h5"), ValueError, "origin"),
    (dict(origin="127.0.0.1/w.h5"), ValueError, "origin"),
    (dict(file_hash="abc"), ValueError, "file_hash"),
    (dict(file_hash="z" * 64), ValueError, "file_hash"),
    (dict(file_hash=None), TypeError, "file_hash"),
    (dict(cache_subdir="../outside"), ValueError, "cache_subdir"),
    (dict(cache_subdir="/abs"), ValueError, "cache_subdir"),
    (dict(cache_dir=3), TypeError, "cache_dir"),
    (dict(timeout=0), ValueError, "timeout"),
])
def test_bad_arguments_are_refused_before_any_request(file_server, keras_home, kwargs, error, match):
    file_server.files["/w.h5"] = BODY
    arguments = dict(fname="w.h5", origin=file_server.url("/w.h5"), file_hash=SHA256) | kwargs
    with pytest.raises(error, match=match):
        get_file(**arguments)
    assert file_server.requests == []
    assert not (keras_home.parent / "w.h5").exists()


def test_a_directory_in_the_way_is_reported(keras_home):
    (keras_home / "models" / "w.h5").mkdir(parents=True)
    with pytest.raises(ValueError, match="not a file"):
        get_file("w.h5", _closed_port_url(), SHA256)


def test_a_cache_directory_that_cannot_be_made_is_a_download_error(tmp_path):
    (tmp_path / "plain_file").write_bytes(b"")
    with pytest.raises(DownloadError, match="cannot create the cache directory") as info:
        get_file("w.h5", _closed_port_url(), SHA256, cache_dir=tmp_path / "plain_file")
    assert str(tmp_path / "plain_file" / "models" / "w.h5") in str(info.value)


def test_hash_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(BODY)
    assert download.hash_file(path) == SHA256
    assert download.hash_file(path, "md5") == MD5
    with pytest.raises(ValueError, match="algorithm"):
        download.hash_file(path, "sha1")


def test_no_warning_for_a_good_cached_file(keras_home):
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / "w.h5").write_bytes(BODY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_file("w.h5", _closed_port_url(), MD5)

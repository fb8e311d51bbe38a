"""Fixtures for the application tests: a throwaway Keras cache, and a local HTTP server (127.0.0.1 only) that
serves files from memory and counts the requests it answers."""
import http.server
import threading

import pytest


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """KERAS_HOME (and HOME, so nothing can reach the real ~/.keras) pointed into tmp_path."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return home


class FileServer:
    """``files`` maps a URL path ("/w.h5") to its bytes; ``requests`` lists the paths asked for. A path in
    ``truncate`` announces its full length but sends only half of it, then closes the connection."""

    def __init__(self):
        self.files, self.requests, self.truncate = {}, [], set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)
                self.close_connection = True

            def log_message(self, *args):  # keep the test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def file_server():
    server = FileServer()
    try:
        yield server
    finally:
        server.close()

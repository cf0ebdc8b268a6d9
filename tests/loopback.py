"""A loopback (127.0.0.1) HTTP server for download tests; tests never use any other network."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files` with HTTP Range support; cuts the first answer for names in `server.truncate`."""

    def do_GET(self) -> None:
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append((name, self.headers.get("Range")))
        if name not in server.files:
            self.send_error(404)
            return
        body = server.files[name]
        start = 0
        if (header := self.headers.get("Range")) and header.startswith("bytes="):
            start = int(header[len("bytes=") :].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if name in server.truncate:
            server.truncate.discard(name)
            self.wfile.write(body[start : start + (len(body) - start) // 2])  # then hang up mid-body
            self.close_connection = True
            return
        self.wfile.write(body[start:])

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@contextmanager
def loopback_server(files: dict[str, bytes], *, truncate: set[str] = frozenset()) -> Iterator:
    """An HTTP server on 127.0.0.1 (random port) in a thread; yields it (`.url`, `.requests`)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.truncate, server.requests = files, set(truncate), []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    """A 127.0.0.1 URL on which nothing listens (an 'offline' server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"

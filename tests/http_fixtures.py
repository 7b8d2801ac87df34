"""A Zenodo look-alike on 127.0.0.1 for download tests (http.server in a thread, no internet).

Serves ``/record/<id>/files/<name>`` with HTTP Range support and ``/api/records/<id>`` (JSON ``files``
list with ``key``, ``checksum: "md5:<hex>"`` and ``size``). It records every request, can close the
connection after N body bytes once, can limit its bandwidth, and can ignore Range headers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

RECORD = "4026003"


@dataclass
class Request:
    """One request as the server saw it."""

    path: str
    range: str | None


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)
    drop_once: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    rate: float = 0.0  # bytes per second for file bodies; 0 = unlimited
    honor_range: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)


class ModelServer:
    """Context manager: ``with ModelServer() as server: server.add_file("hific_med.pt", data)``."""

    def __init__(self, record: str = RECORD) -> None:
        self.record = record
        self.state = _State()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self.state, record))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_file(self, name: str, data: bytes, *, md5: str | None = None) -> None:
        """Serve ``data`` as ``name``; the records API publishes ``md5`` (default: the true md5)."""
        with self.state.lock:
            self.state.files[name] = data
            self.state.md5[name] = md5 or hashlib.md5(data).hexdigest()

    def drop_once_after(self, name: str, n_bytes: int) -> None:
        """The next download of ``name`` sends ``n_bytes`` of its body, then closes the connection."""
        with self.state.lock:
            self.state.drop_once[name] = n_bytes

    def set_rate(self, bytes_per_second: float) -> None:
        """Send file bodies no faster than this (0: unlimited)."""
        self.state.rate = bytes_per_second

    def set_honor_range(self, honor: bool) -> None:
        """False: answer Range requests with the whole file (200), like some mirrors."""
        self.state.honor_range = honor

    def file_requests(self, name: str) -> list[Request]:
        """Requests for the file ``name`` so far."""
        with self.state.lock:
            return [r for r in self.state.requests if r.path.endswith(f"/files/{name}")]

    def api_requests(self) -> list[Request]:
        with self.state.lock:
            return [r for r in self.state.requests if r.path.startswith("/api/")]

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _make_handler(state: _State, record: str) -> type[BaseHTTPRequestHandler]:
    files_prefix = f"/record/{record}/files/"
    api_path = f"/api/records/{record}"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; a short body is visible as such

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urlsplit(self.path).path
            with state.lock:
                state.requests.append(Request(path, self.headers.get("Range")))
            if path == api_path:
                self._send_record()
            elif path.startswith(files_prefix) and path[len(files_prefix) :] in state.files:
                self._send_file(path[len(files_prefix) :])
            else:
                self._send_bytes(404, b"not found", "text/plain")

        def _send_record(self) -> None:
            with state.lock:
                files = [
                    {"key": name, "size": len(data), "checksum": f"md5:{state.md5[name]}"}
                    for name, data in state.files.items()
                ]
            body = json.dumps({"id": int(record), "files": files}).encode()
            self._send_bytes(200, body, "application/json")

        def _send_bytes(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_file(self, name: str) -> None:
            with state.lock:
                data = state.files[name]
                drop = state.drop_once.pop(name, None)
            size = len(data)
            start = 0
            spec = self.headers.get("Range")
            if spec and state.honor_range:
                try:
                    start = int(spec.removeprefix("bytes=").split("-")[0])
                except ValueError:
                    start = -1
                if not 0 <= start < size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size - start))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            body = data[start:] if drop is None else data[start : start + drop]
            began = time.monotonic()
            for offset in range(0, len(body), 65536):
                try:
                    self.wfile.write(body[offset : offset + 65536])
                    self.wfile.flush()
                except OSError:  # the client went away
                    return
                if state.rate:
                    ahead = (offset + 65536) / state.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)

    return Handler

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from lamina.data.download import DownloadError, download, sha256_file
from lamina.errors import LaminaError

PAYLOAD = bytes(range(256)) * 300  # 76.8 kB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(k, raising=False)


class Handler(http.server.BaseHTTPRequestHandler):
    ranges: ClassVar[list[str]] = []
    honour_range: ClassVar[bool] = True

    def do_GET(self) -> None:
        if self.path != "/data.bin":
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        Handler.ranges.append(rng or "")
        start = 0
        if rng and Handler.honour_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.ranges = []
    Handler.honour_range = True
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(PAYLOAD)
    assert sha256_file(p) == DIGEST


def test_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "out" / "data.bin", DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "out" / "data.bin.part").exists()


def test_http_and_cached(tmp_path: Path, server: str) -> None:
    dest = download(server + "/data.bin", tmp_path / "data.bin", DIGEST.upper(), progress=False)
    assert dest.read_bytes() == PAYLOAD
    download(server + "/data.bin", dest, DIGEST)  # already there: no request
    assert Handler.ranges == [""]


def test_resume_with_range(tmp_path: Path, server: str) -> None:
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    dest = download(server + "/data.bin", tmp_path / "data.bin", DIGEST)
    assert dest.read_bytes() == PAYLOAD
    assert Handler.ranges == ["bytes=1000-"]


def test_resume_server_ignores_range(tmp_path: Path, server: str) -> None:
    Handler.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"garbage" * 10)
    assert download(server + "/data.bin", tmp_path / "data.bin", DIGEST).read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes(tmp_path: Path, server: str) -> None:
    with pytest.raises(LaminaError, match="checksum mismatch") as e:
        download(server + "/data.bin", tmp_path / "data.bin", "0" * 64)
    assert not isinstance(e.value, DownloadError)
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


def test_stale_dest_replaced(tmp_path: Path, server: str) -> None:
    (tmp_path / "data.bin").write_bytes(b"old")
    assert download(server + "/data.bin", tmp_path / "data.bin", DIGEST).read_bytes() == PAYLOAD


def test_http_404(tmp_path: Path, server: str) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server + "/missing.bin", tmp_path / "x.bin", DIGEST)


def test_unreachable(tmp_path: Path, server: str) -> None:
    port = int(server.rsplit(":", 1)[1])
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert free != port
    with pytest.raises(DownloadError, match="could not download"):
        download(f"http://127.0.0.1:{free}/data.bin", tmp_path / "x.bin", DIGEST, timeout=5)


def test_missing_file_url(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="could not download"):
        download((tmp_path / "nope").as_uri(), tmp_path / "x.bin", DIGEST)


def test_bad_scheme(tmp_path: Path) -> None:
    with pytest.raises(LaminaError, match="cannot download"):
        download("nonsense://x", tmp_path / "x.bin", DIGEST)


def test_progress_bar_path(tmp_path: Path, server: str, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:500])
    assert download(server + "/data.bin", tmp_path / "data.bin", DIGEST, progress=True).read_bytes() == PAYLOAD
    capsys.readouterr()

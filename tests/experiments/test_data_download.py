"""The downloader against an HTTP server on 127.0.0.1, and the no-network message."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from optlab.experiments import data
from optlab.experiments.data import loading, registry
from optlab.experiments.data.download import NoNetworkError, download

from tests.experiments.data_fixtures import write_tiny_mnist

PAYLOAD = bytes(range(256)) * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):
        body = self.files.get(self.path.lstrip("/"))
        if self.path == "/corrupt":
            body = PAYLOAD[:-1] + b"\x00"
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/truncated":
            body = body[: len(body) // 2]  # announce all, send half, hang up
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    _Handler.files = {"good": PAYLOAD, "truncated": PAYLOAD}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_is_verified_and_renamed(server, tmp_path):
    dest = tmp_path / "sub" / "file.bin"
    assert download(server + "good", dest, sha256=SHA256, md5=MD5, progress=True) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["file.bin"]


def test_leftover_part_file_is_discarded(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(b"half of an interrupted download")
    download(server + "good", dest, sha256=SHA256)
    assert dest.read_bytes() == PAYLOAD and _leftovers(tmp_path) == ["file.bin"]


def test_corrupted_download_leaves_nothing(server, tmp_path):
    with pytest.raises(data.DataError, match="sha256 checksum mismatch"):
        download(server + "corrupt", tmp_path / "file.bin", sha256=SHA256)
    assert _leftovers(tmp_path) == []


def test_truncated_download_leaves_nothing(server, tmp_path):
    with pytest.raises(data.DataError, match="truncated") as err:
        download(server + "truncated", tmp_path / "file.bin", sha256=SHA256)
    assert not isinstance(err.value, NoNetworkError)
    assert _leftovers(tmp_path) == []


def test_http_404_is_a_data_error(server, tmp_path):
    with pytest.raises(data.DataError, match="HTTP 404") as err:
        download(server + "nope", tmp_path / "file.bin", sha256=SHA256)
    assert server + "nope" in str(err.value) and _leftovers(tmp_path) == []


def test_load_downloads_missing_files(server, tmp_path, monkeypatch):
    source = tmp_path / "server"
    spec = write_tiny_mnist(source, base_url=server)
    _Handler.files.update({f.name: (source / f.name).read_bytes() for f in spec.files})
    monkeypatch.setitem(registry.DATASETS, "mnist", spec)
    monkeypatch.setattr(loading, "shared_data_dir", lambda: None)
    cache = tmp_path / "cache"
    ds = data.load("mnist", data_dir=cache)
    assert ds.x_train.shape == (6, 28, 28, 1)
    assert _leftovers(cache / "mnist") == sorted(f.name for f in spec.files)
    # a second load finds the files and does not download again
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    np.testing.assert_array_equal(data.load("mnist", data_dir=cache).y_train, ds.y_train)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))


def test_no_network_says_where_to_put_which_files(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(loading, "shared_data_dir", lambda: None)
    with pytest.raises(NoNetworkError) as err:
        data.load("mnist", data_dir=tmp_path)
    message = str(err.value)
    assert message.startswith("no network") and "name resolution" in message
    for f in registry.DATASETS["mnist"].files:
        assert f"{f.name}  from {f.url}  sha256 {f.sha256}" in message
    assert f"Put these files in {tmp_path / 'mnist'}/" in message
    assert not (tmp_path / "mnist").exists()  # a failed lookup leaves no empty folder behind


def test_no_network_for_cifar_mentions_the_extracted_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(loading, "shared_data_dir", lambda: None)
    with pytest.raises(data.DataError, match="cifar-10-python.tar.gz") as err:
        data.load("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in str(err.value)

"""The downloader: mirrors, checksums, atomic writes, placed files and the offline error.

The network is never touched: ``urllib.request.urlopen`` is replaced by fakes.
"""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import warnings

import pytest

from eqbench.data.download import (
    Checksum,
    ChecksumError,
    OfflineError,
    RemoteFile,
    SourceChecksumWarning,
    UnverifiedDownloadWarning,
    data_root,
    fetch,
)
from eqbench.errors import DataError, EqbenchError

PAYLOAD = b"gdb 1\t157.7118\t157.70997\t157.70699\n" * 50
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SIZE = len(PAYLOAD)


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, content_type: str = "application/octet-stream", fail_after: int | None = None):
        super().__init__(data)
        self.headers = {"Content-Type": content_type}
        self.fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(n, 64) if n and n > 0 else n)  # small reads: many chunks


def serve(monkeypatch, answers: dict):
    """urlopen that answers each URL from ``answers`` (bytes, a FakeResponse or an exception) and
    records the URLs asked for; unknown URLs fail as if offline."""
    asked = []

    def urlopen(request, timeout=None):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        asked.append(url)
        answer = answers.get(url, urllib.error.URLError("[Errno -2] Name or service not known"))
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, FakeResponse) else FakeResponse(answer)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def remote(name="data.txt", urls=("https://a.example/data.txt", "https://b.example/data.txt"), md5=MD5,
           size=SIZE):
    checksums = (Checksum("md5", md5, "test", size),) if md5 else ()
    return RemoteFile((name,), urls, checksums, "a test file")


def test_verified_download_is_written_atomically(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {"https://a.example/data.txt": PAYLOAD})
    sources = fetch([remote()], tmp_path / "raw")
    assert (tmp_path / "raw" / "data.txt").read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["data.txt"]  # no temporary file left
    source = sources["data.txt"]
    assert source.verified is True and source.md5 == MD5 and source.size == len(PAYLOAD)
    assert source.origin == "https://a.example/data.txt"
    assert source.record()["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert asked == ["https://a.example/data.txt"]


def test_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://a.example/data.txt": b"tampered" * 20, "https://b.example/data.txt": b"x" * 10})
    with pytest.raises(ChecksumError) as err:
        fetch([remote()], tmp_path / "raw")
    message = str(err.value)
    assert "data.txt" in message and MD5 in message and str(tmp_path / "raw") in message
    assert "a.example" in message and "b.example" in message
    assert isinstance(err.value, DataError) and isinstance(err.value, EqbenchError)
    assert list((tmp_path / "raw").iterdir()) == []


def test_size_is_checked_with_the_digest(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://a.example/data.txt": PAYLOAD})
    with pytest.raises(ChecksumError):
        fetch([remote(size=len(PAYLOAD) + 1)], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mirrors_are_tried_in_order(tmp_path, monkeypatch):
    urls = ("https://a.example/f", "https://b.example/f", "https://c.example/f", "https://d.example/f")
    asked = serve(monkeypatch, {urls[0]: urllib.error.HTTPError(urls[0], 503, "unavailable", {}, None),
                                urls[1]: b"an error page",
                                urls[2]: PAYLOAD})
    sources = fetch([remote(urls=urls)], tmp_path)
    assert asked == list(urls[:3])
    assert sources["data.txt"].origin == urls[2]
    assert (tmp_path / "data.txt").read_bytes() == PAYLOAD


def test_html_page_is_refused(tmp_path, monkeypatch):
    html = FakeResponse(b"<html>Please log in</html>", content_type="text/html; charset=utf-8")
    serve(monkeypatch, {"https://a.example/data.txt": html})
    with pytest.raises(ChecksumError, match="HTML"):
        fetch([remote(md5=None, urls=("https://a.example/data.txt",))], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_broken_transfer_leaves_no_partial_file(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://a.example/data.txt": FakeResponse(PAYLOAD, fail_after=200)})
    with pytest.raises(OfflineError, match="ConnectionResetError"):
        fetch([remote()], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_names_every_file_and_where_to_place_it(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {})
    files = [remote("dsgdb9nsd.xyz.tar.bz2", ("https://figshare.example/3195389",)),
             remote("atomref.txt", ("https://figshare.example/3195395",), md5="2d30b2df8329d8fd805c0a4d158a0a0f",
                    size=964)]
    with pytest.raises(OfflineError) as err:
        fetch(files, tmp_path / "qm9")
    message = str(err.value)
    for text in ("dsgdb9nsd.xyz.tar.bz2", "atomref.txt", str(tmp_path / "qm9"), "place them in",
                 "https://figshare.example/3195389", "2d30b2df8329d8fd805c0a4d158a0a0f", "964 bytes", "URLError"):
        assert text in message, text
    assert len(asked) == 2
    assert not (tmp_path / "qm9").exists() or list((tmp_path / "qm9").iterdir()) == []


def test_no_download_never_touches_the_network(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {"https://a.example/data.txt": PAYLOAD})
    with pytest.raises(OfflineError, match="turned off"):
        fetch([remote()], tmp_path, download=False)
    assert asked == []


def test_file_without_published_checksum_warns_and_records_sha256(tmp_path, monkeypatch):
    serve(monkeypatch, {"https://a.example/data.txt": PAYLOAD})
    with pytest.warns(UnverifiedDownloadWarning, match="no checksum"):
        sources = fetch([remote(md5=None)], tmp_path)
    assert sources["data.txt"].verified is None
    assert sources["data.txt"].sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_placed_files_are_used_as_they_are(tmp_path, monkeypatch):
    asked = serve(monkeypatch, {})
    (tmp_path / "data.txt").write_bytes(PAYLOAD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a matching copy gives no warning
        sources = fetch([remote()], tmp_path)
    assert sources["data.txt"].verified is True and sources["data.txt"].origin == "placed by the user"
    # a copy that differs (e.g. extra header lines) is used, with a warning naming it
    (tmp_path / "data.txt").write_bytes(b"# header\n" + PAYLOAD)
    with pytest.warns(SourceChecksumWarning, match="data.txt"):
        sources = fetch([remote()], tmp_path)
    assert sources["data.txt"].verified is False
    assert asked == []


def test_alternative_local_names(tmp_path, monkeypatch):
    serve(monkeypatch, {})
    (tmp_path / "1000.hdf5.xz").write_bytes(PAYLOAD)
    both = RemoteFile(("1000.xz", "1000.hdf5.xz"), ("https://a.example/1000.xz",), (Checksum("md5", MD5, "t"),))
    assert fetch([both], tmp_path)["1000.xz"].path == tmp_path / "1000.hdf5.xz"


def test_checksum_prefix_and_alternatives():
    digest = {"md5": MD5, "sha256": hashlib.sha256(PAYLOAD).hexdigest()}
    assert Checksum("sha256", digest["sha256"][:12], "t").matches(digest, 5)
    assert not Checksum("sha256", "0" * 12, "t").matches(digest, 5)
    assert not Checksum("md5", MD5, "t", size=4).matches(digest, 5)


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EQBENCH_DATA", str(tmp_path / "data"))
    assert data_root() == tmp_path / "data"
    monkeypatch.delenv("EQBENCH_DATA")
    assert data_root().parts[-3:] == (".cache", "eqbench", "data")

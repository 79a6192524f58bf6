"""Published raw files: where they live, how they are fetched and how they are checked.

A :class:`RemoteFile` names a file as its publisher names it, the URLs it can be fetched from
(mirrors, tried in order) and the checksums published for it. :func:`fetch` returns the local copy
of each file in a directory, downloading the ones that are missing:

- A file already in the directory is used as it is, so a user who downloaded it by hand gets the
  same cache as eqbench's own download. Its checksum is computed and recorded; when it differs from
  the published one a :class:`SourceChecksumWarning` says so (copies with extra header lines exist,
  e.g. of QM9's ``atomref.txt``); a damaged file then fails in its parser with the file named.
- A download is written to a temporary file beside its destination while it is hashed, and renamed
  only when size and checksum match: a mismatch is refused and leaves nothing behind.
- A file whose publisher gives no checksum is downloaded with an :class:`UnverifiedDownloadWarning`
  and its sha256 recorded, never silently.
- Without network, one :class:`OfflineError` lists every missing file, its URLs, size and checksum,
  and the directory to place it in.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eqbench.errors import DataError

DATA_ENV = "EQBENCH_DATA"
CHUNK = 1 << 20


class DownloadError(DataError):
    """A published file could not be obtained."""


class ChecksumError(DownloadError):
    """Every copy that could be downloaded differs from the published checksum."""


class OfflineError(DownloadError):
    """Files are missing and could not be downloaded (no network, or every mirror failed)."""


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded for which no checksum is published."""


class SourceChecksumWarning(UserWarning):
    """A file placed by the user differs from the published checksum."""


def data_root() -> Path:
    """Root of raw files and caches of named datasets: ``$EQBENCH_DATA``, default ``~/.cache/eqbench/data``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "eqbench" / "data").expanduser()


@dataclass(frozen=True)
class Checksum:
    """A checksum as published: ``value`` is a hex digest, or its leading digits where only those are."""

    algorithm: str  # "md5" or "sha256"
    value: str
    source: str  # who publishes it
    size: int | None = None  # bytes, when published with it

    def matches(self, digests: dict[str, str], size: int) -> bool:
        return digests[self.algorithm].startswith(self.value.lower()) and self.size in (None, size)

    def describe(self) -> str:
        size = f"{self.size:,} bytes, " if self.size is not None else ""
        return f"{size}{self.algorithm} {self.value}"


@dataclass(frozen=True)
class RemoteFile:
    """A published file. Any one of ``checksums`` accepts a copy (mirrors and versions of a record
    may differ); none means the publisher gives no checksum. ``names`` are the local names it is
    looked for under; the first is the name a download gets."""

    names: tuple[str, ...]
    urls: tuple[str, ...]
    checksums: tuple[Checksum, ...] = ()
    about: str = ""

    @property
    def name(self) -> str:
        return self.names[0]

    def local(self, directory: Path) -> Path | None:
        return next((directory / n for n in self.names if (directory / n).is_file()), None)

    def describe(self) -> str:
        sums = "; ".join(c.describe() for c in self.checksums) or "no published checksum"
        return f"{self.name} ({self.about + ', ' if self.about else ''}{sums}) from {' or '.join(self.urls)}"


@dataclass(frozen=True)
class Source:
    """What :func:`fetch` found or downloaded: recorded in the cache's metadata."""

    path: Path
    md5: str
    sha256: str
    size: int
    verified: bool | None  # None: no published checksum
    origin: str  # "placed by the user" or the URL it came from

    def record(self) -> dict:
        return {"file": self.path.name, "md5": self.md5, "sha256": self.sha256, "size": self.size,
                "verified": self.verified, "origin": self.origin}


def file_digests(path: Path) -> tuple[dict[str, str], int]:
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            md5.update(block)
            sha256.update(block)
            size += len(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}, size


def fetch(files: Sequence[RemoteFile], directory: str | os.PathLike, download: bool = True,
          timeout: float = 60.0) -> dict[str, Source]:
    """The local copy of each of ``files`` in ``directory`` (keyed by the file's name), downloading
    what is missing when ``download``; raises :class:`OfflineError` naming every file that is still
    missing and where to place it."""
    directory = Path(directory)
    found: dict[str, Source] = {}
    missing: list[RemoteFile] = []
    for remote in files:
        path = remote.local(directory)
        if path is not None:
            found[remote.name] = _placed(remote, path)
        else:
            missing.append(remote)
    unavailable: list[tuple[RemoteFile, list[str]]] = []
    for remote in missing:
        source, failures = _download(remote, directory, timeout) if download else (None, [])
        if source is None:
            unavailable.append((remote, failures))
        else:
            found[remote.name] = source
    if unavailable:
        raise OfflineError(_offline_message(unavailable, directory, download))
    return found


def _placed(remote: RemoteFile, path: Path) -> Source:
    digests, size = file_digests(path)
    verified = None
    if remote.checksums:
        verified = any(c.matches(digests, size) for c in remote.checksums)
        if not verified:
            warnings.warn(
                f"{path} differs from the published {remote.name} ({'; '.join(c.describe() for c in remote.checksums)}"
                f"; this copy: {size:,} bytes, md5 {digests['md5']}); it is used as it is. If reading it fails, "
                f"delete it to download it again", SourceChecksumWarning, stacklevel=3)
    return Source(path, digests["md5"], digests["sha256"], size, verified, "placed by the user")


# Errors that mean "this mirror could not be reached or broke off", as opposed to a wrong file.
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError, OSError)


def _download(remote: RemoteFile, directory: Path, timeout: float) -> tuple[Source | None, list[str]]:
    """Try each mirror; returns the source, or None and why each mirror failed. Raises ChecksumError
    when no mirror could be reached with a matching file but at least one gave a wrong one."""
    failures: list[str] = []
    wrong: list[str] = []
    for url in remote.urls:
        try:
            source = _download_one(remote, url, directory, timeout)
        except _WrongFile as err:
            wrong.append(f"{url}: {err}")
            continue
        except _NETWORK_ERRORS as err:
            failures.append(f"{url}: {type(err).__name__}: {err}")
            continue
        return source, failures
    if wrong:
        expected = (f"no copy matches the published checksum ({'; '.join(c.describe() for c in remote.checksums)})"
                    if remote.checksums else "no mirror sent the file")
        raise ChecksumError(f"refused {remote.name}: {expected}: {'; '.join(wrong)}. Nothing was kept in "
                            f"{directory}. Try again later, or download it by hand from {remote.urls[0]} and "
                            f"place it in {directory}")
    return None, failures


class _WrongFile(Exception):
    """A mirror answered with something other than the published file."""


def _download_one(remote: RemoteFile, url: str, directory: Path, timeout: float) -> Source:
    directory.mkdir(parents=True, exist_ok=True)
    dest = directory / remote.name
    tmp = directory / f".{remote.name}.part-{os.getpid()}"
    from eqbench import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"eqbench/{__version__}"})
    print(f"eqbench: downloading {remote.name} from {url}", file=sys.stderr)
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            kind = (response.headers.get("Content-Type") or "") if getattr(response, "headers", None) else ""
            if kind.startswith("text/html"):  # an error or landing page, never a data file
                raise _WrongFile("the server sent an HTML page")
            while block := response.read(CHUNK):
                out.write(block)
                md5.update(block)
                sha256.update(block)
                size += len(block)
        digests = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
        verified = None
        if remote.checksums:
            if not any(c.matches(digests, size) for c in remote.checksums):
                raise _WrongFile(f"got {size:,} bytes with md5 {digests['md5']}")
            verified = True
        else:
            warnings.warn(f"{remote.name}: its publisher gives no checksum, so the download from {url} could not "
                          f"be verified; recorded its sha256 {digests['sha256']} in the cache's metadata",
                          UnverifiedDownloadWarning, stacklevel=4)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return Source(dest, digests["md5"], digests["sha256"], size, verified, url)


def _offline_message(unavailable: list[tuple[RemoteFile, list[str]]], directory: Path, download: bool) -> str:
    why = "could not be downloaded" if download else "were not downloaded (downloads are turned off)"
    lines = [f"{len(unavailable)} published file(s) are missing from {directory} and {why}. "
             f"Download them by hand and place them in {directory} (under these names), then run again:"]
    for remote, failures in unavailable:
        lines.append(f"  - {remote.describe()}")
        if failures:
            lines.append(f"    (tried: {'; '.join(failures)})")
    return "\n".join(lines)

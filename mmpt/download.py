"""Cached, resumable, hash-checked downloads (checkpoints, NYUv2 raw files, zoo artifacts)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from mmpt.errors import DownloadError, IntegrityError

_CHUNK = 1 << 20


def cache_dir() -> Path:
    """The download cache: `$MMPT_CACHE`, else `<torch hub dir>/mmpt`."""
    if env := os.environ.get("MMPT_CACHE"):
        return Path(env).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "mmpt"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    resume: bool = True,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Downloads `url` to `dest` atomically, resuming a previous partial download.

    The bytes go to `dest + ".part"` first (kept on failure so the next call resumes with an HTTP
    Range request) and are renamed onto `dest` only once complete and verified.

    Args:
        url: http(s) or file URL.
        dest: final file path; its parent is created.
        sha256: expected sha256 of the whole file, or a prefix of it (release names carry 8 hex digits).
        size: expected size in bytes.
        resume: continue an existing `.part` file instead of starting over.
        progress: show a rich progress bar on stderr.
        timeout: socket timeout in seconds.

    Returns:
        `dest` as a Path.

    Raises:
        DownloadError: network failure or truncated body.
        IntegrityError: size or sha256 mismatch (the bad file is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if resume and part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mmpt"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part file is already complete
            response = None
        else:
            raise DownloadError(f"Downloading {url} failed: HTTP {e.code} {e.reason}.") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"Downloading {url} failed: {reason}.", hint="check the URL and your network") from e

    if response is not None:
        with response:
            if offset and response.status != 206:  # server ignored the Range header: start over
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else size
            _stream(response, part, offset=offset, total=total, desc=dest.name, progress=progress)
            if length is not None and part.stat().st_size != offset + int(length):
                raise DownloadError(
                    f"Download of {url} was cut short: got {part.stat().st_size} of {offset + int(length)} bytes.",
                    hint="run the same command again to resume",
                )
    _verify(part, url=url, sha256=sha256, size=size)
    os.replace(part, dest)
    return dest


def _stream(response, part: Path, *, offset: int, total: int | None, desc: str, progress: bool) -> None:
    mode = "ab" if offset else "wb"
    with open(part, mode) as out:
        if not progress:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        with Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
        ) as bar:
            task = bar.add_task(desc, total=total, completed=offset)
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.advance(task, len(chunk))


def _verify(path: Path, *, url: str, sha256: str | None, size: int | None) -> None:
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        path.unlink()
        raise IntegrityError(f"{url}: downloaded {actual_size} bytes, expected {size}.", hint="run the command again")
    if sha256 is not None:
        actual = sha256_file(path)
        if not actual.startswith(sha256.lower()):
            path.unlink()
            raise IntegrityError(
                f"{url}: sha256 {actual} does not match the expected {sha256}. The file was deleted.",
                hint="the server may hold a different file; check the URL, then run the command again",
            )

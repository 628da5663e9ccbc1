"""Download one file: stream it to ``<file>.part`` with a progress bar, verify, rename.

The destination only ever holds a complete file whose checksum matched: the bytes go to
``<file>.part`` in the same folder, are hashed, and are renamed over ``<file>`` with
``os.replace`` (atomic on one file system). A ``.part`` left by an interrupted download is
discarded and the download starts again; a failed download leaves nothing behind.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from optlab.experiments.data.dataset import DataError, verify_file
from tqdm.auto import tqdm

CHUNK_SIZE = 1 << 16
USER_AGENT = "optlab/0.1 (Python urllib)"


class NoNetworkError(DataError):
    """The host could not be reached at all (no network, DNS failure, refused, timeout)."""

    def __init__(self, message: str, *, url: str = "", reason: object = None):
        super().__init__(message)
        self.url, self.reason = url, reason


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    md5: str | None = None,
    timeout: float = 60.0,
    progress: bool | None = None,
) -> Path:
    """Fetch ``url`` to ``dest``, verified against ``sha256`` (and ``md5``), atomically.

    Args:
      url: where to download from.
      dest: the final path; its folder is created if needed.
      sha256, md5: the expected hex digests (``None`` skips that check).
      timeout: seconds to wait for the server on connect and on each read.
      progress: show a tqdm bar; ``None`` shows it only on a terminal.

    Returns:
      ``dest``.

    Raises:
      NoNetworkError: the server cannot be reached.
      DataError: the server answers with an error, the body is truncated, or the
        checksum does not match. No file, and no folder it created, is left behind.
    """
    dest = Path(dest)
    created = [folder for folder in dest.parents if not folder.exists()]  # innermost first
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)  # a leftover of an interrupted download: start again
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            expected_size = response.length  # the Content-Length, or None
            received = _stream(response, part, expected_size, dest.name, progress)
        if expected_size is not None and received != expected_size:
            raise DataError(
                f"{url}: download truncated: received {received} of {expected_size} bytes"
            )
        verify_file(part, sha256, md5)
        os.replace(part, dest)
    except urllib.error.HTTPError as err:
        raise DataError(f"{url}: the server answered HTTP {err.code} {err.reason}") from err
    except http.client.HTTPException as err:  # e.g. IncompleteRead: the connection dropped
        raise DataError(f"{url}: download truncated ({type(err).__name__}: {err})") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        reason = getattr(err, "reason", err)
        raise NoNetworkError(
            f"no network: cannot download {url} ({reason}). Put the file at {dest} yourself "
            f"(sha256 {sha256}).",
            url=url,
            reason=reason,
        ) from err
    finally:
        part.unlink(missing_ok=True)
        if not dest.exists():
            _remove_empty(created)
    return dest


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created, innermost first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _stream(response, path: Path, total: int | None, desc: str, progress: bool | None) -> int:
    """Copy the response body to ``path`` in chunks, updating a progress bar."""
    received = 0
    disable = None if progress is None else not progress
    with (
        open(path, "wb") as f,
        tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=disable
        ) as bar,
    ):
        while chunk := response.read(CHUNK_SIZE):
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received

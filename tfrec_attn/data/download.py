"""Download MovieLens from GroupLens with a pinned checksum, and find data on disk.

Order of search (:func:`locate_movielens`): an explicit path (``--data``), the
``TFREC_ATTN_DATA`` environment variable, the cache directory
(``TFREC_ATTN_CACHE``, else ``$XDG_CACHE_HOME/tfrec_attn``, else
``~/.cache/tfrec_attn``), then a download into the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

from tqdm.auto import tqdm

from tfrec_attn.data.errors import ChecksumError, DataNotFoundError
from tfrec_attn.data.movielens import RELEASES, Release, detect_layout

logger = logging.getLogger(__name__)

ENV_DATA = "TFREC_ATTN_DATA"
ENV_CACHE = "TFREC_ATTN_CACHE"


def cache_dir() -> str:
    if os.environ.get(ENV_CACHE):
        return os.environ[ENV_CACHE]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tfrec_attn")


def _missing(directory: str, release: Release) -> list[str]:
    return [f for f in release.files if not os.path.isfile(os.path.join(directory, f))]


def _fetch(url: str, destination: str, timeout: float) -> str:
    """Streams ``url`` to ``destination`` with a progress bar; returns the MD5 hex digest."""
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {os.path.basename(url)}") as bar:
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _published_md5(url: str, timeout: float) -> str:
    """GroupLens publishes ``<archive>.md5`` next to each archive."""
    with urllib.request.urlopen(url + ".md5", timeout=timeout) as response:
        text = response.read(4096).decode("ascii", "replace")
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not match:
        raise ChecksumError(f"{url}.md5 does not contain an MD5 digest: {text[:80]!r}")
    return match.group(0).lower()


def download_movielens(name: str = "ml-100k", root: str | None = None, *, url: str | None = None,
                       md5: str | None = None, timeout: float = 60.0) -> str:
    """Downloads and extracts a MovieLens release into ``root/<name>``; returns that directory.

    The archive is checked against the pinned MD5 before anything is extracted; on a
    mismatch nothing is left in ``root``. Extraction goes to a temporary directory that
    is renamed into place, so a crash never leaves a half-extracted data set.

    Args:
        name: str. A key of :data:`RELEASES`.
        root: str. Cache directory (default :func:`cache_dir`).
        url: str. Override the archive URL (a mirror); the checksum is still enforced.
        md5: str. Override the pinned checksum (a re-packed archive you trust).
    """
    if name not in RELEASES:
        raise ValueError(f"unknown MovieLens release {name!r}; choose one of {sorted(RELEASES)}")
    release = RELEASES[name]
    root = root or cache_dir()
    target = os.path.join(root, name)
    if os.path.isdir(target) and not _missing(target, release):
        return target
    os.makedirs(root, exist_ok=True)
    url = url or release.url
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-download-") as tmp:
        archive = os.path.join(tmp, os.path.basename(url) or f"{name}.zip")
        try:
            got = _fetch(url, archive, timeout)
            expected = (md5 or release.md5 or _published_md5(url, timeout)).lower()
        except (urllib.error.URLError, OSError) as error:
            raise DataNotFoundError(_offline_message(release, target, error)) from error
        if got != expected:
            raise ChecksumError(
                f"{url}: MD5 {got} does not match the pinned {expected}; the download is "
                f"corrupt or the file changed upstream. Nothing was written to {root}."
            )
        extracted = os.path.join(tmp, "extracted")
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(extracted)
        source = _find_release_dir(extracted, release)
        if source is None:
            raise DataNotFoundError(f"{url}: archive lacks {list(release.files)}")
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(source, target)
    logger.info("MovieLens %s extracted to %s", name, target)
    return target


def _find_release_dir(extracted: str, release: Release) -> str | None:
    for dirpath, _, _ in os.walk(extracted):
        if not _missing(dirpath, release):
            return dirpath
    return None


def _offline_message(release: Release, target: str, error=None) -> str:
    reason = f" ({error})" if error else ""
    return (
        f"MovieLens {release.name} is not on this machine and could not be downloaded from "
        f"{release.url}{reason}. Download {os.path.basename(release.url)} elsewhere, unzip it, and "
        f"put {', '.join(release.files)} into {target}/ — or pass --data DIR / set {ENV_DATA}=DIR "
        f"to a directory that holds them."
    )


def locate_movielens(data: str | None = None, name: str = "ml-100k", *, download: bool = True,
                     url: str | None = None) -> str:
    """Finds a MovieLens directory (see the module docstring for the search order)."""
    release = RELEASES[name]
    for origin, candidate in (("--data", data), (ENV_DATA, os.environ.get(ENV_DATA))):
        if candidate:
            if not os.path.isdir(candidate):
                raise DataNotFoundError(f"{origin}={candidate}: no such directory")
            if detect_layout(candidate) is None:
                raise DataNotFoundError(
                    f"{origin}={candidate}: no MovieLens files there; {name} needs "
                    f"{', '.join(release.files)}")
            return candidate
    cached = os.path.join(cache_dir(), name)
    if os.path.isdir(cached) and not _missing(cached, release):
        return cached
    if not download:
        raise DataNotFoundError(_offline_message(release, cached))
    return download_movielens(name, url=url)

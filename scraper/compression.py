"""Compressed output files, chosen by extension: `.gz` (gzip) and `.zst` (Zstandard).

The one module that knows the compression libraries: gzip from the standard library;
Zstandard from `compression.zstd` (Python 3.14+) or its backport `backports.zstd`, the
module `urllib3[zstd]` installs for decoding responses. Appending to a compressed file
adds a new gzip member or zstd frame; readers of either format read concatenated
members/frames as one stream.
"""

from __future__ import annotations

import gzip
from pathlib import PurePath
from typing import IO, Any

try:  # Python 3.14+
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd  # type: ignore[no-redef,unused-ignore]

SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


def compression_of(path: str | PurePath) -> tuple[str | None, str]:
    """(compression or None, the path's name without the compression suffix)."""
    name = PurePath(path).name
    suffix = PurePath(name).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix], name[: -len(suffix)]
    return None, name


def writer(raw: IO[bytes], compression: str | None) -> IO[bytes]:
    """A binary stream compressing into `raw` (`raw` itself when uncompressed). Closing
    it ends the gzip member / zstd frame and leaves `raw` open."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[return-value]
    if compression == "zstd":
        stream: Any = zstd.ZstdFile(raw, mode="w")
        return stream  # type: ignore[no-any-return]
    return raw


def open_reader(path: str | PurePath, compression: str | None) -> IO[bytes]:
    """The decompressed bytes of a file, every member/frame in turn."""
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        stream: Any = zstd.open(path, "rb")
        return stream  # type: ignore[no-any-return]
    return open(path, "rb")

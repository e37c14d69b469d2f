"""Atomic outputs: write to a temporary name beside the destination, rename only on success.

An interrupted or failed run therefore never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from rams.errors import OutputError


def check_output(dest: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``overwrite``; check the folder is writable."""
    if dest.exists() and not overwrite:
        raise OutputError(f"{dest} already exists; pass --overwrite to replace it or choose another --out")
    parent = dest.parent if str(dest.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to folder {parent}; choose a writable --out location")


@contextlib.contextmanager
def atomic_path(dest: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it over ``dest``, on failure delete it.

    Works for files and for folders (the temporary path does not exist when yielded).
    """
    dest = Path(dest)
    check_output(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}{dest.suffix}")
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if dest.exists() and dest.is_dir() and tmp.is_dir():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
    # GDAL may leave sidecars next to a temporary GeoPackage or GeoTIFF
    for side in path.parent.glob(path.name + "*"):
        with contextlib.suppress(OSError):
            side.unlink()

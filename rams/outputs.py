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

from rams.errors import OutputError, RamsError


def check_output(dest: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``overwrite``; check the folder is writable."""
    if dest.exists() and not overwrite:
        raise OutputError(f"{dest} already exists; pass --overwrite to replace it or choose another --out")
    parent = dest.parent if str(dest.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(f"cannot write to folder {parent}; choose a writable --out location")


def lock_path(dest: Path) -> Path:
    """The lock file of an output being made: ``.NAME.lock`` beside it."""
    return dest.with_name(f".{dest.name}.lock")


@contextlib.contextmanager
def output_lock(dest: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``dest`` while it is made, so that a second run writing the same output (a command
    started twice) stops at once with one line instead of deleting the first run's checkpoint. The lock is an OS
    file lock (``flock``): a run killed with kill -9 leaves no stale lock. Where ``fcntl`` does not exist (Windows)
    nothing is locked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path = lock_path(Path(dest))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise OutputError(
                f"another rams run is writing {dest} (lock {path.name} is held); wait for it to finish, or choose "
                "another --out"
            ) from err
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
    except RamsError:
        _remove(tmp)
        raise
    except Exception as err:
        _remove(tmp)
        if _is_write_failure(err, tmp):
            raise OutputError(f"could not write {dest} ({_first_line(err)}){why_write_failed(dest)}") from err
        raise
    except BaseException:
        _remove(tmp)
        raise
    if dest.exists() and dest.is_dir() and tmp.is_dir():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def _is_write_failure(err: BaseException, tmp: Path) -> bool:
    """An error of writing ``tmp`` (GDAL/pyogrio, SQLite, or an OSError about that file or with no file named),
    not of reading an input inside the same block."""
    import sqlite3

    if isinstance(err, OSError):
        return err.filename is None or str(err.filename).startswith(str(tmp))
    return isinstance(err, sqlite3.Error) or type(err).__module__.startswith("pyogrio")


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0][:200] if lines else type(err).__name__) or type(err).__name__


def why_write_failed(dest: Path) -> str:
    """The likely cause of a failed write under ``dest``'s folder, as words to append to an error: a (nearly) full
    disk, a FAT file system (4 GB per file), a file-size limit of the session (``ulimit -f``), else a question."""
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        free = None
    if free is not None and free < 256 * 2**20:
        return f": the disk is full ({free / 2**20:.0f} MB free); free space or write --out to another disk"
    fs = _fs_type(parent)
    if fs in ("vfat", "msdos", "fat", "fat32"):
        return (f": {parent} is on a FAT file system, whose files stop at 4 GB; write --out to an NTFS, exFAT or ext4 "
                "disk")
    try:
        import resource  # POSIX only
    except ImportError:
        resource = None  # type: ignore[assignment]
    if resource is not None:
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY:
            return f"; this session may write files of at most {soft / 1024:.0f} KB (ulimit -f): raise the limit"
    return "; is the disk full or failing? free space or write --out to another disk"


def _fs_type(path: Path) -> str | None:
    """The file system type of the mount holding ``path`` (Linux /proc/mounts), else None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    real = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3 or len(parts[1]) <= len(best):
            continue
        if real == parts[1] or real.startswith(parts[1].rstrip("/") + "/"):
            best, kind = parts[1], parts[2]
    return kind


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
    # GDAL may leave sidecars next to a temporary GeoPackage or GeoTIFF
    for side in path.parent.glob(path.name + "*"):
        with contextlib.suppress(OSError):
            side.unlink()

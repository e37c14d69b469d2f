"""Provenance: what a decision needs to trace a result back to its inputs (IMAS 08.30 audit trail).

Fast, documented input hashing for 1-100 GB orthomosaics, and the run record stored in every output.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import platform
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rams import __version__

#: Bytes hashed from each of the sampled regions of a large file.
SAMPLE_BYTES = 4 * 2**20
#: Files up to this size are hashed whole.
FULL_HASH_LIMIT = 64 * 2**20


def fast_file_hash(path: Path, full: bool = False) -> str:
    """A quick content fingerprint of a (possibly 100 GB) file.

    ``sha256-sampled:<hex>`` is SHA-256 over the file size and 4 MiB from each of 16 evenly spaced
    offsets (the first and last included): any re-export, truncation or different mosaic changes it, and it
    costs 64 MiB of reading at most. Files up to 64 MiB, or ``full=True``, get a plain ``sha256:<hex>``.
    It identifies inputs for resume and provenance; it is not a tamper-proof seal.
    """
    size = Path(path).stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if full or size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return f"sha256:{h.hexdigest()}"
        h.update(str(size).encode())
        n = 16
        for i in range(n):
            off = (size - SAMPLE_BYTES) * i // (n - 1)
            f.seek(off)
            h.update(f.read(SAMPLE_BYTES))
    return f"sha256-sampled:{h.hexdigest()}"


def text_hash(text: str) -> str:
    """SHA-256 of a text (resolved configs, for resume keys)."""
    return hashlib.sha256(text.encode()).hexdigest()


def now_utc() -> str:
    """Current time as ISO 8601 UTC, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def run_record() -> dict[str, Any]:
    """Who/where/what software: rams version, host, user, platform and key library versions."""
    import numpy
    import rasterio
    import torch

    try:
        user = getpass.getuser()
    except Exception:  # no user name in some containers
        user = os.environ.get("USER", "unknown")
    return {
        "rams_version": __version__,
        "host": socket.gethostname(),
        "user": user,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "numpy": numpy.__version__,
    }

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


def fast_file_hash(path: Path, full: bool = False, sample_bytes: int = SAMPLE_BYTES) -> str:
    """A quick content fingerprint of a (possibly 100 GB) file.

    ``sha256-sampled:<hex>`` is SHA-256 over the file size and 4 MiB (``sample_bytes``) from each of 16 evenly
    spaced offsets (the first and last included): any re-export, truncation or different mosaic changes it, and it
    costs 64 MiB of reading at most. Files up to 64 MiB (16 samples), or ``full=True``, get a plain
    ``sha256:<hex>``. It identifies inputs for resume and provenance; it is not a tamper-proof seal. For an
    orthomosaic use :func:`dataset_hash`, which also covers the files it is read from (a VRT's blocks).
    """
    size = Path(path).stat().st_size
    h = hashlib.sha256()
    sample = sample_bytes
    with open(path, "rb") as f:
        if full or size <= 16 * sample:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
            return f"sha256:{h.hexdigest()}"
        h.update(str(size).encode())
        n = 16
        for i in range(n):
            off = (size - sample) * i // (n - 1)
            f.seek(off)
            h.update(f.read(sample))
    return f"sha256-sampled:{h.hexdigest()}"


#: Bytes sampled from all the member files of a multi-file dataset together (a VRT of a mosaic's blocks).
MEMBERS_SAMPLE_BUDGET = 256 * 2**20
#: The least sampled from each of a member's 16 places (a VRT of thousands of blocks: 4 000 x 16 x 4 KiB = 250 MiB;
#: a block exported again changes its header, which the first sample holds, with its tile offsets and sizes).
MEMBER_MIN_SAMPLE = 4 * 2**10


def dataset_hash(path: Path, full: bool = False) -> str:
    """The content fingerprint of an orthomosaic *and every file GDAL reads it from*: what identifies the input
    for resume (`rams detect --resume`), for `rams batch`'s flight keys and in provenance.

    A plain GeoTIFF gives its :func:`fast_file_hash`, as before. A VRT over a mosaic delivered in blocks, a
    GeoTIFF with an external mask (``.msk``), or a ``.aux.xml`` that sets nodata, georeferencing or band roles
    gives ``sha256-dataset:<hex>`` over the main file's hash and each member's name (relative to the main file)
    and content hash: replacing one block of a VRT changes it, where the VRT's own few kilobytes would not. The
    members share :data:`MEMBERS_SAMPLE_BUDGET` of sampled bytes (whole files with ``full``). Left out: overviews
    (never read for analysis, see :func:`rams.raster.open_raster`) and the statistics and histograms a ``.aux.xml``
    holds (QGIS writes them when a layer is opened; they change no pixel).
    """
    main = fast_file_hash(path, full)
    try:
        from rams.raster import member_files

        members = member_files(path)
    except Exception:  # not a raster GDAL opens: the caller's open gives the error
        return main
    per = max(MEMBER_MIN_SAMPLE, min(SAMPLE_BYTES, MEMBERS_SAMPLE_BUDGET // (16 * max(1, len(members)))))
    base = Path(path).resolve().parent
    parts: list[str] = []
    for m in sorted(members, key=str):
        if m.name.lower().endswith(".aux.xml"):
            text = pam_essentials(m)
            if text is None:
                continue
            h = text_hash(text)
        else:
            h = fast_file_hash(m, full, sample_bytes=per) if m.exists() else "missing"
        parts.append(f"{os.path.relpath(m.resolve(), base)}\n{h}")
    if not parts:
        return main
    return ("sha256-dataset-full:" if full else "sha256-dataset:") + text_hash("\n".join([main, *parts]))


def dataset_bytes(path: Path) -> int:
    """Bytes of a mosaic with the files it is read from (a VRT's blocks; as :func:`dataset_hash` counts them)."""
    try:
        from rams.raster import member_files

        members = member_files(path)
    except Exception:  # not a raster GDAL opens now: the file alone
        members = []
    return Path(path).stat().st_size + sum(p.stat().st_size for p in members if p.exists())


def hash_method(h: str) -> str:
    """The kind of an input hash: its prefix (``sha256``: a whole file, small or hashed in full; ``sha256-sampled``;
    ``sha256-dataset``; ``sha256-dataset-full``). Hashes of one kind compare; of two kinds they do not."""
    return h.split(":", 1)[0]


def hashed_in_full(h: str) -> bool:
    """Whether ``h`` was made with ``full=True`` (or is of a file small enough that both ways agree)."""
    return hash_method(h) in ("sha256", "sha256-dataset-full")


def pam_essentials(path: Path) -> str | None:
    """A GDAL ``.aux.xml`` without its statistics and histograms (canonical XML), or None when nothing else is in
    it (or it does not parse: GDAL ignores such a file too)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None

    def prune(el: ET.Element) -> None:
        for child in list(el):
            if child.tag == "Histograms" or (child.tag == "MDI" and child.get("key", "").startswith("STATISTICS_")):
                el.remove(child)
                continue
            prune(child)
            if child.tag in ("Metadata", "PAMRasterBand") and not list(child) and not (child.text or "").strip():
                el.remove(child)

    prune(root)
    if not list(root):
        return None
    for el in root.iter():
        el.text = (el.text or "").strip() or None
        el.tail = None
    return ET.tostring(root, encoding="unicode")


#: The files of one shapefile layer that carry its content (geometry, index, attributes, CRS, encoding).
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")


def layer_hash(path: Path) -> str:
    """SHA-256 (hex) of a vector layer file, whole; for a shapefile, of all its parts (:data:`SHAPEFILE_PARTS`
    that exist): editing an SHA's ID in the ``.dbf`` or its CRS in the ``.prj`` changes it, as it must for
    `rams batch` to redo what depends on the SHAs and for provenance to tell the two layers apart."""
    p = Path(path)
    parts = [p]
    if p.suffix.lower() == ".shp":
        parts = [q for ext in SHAPEFILE_PARTS if (q := p.with_suffix(ext)).exists() or ext == ".shp"]
    h = hashlib.sha256()
    for q in parts:
        if q != p:
            h.update(f"\n{q.suffix.lower()}\n".encode())
        with open(q, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def require_same_mosaic(detected_hash: str | None, detected_path: str | None, judged_hash: str | None,
                        judged_path: str | None, where: str, detected_size: str | None = None,
                        judged_size: str | None = None) -> None:
    """Refuse to pair a detection result with a coverage-quality judgement of another orthomosaic.

    Cancellation needs ground that the imagery shows well (``coverage_quality``) *and* that the detector analysed
    (``coverage``) in the same pixels: quality judged on one flight and detections from another (another date, a
    blurred re-export) would let sharp imagery vouch for ground the detector saw blurred. Hashes missing from older
    files are not checked; hashes of two kinds (``rams detect`` with ``full_hash``, quality sampled) are not
    compared, only the file sizes where both are recorded."""
    from rams.errors import InputError

    if not detected_hash or not judged_hash or detected_hash == judged_hash:
        return
    if hash_method(detected_hash) != hash_method(judged_hash) and (
            not detected_size or not judged_size or detected_size == judged_size):
        return
    raise InputError(
        f"{where}: the detections come from {detected_path or 'one orthomosaic'} but the coverage quality was judged "
        f"on {judged_path or 'another'} (a different file, or the same one changed since, e.g. by gdaladdo); run "
        "rams quality on the orthomosaic the detector analysed"
    )


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

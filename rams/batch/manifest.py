"""Which flights a batch processes: a folder of orthomosaics, or a manifest with each flight's metadata.

A **folder** contributes every GeoTIFF and VRT below it (``*.tif``, ``*.tiff``, ``*.vrt``, any depth, hidden
folders and the batch's own output folder skipped), in path order. A VRT is one flight with all its blocks: the
GeoTIFFs it is built from are not flights of their own (a mosaic exported in blocks, with the VRT beside them).
The flight ID is the path relative to the folder without its suffix, with separators and other unsafe
characters replaced by ``_`` (``day1/ortho.tif`` -> ``day1_ortho``).

A **manifest** (CSV with a header row, or YAML) lists one flight per row with the columns

========================  ====================================================================================
``orthomosaic``           path of the GeoTIFF (required); relative paths are relative to the manifest's folder
``flight_id``             unique ID, letters, digits, ``.``, ``_``, ``-`` (default: the file name's stem)
``date``                  ISO date or date-time of the flight (e.g. ``2024-05-02``)
``operator``              who flew it (organisation / team)
``sensor``                camera or platform
========================  ====================================================================================

Header names are matched case-insensitively with spaces or hyphens read as ``_`` (``Flight ID`` works).
YAML holds either a list of such mappings or a mapping with a ``flights`` list. Unknown columns, a missing
``orthomosaic``, a bad date or ID, and repeated IDs or files are errors naming the row: a manifest is a record
of the survey and must not be half right. A listed file that is missing is *not* a manifest error: that
flight fails (recorded in the batch status) and the others run.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rams.errors import InputError, InputNotFoundError

#: Columns a manifest may have (``orthomosaic`` is required).
COLUMNS: tuple[str, ...] = ("orthomosaic", "flight_id", "date", "operator", "sensor")
RASTER_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".vrt")
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".yaml", ".yml")
FLIGHT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: GDAL virtual file systems and URLs: not read by rams' raster layer yet (see docs/batch.md).
_REMOTE_PREFIXES = ("/vsi", "s3://", "gs://", "az://", "http://", "https://")


@dataclass(frozen=True)
class Flight:
    """One flight of a batch: its orthomosaic and what the audit trail records about it."""

    flight_id: str
    ortho: Path
    """Absolute path of the orthomosaic (workers open the same path: see docs/batch.md)."""
    date: str | None = None
    operator: str | None = None
    sensor: str | None = None

    def metadata(self) -> dict[str, str]:
        """Flight fields for provenance tables (``flight.*`` keys)."""
        return {
            "flight.flight_id": self.flight_id,
            "flight.orthomosaic": str(self.ortho),
            "flight.date": self.date or "",
            "flight.operator": self.operator or "",
            "flight.sensor": self.sensor or "",
        }


def load_flights(source: Path, exclude: Sequence[Path] = ()) -> list[Flight]:
    """Flights from a folder of orthomosaics or a manifest file (CSV/YAML).

    Args:
        source: folder or manifest path.
        exclude: folders to skip when scanning a folder (the batch's own ``--out``).

    Raises:
        InputNotFoundError: ``source`` does not exist.
        InputError: no orthomosaic found, unknown manifest type, or an invalid manifest row.
    """
    source = Path(source)
    if not source.exists():
        raise InputNotFoundError(
            f"flights not found: {source} (give a folder of orthomosaics or a manifest .csv/.yaml)"
        )
    if source.is_dir():
        return flights_from_folder(source, exclude)
    if source.suffix.lower() not in MANIFEST_SUFFIXES:
        raise InputError(
            f"{source} is neither a folder nor a manifest (.csv, .yaml, .yml); give a folder of orthomosaics or "
            "a manifest listing them"
        )
    return read_manifest(source)


def flights_from_folder(folder: Path, exclude: Sequence[Path] = ()) -> list[Flight]:
    """Every GeoTIFF below ``folder`` as a flight (see the module docstring for IDs)."""
    folder = Path(folder).resolve()
    skip = [Path(e).resolve() for e in exclude]
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in skip)
        found.extend(here / f for f in files if f.lower().endswith(RASTER_SUFFIXES) and not f.startswith("."))
    found.sort(key=lambda p: p.relative_to(folder).as_posix())
    if not found:
        raise InputError(
            f"no orthomosaic (*.tif, *.tiff, *.vrt) in {folder}; give the folder holding the GeoTIFFs or a manifest"
        )
    found = _without_vrt_members(found)
    flights = []
    for p in found:
        rel = p.relative_to(folder).with_suffix("").as_posix()
        fid = _UNSAFE.sub("_", rel.replace("/", "_")).strip("._-") or "flight"
        flights.append(Flight(flight_id=fid[:100], ortho=p))
    _check_unique(flights, folder)
    return flights


def _without_vrt_members(found: list[Path]) -> list[Path]:
    """``found`` less the files that a VRT among them is built from (each block is part of that flight)."""
    members: set[Path] = set()
    for p in found:
        if p.suffix.lower() == ".vrt":
            from rams.raster import member_files

            try:
                members.update(m.resolve() for m in member_files(p))
            except Exception:  # a VRT GDAL cannot open stays a flight: it fails with its own error, the rest run
                continue
    return [p for p in found if p.resolve() not in members]


def read_manifest(path: Path) -> list[Flight]:
    """Flights listed in a CSV or YAML manifest (see the module docstring for the columns)."""
    path = Path(path)
    rows = _read_yaml(path) if path.suffix.lower() in (".yaml", ".yml") else _read_csv(path)
    if not rows:
        raise InputError(f"manifest {path} lists no flights; add one row per orthomosaic")
    base = path.resolve().parent
    flights = [_flight_from_row(row, where, base, path) for where, row in rows]
    _check_unique(flights, path)
    return flights


def _read_csv(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"manifest {path} is not UTF-8 text; save it as UTF-8 CSV") from err
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"manifest {path} is empty; write a header row ({', '.join(COLUMNS)}) and one row per "
                         "flight") from None
    names = [_norm(h) for h in header]
    _check_columns(names, path)
    rows = []
    for n, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(names):
            raise InputError(
                f"manifest {path} line {n}: {len(values)} values for {len(names)} columns; quote values that "
                "contain commas"
            )
        rows.append((f"line {n}", dict(zip(names, values, strict=False))))
    return rows


def _read_yaml(path: Path) -> list[tuple[str, dict[str, Any]]]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputError(f"manifest {path} is not valid YAML ({err}); fix the syntax") from err
    if isinstance(data, dict) and set(data) == {"flights"}:
        data = data["flights"]
    if not isinstance(data, list):
        raise InputError(
            f"manifest {path} must hold a list of flights (or a mapping with a 'flights' list), each a mapping "
            f"with {', '.join(COLUMNS)}"
        )
    rows = []
    for n, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise InputError(f"manifest {path} flight {n}: expected a mapping of column: value, got {item!r}")
        row = {_norm(str(k)): v for k, v in item.items()}
        _check_columns(list(row), path, where=f"flight {n}")
        rows.append((f"flight {n}", row))
    return rows


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _check_columns(names: Iterable[str], path: Path, where: str = "header") -> None:
    names = list(names)
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise InputError(
            f"manifest {path} {where}: unknown column(s) {unknown}; allowed: {', '.join(COLUMNS)}"
        )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"manifest {path} {where}: column(s) {dup} appear twice; keep one of each")
    if where == "header" and "orthomosaic" not in names:
        raise InputError(f"manifest {path} has no 'orthomosaic' column; add it (the path of each GeoTIFF)")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _flight_from_row(row: dict[str, Any], where: str, base: Path, path: Path) -> Flight:
    ortho_text = _text(row.get("orthomosaic"))
    if ortho_text is None:
        raise InputError(f"manifest {path} {where}: 'orthomosaic' is empty; give the path of the GeoTIFF")
    if ortho_text.lower().startswith(_REMOTE_PREFIXES):
        raise InputError(
            f"manifest {path} {where}: {ortho_text} is an object-store/URL path, which rams cannot read yet; "
            "mount the bucket on every machine (e.g. with rclone mount) and list the mounted path (docs/batch.md)"
        )
    ortho = Path(ortho_text).expanduser()
    if not ortho.is_absolute():
        ortho = base / ortho
    ortho = Path(os.path.normpath(ortho))
    fid = _text(row.get("flight_id"))
    if fid is None:
        fid = ortho.stem
        if not FLIGHT_ID_RE.match(fid):
            raise InputError(
                f"manifest {path} {where}: file name {ortho.name!r} is no valid flight ID; give a flight_id "
                "(letters, digits, '.', '_', '-')"
            )
    elif not FLIGHT_ID_RE.match(fid):
        raise InputError(
            f"manifest {path} {where}: flight_id {fid!r} is invalid; use letters, digits, '.', '_' and '-' "
            "(it names the flight's output file), starting with a letter or digit, at most 100 characters"
        )
    return Flight(
        flight_id=fid,
        ortho=ortho,
        date=_date(row.get("date"), where, path),
        operator=_text(row.get("operator")),
        sensor=_text(row.get("sensor")),
    )


def _date(value: Any, where: str, path: Path) -> str | None:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    text = _text(value)
    if text is None:
        return None
    for parse in (dt.date.fromisoformat, dt.datetime.fromisoformat):
        try:
            return parse(text).isoformat()
        except ValueError:
            continue
    raise InputError(
        f"manifest {path} {where}: date {text!r} is not an ISO date; write it as YYYY-MM-DD "
        "(or YYYY-MM-DDTHH:MM)"
    )


def _check_unique(flights: list[Flight], source: Path) -> None:
    ids = [f.flight_id for f in flights]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(
            f"flight IDs {dup} repeat in {source}; every flight needs its own ID (set flight_id in a manifest)"
        )
    paths = [str(f.ortho) for f in flights]
    dup_p = sorted({p for p in paths if paths.count(p) > 1})
    if dup_p:
        raise InputError(f"orthomosaic(s) {dup_p} are listed twice in {source}; list each flight once")

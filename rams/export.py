"""Exports of result layers to the formats GIS and mine-action databases take, and derived GeoPackages.

This is, with :mod:`rams.layers` and :mod:`rams.raster`, an I/O boundary of rams: it writes files, always
atomically (a temporary name beside the destination, renamed on success).

Formats (``rams export --format``):

* ``geojson``: RFC 7946 (WGS84 longitude/latitude, right-hand rings, 7 decimals, about 1 cm);
* ``kml``: for field tablets, all layers in one file, one folder per layer, each feature styled with the
  land-release colours (:mod:`rams.styles`) and named by its ID; attributes whose names KML reserves
  (``model``, ``name``, ``description``...) get an ``_attr`` suffix;
* ``shp``: one zip holding one ESRI shapefile per layer, WGS84, field names of at most 10 characters following
  IMSMA NG conventions (``PolyID`` for polygons, ``PointID``/``PointType`` for points; other names shortened,
  the full mapping in ``<layer>_fields.csv`` inside the zip). Detections go as points (their centres),
  as IMSMA records items;
* ``csv``: IMSMA point lists (``PolyID, PointNo, PointID, PointType, Xcoord, Ycoord``) in WGS84 decimal
  degrees (X = longitude, Y = latitude): every polygon as its turning points, clockwise, ring not closed;
  detections as evidence points (``PolyID`` = the hazard polygon holding them, when the file has
  ``hazard_polygons``). A point list cannot describe a hole, so polygons with holes are cut into hole-free
  pieces first (``PolyID`` suffixed ``-1``, ``-2``...): exporting only the outer ring of a cancellation
  polygon would swallow the evidence inside it;
* ``fgb``: FlatGeobuf, in the layer's own (metric) CRS, for GIS work (with a spatial index, so features are
  stored in spatial order, not the GeoPackage's).

One layer goes to the file ``--out``; several layers go to files named after the layers in the folder
``--out`` (KML and the shapefile zip always hold every layer in one file).
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import field_validator

from rams.config import StrictModel
from rams.errors import InputError, OutputError, VectorInputError
from rams.layers import geometry_type_option, list_layers, read_layer, write_extras
from rams.outputs import atomic_path

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("geojson", "kml", "shp", "csv", "fgb")
EXTENSIONS = {"geojson": ".geojson", "kml": ".kml", "shp": ".zip", "csv": ".csv", "fgb": ".fgb"}
WGS84 = "EPSG:4326"
IMSMA_CSV_COLUMNS = ("PolyID", "PointNo", "PointID", "PointType", "Xcoord", "Ycoord")
POINT_LAYERS = ("detections",)
"""Layers whose features are items: exported as points (their centres) to IMSMA formats (shp, csv)."""

#: rams attribute -> IMSMA-style shapefile field (at most 10 characters).
IMSMA_FIELDS: dict[str, str] = {
    "poly_id": "PolyID",
    "det_id": "PointID",
    "point_type": "PointType",
    "sha_id": "SHA_ID",
    "label": "ItemClass",
    "score": "Score",
    "model": "Model",
    "tile_id": "TileID",
    "length_m": "Length_m",
    "width_m": "Width_m",
    "lon": "Lon",
    "lat": "Lat",
    "evidence_status": "EvidStatus",
    "evidence": "Evidence",
    "n_items": "NumItems",
    "n_confirm": "NumConfirm",
    "det_ids": "DetIDs",
    "buffer_m": "Buffer_m",
    "area_m2": "Area_m2",
    "area_ha": "Area_ha",
    "status": "Status",
    "reason": "Reason",
    "note": "Note",
    "basis": "Basis",
    "quality": "Quality",
    "reasons": "Reasons",
}


class ExportConfig(StrictModel):
    """IMSMA conventions for the exports; set the point types to your IMSMA data inventory's values."""

    vertex_point_type: str = "Turning Point"
    """``PointType`` of polygon vertices in CSV point lists."""
    evidence_point_type: str = "Evidence Point"
    """``PointType`` of detections (items) in CSV point lists and shapefiles."""
    coordinate_decimals: int = 7
    """Decimals of longitude/latitude in CSV point lists (7: about 1 cm)."""

    @field_validator("coordinate_decimals")
    @classmethod
    def _decimals(cls, v: int) -> int:
        if not 5 <= v <= 10:
            raise ValueError("must be between 5 and 10")
        return v


@dataclass
class ExportReport:
    """What an export wrote."""

    format: str
    out: Path
    layers: dict[str, int] = field(default_factory=dict)
    """Layer name -> features written."""
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "out": str(self.out), "layers": dict(self.layers), "files": list(self.files)}


# ---------------------------------------------------------------------------------------------------------
# Derived GeoPackages


def derive_gpkg(
    src: Path,
    dest: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    metadata: Mapping[str, Any] | None = None,
    styles: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """A new GeoPackage ``dest``: a copy of ``src`` with ``layers`` added (same-named layers replaced).

    Written atomically (copy and additions happen in a temporary file, renamed at the end); ``src`` is never
    modified. ``metadata`` keys are added to (or replace keys in) ``rams_metadata``; ``styles`` replace the
    default QGIS styles of their layers.
    """
    import pyogrio

    src = Path(src)
    if not src.exists():
        raise VectorInputError(f"GeoPackage not found: {src} (check the path)")
    with atomic_path(Path(dest), overwrite=overwrite) as tmp:
        shutil.copyfile(src, tmp)
        for name, gdf in layers.items():
            pyogrio.write_dataframe(gdf, tmp, layer=name, driver="GPKG", promote_to_multi=False,
                                    **geometry_type_option(name, gdf))  # fmt: skip
        write_extras(tmp, metadata, styles)
    return Path(dest)


# ---------------------------------------------------------------------------------------------------------
# Geometry helpers


def split_holes(poly: Any) -> list[Any]:
    """Cut a polygon into pieces without holes that together cover exactly the same ground.

    Each hole is opened by cutting along a vertical line through a point inside it; pieces that still hold
    holes are cut again.
    """
    from shapely import box
    from shapely.geometry import Polygon

    if not isinstance(poly, Polygon):
        raise TypeError("split_holes takes a Polygon")
    if not poly.interiors:
        return [poly]
    hole = Polygon(poly.interiors[0])
    x = hole.representative_point().x
    minx, miny, maxx, maxy = poly.bounds
    pad = max(maxx - minx, maxy - miny) + 1.0
    out: list[Any] = []
    for half in (box(minx - pad, miny - pad, x, maxy + pad), box(x, miny - pad, maxx + pad, maxy + pad)):
        for p in _polygon_parts(poly.intersection(half)):
            if p.area > 0:
                out.extend(split_holes(p))
    return out


def _polygon_parts(geom: Any) -> list[Any]:
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geom, Polygon):
        return [geom] if not geom.is_empty else []
    if isinstance(geom, MultiPolygon):
        return [g for g in geom.geoms if not g.is_empty]
    if hasattr(geom, "geoms"):
        return [p for g in geom.geoms for p in _polygon_parts(g)]
    return []


def _abbrev(point_type: str) -> str:
    letters = "".join(w[0] for w in point_type.split() if w)
    return letters.upper() or "P"


def _feature_ids(gdf: gpd.GeoDataFrame, layer: str) -> list[str]:
    for col in ("poly_id", "det_id", "sha_id", "cell_id"):
        if col in gdf.columns:
            return [str(v) for v in gdf[col].tolist()]
    return [f"{layer}-{i + 1}" for i in range(len(gdf))]


def imsma_point_list(
    gdf: gpd.GeoDataFrame,
    layer: str,
    cfg: ExportConfig,
    containers: gpd.GeoDataFrame | None = None,
) -> pd.DataFrame:
    """IMSMA point-list rows for a layer (WGS84): polygon turning points, or item points.

    Args:
        gdf: the layer (any CRS).
        layer: its name (item layers, :data:`POINT_LAYERS`, become evidence points).
        cfg: point types and coordinate precision.
        containers: optional hazard polygons (``poly_id``) whose ID item points take as ``PolyID``.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Point, Polygon
    from shapely.geometry.polygon import orient

    rows: list[dict[str, Any]] = []
    wgs = to_wgs84(gdf) if gdf.crs is not None else gdf
    ids = _feature_ids(gdf, layer)
    nd = cfg.coordinate_decimals
    geoms = list(wgs.geometry)
    is_point_layer = layer in POINT_LAYERS or all(
        g is not None and g.geom_type in ("Point", "MultiPoint") for g in geoms
    )
    if is_point_layer:
        # centres in the layer's own (metric) CRS, then to WGS84
        centres = list(to_wgs84(_to_points(gdf)).geometry) if gdf.crs is not None else [g.centroid for g in geoms]
        poly_of = [""] * len(centres)
        if containers is not None and len(containers) and "poly_id" in containers.columns:
            cont = containers.to_crs(WGS84)
            pg = gpd.GeoDataFrame({"i": range(len(centres))}, geometry=centres, crs=WGS84)
            joined = gpd.sjoin(pg, cont[["poly_id", "geometry"]], predicate="within", how="left")
            for i, pid in zip(joined["i"], joined["poly_id"], strict=True):
                if isinstance(pid, str) and not poly_of[i]:
                    poly_of[i] = pid
        for k, (p, pid) in enumerate(zip(centres, ids, strict=True)):
            if p is None or p.is_empty:
                continue
            assert isinstance(p, Point)
            rows.append({"PolyID": poly_of[k], "PointNo": k + 1, "PointID": pid,
                         "PointType": cfg.evidence_point_type, "Xcoord": round(p.x, nd), "Ycoord": round(p.y, nd)})
    else:
        tag = _abbrev(cfg.vertex_point_type)
        for pid, g in zip(ids, geoms, strict=True):
            pieces = [q for part in _polygon_parts(g) for q in split_holes(part)]
            for k, piece in enumerate(pieces):
                poly_id = pid if len(pieces) == 1 else f"{pid}-{k + 1}"
                ring = list(orient(Polygon(piece.exterior), sign=-1.0).exterior.coords)[:-1]
                pts: list[tuple[float, float]] = []
                for x, y, *_ in ring:  # rounding can merge neighbouring vertices: keep each point once
                    p = (round(x, nd), round(y, nd))
                    if not pts or p != pts[-1]:
                        pts.append(p)
                while len(pts) > 1 and pts[0] == pts[-1]:
                    pts.pop()
                if len(pts) < 3:
                    log.warning("%s %s: a piece smaller than the coordinate precision was left out", layer, poly_id)
                    continue
                for n, (x, y) in enumerate(pts, start=1):
                    rows.append({"PolyID": poly_id, "PointNo": n, "PointID": f"{poly_id}-{tag}{n}",
                                 "PointType": cfg.vertex_point_type, "Xcoord": x, "Ycoord": y})
    return pd.DataFrame(rows, columns=list(IMSMA_CSV_COLUMNS))


def shapefile_fields(columns: Sequence[str]) -> dict[str, str]:
    """Shapefile field name (<= 10 characters, unique, case-insensitively) for each column."""
    out: dict[str, str] = {}
    used: set[str] = set()
    poly_like = "poly_id" in columns
    for c in columns:
        if c == "geometry":
            continue
        name = IMSMA_FIELDS.get(c)
        if c == "sha_id" and not poly_like:
            name = "PolyID"
        if name is None:
            name = c[:10]
        base, k = name, 1
        while name.lower() in used:
            suffix = str(k)
            name = base[: 10 - len(suffix)] + suffix
            k += 1
        used.add(name.lower())
        out[c] = name
    return out


# ---------------------------------------------------------------------------------------------------------
# Exports


def to_wgs84(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Reproject to WGS84 and repair what reprojection broke (a valid polygon can self-intersect after it)."""
    from shapely import make_valid

    if not len(gdf):
        return gdf.set_crs(WGS84, allow_override=True)
    out = gdf.to_crs(WGS84)
    bad = ~out.geometry.is_valid
    if bad.any():
        fixed = []
        for g in out.geometry[bad]:
            m = make_valid(g)
            if g.geom_type in ("Polygon", "MultiPolygon"):
                parts = _polygon_parts(m)
                from shapely.geometry import MultiPolygon

                m = MultiPolygon(parts) if len(parts) != 1 else parts[0]
            fixed.append(m)
        out.loc[bad, out.geometry.name] = fixed
        log.debug("repaired %d geometry(ies) after reprojection to WGS84", int(bad.sum()))
    return out


def _spatial_layers(path: Path) -> list[str]:
    import pyogrio

    return [str(name) for name, gtype in pyogrio.list_layers(path) if gtype is not None]


def _to_points(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = gdf.copy()
    out["geometry"] = out.geometry.centroid
    return out


def _prepare_shp(gdf: gpd.GeoDataFrame, layer: str, cfg: ExportConfig) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    import geopandas as gpd

    g = gdf
    if layer in POINT_LAYERS:
        g = _to_points(g)
        g.insert(0, "point_type", cfg.evidence_point_type)
    g = to_wgs84(g)
    mapping = shapefile_fields([c for c in g.columns if c != g.geometry.name])
    g = g.rename(columns=mapping)
    for col in g.columns:
        if col == g.geometry.name:
            continue
        if g[col].dtype == object:
            vals = g[col]
            too_long = vals.map(lambda v: isinstance(v, str) and len(v) > 254)
            if too_long.any():
                log.warning("layer %s: %d value(s) of %s exceed the shapefile's 254 characters; truncated "
                            "(the GeoPackage keeps them whole)", layer, int(too_long.sum()), col)
                g[col] = vals.map(lambda v: v[:250] + "..." if isinstance(v, str) and len(v) > 254 else v)
    return gpd.GeoDataFrame(g, geometry=g.geometry.name, crs=WGS84), mapping


#: Field names GDAL's LIBKML driver turns into KML elements (a column ``model`` would vanish into a 3D model).
KML_RESERVED = ("id", "name", "description", "snippet", "timestamp", "begin", "end", "altitudemode", "tessellate",
                "extrude", "visibility", "draworder", "icon", "model", "ogr_style")


def kml_fields(columns: Sequence[str]) -> dict[str, str]:
    """KML attribute names: LIBKML's reserved field names get an ``_attr`` suffix, others stay."""
    return {c: f"{c}_attr" if c.lower() in KML_RESERVED else c for c in columns if c != "geometry"}


def _kml_frame(gdf: gpd.GeoDataFrame, layer: str) -> gpd.GeoDataFrame:
    from rams.styles import feature_symbol, ogr_style

    g = to_wgs84(gdf)
    g = g.rename(columns=kml_fields([c for c in g.columns if c != g.geometry.name]))
    ids = _feature_ids(gdf, layer)
    g.insert(0, "Name", ids)
    styles = []
    for _, row in gdf.iterrows():
        sym = feature_symbol(layer, row.to_dict())
        styles.append(ogr_style(sym) if sym is not None else "")
    g["OGR_STYLE"] = styles
    return g


def export_layers(
    gpkg: Path,
    fmt: str,
    out: Path,
    layers: Sequence[str] | None = None,
    cfg: ExportConfig | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export layers of a result GeoPackage to ``fmt`` (one of :data:`FORMATS`) at ``out``.

    Args:
        gpkg: the result (or decision) GeoPackage.
        fmt: ``geojson``, ``kml``, ``shp``, ``csv`` or ``fgb``.
        out: a file for one layer (and always for ``kml`` / ``shp``), a folder for several.
        layers: layers to export (None: every spatial layer).
        cfg: IMSMA conventions.
        overwrite: replace an existing ``out``.

    Raises:
        InputError: unknown format.
        VectorInputError: the file or a named layer is missing, or a layer has no geometry.
    """

    cfg = cfg or ExportConfig()
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    names = list_layers(gpkg)
    spatial = _spatial_layers(gpkg)
    if layers:
        missing = [n for n in layers if n not in names]
        if missing:
            raise VectorInputError(f"{gpkg} has no layer(s) {missing} (it has {names}); pick from those")
        flat = [n for n in layers if n not in spatial]
        if flat:
            raise VectorInputError(
                f"layer(s) {flat} in {gpkg} have no geometry and cannot be exported to {fmt}; pick spatial layers"
            )
        chosen = list(dict.fromkeys(layers))
    else:
        chosen = spatial
        if not chosen:
            raise VectorInputError(f"{gpkg} holds no spatial layer to export")
    _check_out_name(Path(out), fmt, chosen)
    frames = {n: read_layer(gpkg, n, what="layer") for n in chosen}
    report = ExportReport(fmt, Path(out))
    single_file = fmt in ("kml", "shp") or len(chosen) == 1
    containers = None
    if fmt == "csv" and "hazard_polygons" in spatial and any(n in POINT_LAYERS for n in chosen):
        containers = frames["hazard_polygons"] if "hazard_polygons" in frames else read_layer(gpkg, "hazard_polygons")
    with atomic_path(Path(out), overwrite=overwrite) as tmp, tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        if not single_file:
            tmp.mkdir(parents=True)
        for name, gdf in frames.items():
            target = tmp if single_file else tmp / f"{name}{EXTENSIONS[fmt]}"
            report.layers[name] = len(gdf)
            if fmt == "geojson":
                _write_checked(to_wgs84(gdf), target, Path(out), name, "GeoJSON", False, RFC7946="YES")
            elif fmt == "fgb":
                _write_checked(gdf, target, Path(out), name, "FlatGeobuf", False)
            elif fmt == "kml":
                _write_checked(_kml_frame(gdf, name), target, Path(out), name, "LIBKML", True)
            elif fmt == "csv":
                _write_csv(imsma_point_list(gdf, name, cfg, containers=containers), target)
            elif fmt == "shp":
                _write_shp_layer(gdf, name, cfg, staging)
            if not single_file:
                report.files.append(target.name)
        if fmt == "shp":
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for f in sorted(staging.iterdir()):
                    z.write(f, arcname=f.name)
    if single_file:
        report.files.append(Path(out).name)
    log.info("exported %s to %s (%s)", ", ".join(chosen), out, fmt)
    return report


def _write_checked(gdf: gpd.GeoDataFrame, target: Path, out: Path, layer: str, driver: str, named: bool,
                   **options: Any) -> None:
    """Write one layer with GDAL and read back how many features the file holds.

    GDAL's LIBKML driver writes at close and does not report a failure there: on a full disk it left a truncated
    8 KB KML and rams said "exported 89" (measured). So every layer is read back (:func:`pyogrio.read_info`) and a
    failed or short write is one :class:`OutputError` naming the file and the likely cause. ``named``: the driver
    takes ``layer`` as the layer's name in the file (KML folders)."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError, FeatureError

    def fail(why: str) -> OutputError:
        return OutputError(f"{out}: could not write layer {layer} ({why}); is the disk full? free space or write "
                           "--out to another disk")  # fmt: skip

    kw = {"layer": layer} if named else {}
    try:
        pyogrio.write_dataframe(gdf, target, driver=driver, **kw, **options)
        n = int(pyogrio.read_info(target, force_feature_count=True, **kw)["features"])
    except (DataSourceError, DataLayerError, FeatureError, OSError) as err:
        raise fail(str(err).splitlines()[0][:200]) from err
    if n != len(gdf):
        raise fail(f"the file holds {n} of {len(gdf)} features")


def _check_out_name(out: Path, fmt: str, layers: Sequence[str]) -> None:
    """One file (with the format's extension) for one layer, KML and shapefile zips; a folder for several."""
    ext = EXTENSIONS[fmt]
    ok_ext = (ext, ".json") if fmt == "geojson" else (ext,)
    single = fmt in ("kml", "shp") or len(layers) == 1
    suffix = out.suffix.lower()
    if single and suffix not in ok_ext:
        what = "a zipped shapefile" if fmt == "shp" else f"a {fmt} file"
        raise InputError(f"--out {out} must end in {ext} ({what}); e.g. --out {out.with_suffix(ext).name}")
    if not single and suffix in (*ok_ext, ".zip", ".kml", ".csv", ".fgb", ".geojson"):
        raise InputError(
            f"{len(layers)} layers go to a folder, one {ext} file per layer, but --out {out} looks like a file; "
            f"give a folder (e.g. --out {out.with_suffix('')}) or a single --layer"
        )


def _write_csv(rows: pd.DataFrame, target: Path) -> None:
    with open(target, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(IMSMA_CSV_COLUMNS)
        for rec in rows.itertuples(index=False):
            w.writerow(list(rec))


def _write_shp_layer(gdf: gpd.GeoDataFrame, name: str, cfg: ExportConfig, staging: Path) -> None:
    """Write one shapefile and its field mapping into the folder that will be zipped."""
    import pyogrio

    g, mapping = _prepare_shp(gdf, name, cfg)
    kw: dict[str, Any] = {}
    if g.empty:
        kw["geometry_type"] = "Point" if name in POINT_LAYERS else "MultiPolygon"
    pyogrio.write_dataframe(g, staging / f"{name}.shp", driver="ESRI Shapefile", encoding="UTF-8", **kw)
    with open(staging / f"{name}_fields.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["rams_name", "shapefile_field"])
        for k, v in mapping.items():
            w.writerow([k, v])


def read_zipped_shapefile(path: Path, layer: str) -> gpd.GeoDataFrame:
    """Read one layer of a zipped shapefile export (as IMSMA would receive it)."""
    import pyogrio

    with tempfile.TemporaryDirectory() as d:
        with zipfile.ZipFile(path) as z:
            z.extractall(d)
        return pyogrio.read_dataframe(Path(d) / f"{layer}.shp")

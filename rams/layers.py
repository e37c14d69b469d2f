"""Vector I/O boundary: read GIS layers with clear errors, write GeoPackages atomically.

Every vector path rams opens or writes goes through here (exports to other formats: :mod:`rams.export`).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd

from rams.errors import InputNotFoundError, VectorInputError
from rams.outputs import atomic_path

log = logging.getLogger(__name__)

METADATA_TABLE = "rams_metadata"
#: GeoPackage version written (GDAL's default is 1.4 since GDAL 3.7; QGIS and ArcGIS builds on older GDAL warn
#: that a 1.4 file "may only be partially supported"; rams uses nothing newer than 1.2).
GPKG_VERSION = "1.2"
#: Geometry type declared for a layer written *empty* (GDAL would declare "Unknown", and QGIS then opens the layer
#: without a geometry type, so its default style cannot apply). rams layers are polygons; these are single-part.
SINGLE_PART_LAYERS = frozenset({"detections", "truth", "confusers", "sha_reduction"})


def list_layers(path: Path) -> list[str]:
    """Layer names in a vector file."""
    import pyogrio

    _check_exists(path)
    try:
        return [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as err:
        raise VectorInputError(
            f"{path} is not a vector file GDAL can read ({err}); give a GeoPackage or shapefile"
        ) from err


def _check_exists(path: Path) -> None:
    if not Path(path).exists():
        raise InputNotFoundError(f"vector file not found: {path} (check the path)")


def read_layer(
    path: Path,
    layer: str | None = None,
    required_columns: Sequence[str] = (),
    what: str = "layer",
) -> gpd.GeoDataFrame:
    """Read one layer; errors name the file, the missing layer or column, and what to do.

    Args:
        path: GeoPackage, shapefile, GeoJSON, FlatGeobuf...
        layer: layer name; None takes the only layer (error if several and none is named).
        required_columns: attribute columns that must exist.
        what: words for messages (e.g. "prediction layer").
    """
    import pyogrio

    _check_exists(path)
    names = list_layers(path)
    if layer is None:
        if len(names) != 1:
            example = names[0] if names else "LAYER"
            raise VectorInputError(f"{path} holds layers {names}; name the {what} to use (e.g. layer {example!r})")
        layer = names[0]
    elif layer not in names:
        raise VectorInputError(f"{path} has no layer {layer!r} (it has {names}); give the right {what} name")
    try:
        gdf = pyogrio.read_dataframe(path, layer=layer)
    except Exception as err:
        raise VectorInputError(f"cannot read {what} {layer!r} from {path}: {err}") from err
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry is None:
        raise VectorInputError(f"{what} {layer!r} in {path} has no geometry column; give a spatial layer")
    missing = [c for c in required_columns if c not in gdf.columns]
    if missing:
        raise VectorInputError(
            f"{what} {layer!r} in {path} lacks column(s) {missing} (has {list(gdf.columns)}); add them or "
            "choose another layer"
        )
    if gdf.crs is None and len(gdf):
        raise VectorInputError(f"{what} {layer!r} in {path} has no CRS; assign one in QGIS and save again")
    if gdf.crs is not None and not (gdf.crs.is_projected or gdf.crs.is_geographic):
        raise VectorInputError(
            f"{what} {layer!r} in {path} is in a local coordinate system ({gdf.crs.name!r}) that is not tied to the "
            "earth, so it cannot be laid over the imagery; save it in the orthomosaic's CRS or WGS 84 (EPSG:4326)"
        )
    return gdf


def write_gpkg(
    dest: Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    styles: Mapping[str, str] | None = None,
) -> Path:
    """Write layers (and a key/value metadata table, and optional QGIS QML styles) to a GeoPackage atomically.

    Nothing appears under ``dest`` unless every layer was written.
    """
    import pyogrio

    with atomic_path(Path(dest), overwrite=overwrite) as tmp:
        for i, (name, gdf) in enumerate(layers.items()):
            opts = {"dataset_options": {"VERSION": GPKG_VERSION}} if i == 0 else {}
            pyogrio.write_dataframe(gdf, tmp, layer=name, driver="GPKG", promote_to_multi=False,
                                    **geometry_type_option(name, gdf), **opts)  # fmt: skip
        write_extras(tmp, metadata, styles)
    return Path(dest)


def write_extras(path: Path, metadata: Mapping[str, Any] | None, styles: Mapping[str, str] | None) -> None:
    """Add metadata keys (replacing same-named ones) and default QGIS styles (replacing those of the same
    layers) to a GeoPackage being written."""
    if metadata is None and not styles:
        return
    con = sqlite3.connect(path)
    try:
        if metadata is not None:
            write_metadata(con, metadata)
        if styles:
            has_styles = con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name='layer_styles'"
            ).fetchone()
            if has_styles:
                con.executemany("DELETE FROM layer_styles WHERE f_table_name = ?", [(k,) for k in styles])
            write_styles(con, styles)
        con.commit()
    finally:
        con.close()


class ChunkedLayerWriter:
    """One layer of a GeoPackage written chunk by chunk, so that memory holds a chunk, not the layer.

    The first non-empty chunk creates the layer (replacing a same-named one in an existing file), later chunks
    are appended; every chunk must have the same columns and dtypes. :meth:`finish` writes the layer empty
    (with its declared geometry type) when no chunk had rows. Use it on the temporary path of
    :func:`rams.outputs.atomic_path`, so that an interrupted run leaves nothing under the final name.
    """

    def __init__(self, path: Path, name: str, new_file: bool) -> None:
        self.path = Path(path)
        self.name = name
        self.new_file = new_file
        self.rows = 0
        self.chunks = 0

    def write(self, gdf: gpd.GeoDataFrame) -> None:
        import pyogrio

        if gdf.empty:
            return
        opts = {"dataset_options": {"VERSION": GPKG_VERSION}} if self.new_file and self.chunks == 0 else {}
        pyogrio.write_dataframe(gdf, self.path, layer=self.name, driver="GPKG", promote_to_multi=False,
                                append=self.chunks > 0, **opts)  # fmt: skip
        self.rows += len(gdf)
        self.chunks += 1

    def finish(self, empty: gpd.GeoDataFrame) -> None:
        """Write ``empty`` (the layer's columns, no rows) if nothing was written."""
        import pyogrio

        if self.chunks:
            return
        opts = {"dataset_options": {"VERSION": GPKG_VERSION}} if self.new_file else {}
        pyogrio.write_dataframe(empty, self.path, layer=self.name, driver="GPKG", promote_to_multi=False,
                                **geometry_type_option(self.name, empty), **opts)  # fmt: skip
        self.chunks += 1


def geometry_type_option(name: str, gdf: gpd.GeoDataFrame) -> dict[str, str]:
    """``pyogrio.write_dataframe`` keyword declaring the geometry type of an empty layer (see
    :data:`SINGLE_PART_LAYERS`); nothing for a layer with features (GDAL takes the type from them)."""
    if not gdf.empty:
        return {}
    return {"geometry_type": "Polygon" if name in SINGLE_PART_LAYERS else "MultiPolygon"}


def write_metadata(con: sqlite3.Connection, metadata: Mapping[str, Any]) -> None:
    """A plain attribute table ``rams_metadata(key, value)``, registered as GeoPackage 'attributes'."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {METADATA_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
    con.execute(
        "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description) "
        "VALUES (?, 'attributes', ?, ?)",
        (METADATA_TABLE, METADATA_TABLE, "rams provenance: inputs, hashes, model, config, versions, times"),
    )
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        con.execute(f"INSERT OR REPLACE INTO {METADATA_TABLE} (key, value) VALUES (?, ?)", (key, text))


def read_metadata(path: Path) -> dict[str, str]:
    """The ``rams_metadata`` table of a GeoPackage as a dict (empty if absent)."""
    _check_exists(path)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute(f"SELECT key, value FROM {METADATA_TABLE}").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    return {str(k): str(v) for k, v in rows}


def write_styles(con: sqlite3.Connection, styles: Mapping[str, str]) -> None:
    """Default QGIS styles: QML text per layer in the ``layer_styles`` table QGIS reads on open."""
    con.execute(
        """CREATE TABLE IF NOT EXISTS layer_styles (
        id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT, f_table_schema TEXT, f_table_name TEXT,
        f_geometry_column TEXT, styleName TEXT, styleQML TEXT, styleSLD TEXT, useAsDefault BOOLEAN,
        description TEXT, owner TEXT, ui TEXT,
        update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"""
    )
    con.execute(
        "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, description) "
        "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS default styles')"
    )
    for layer, qml in styles.items():
        con.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
            "styleName, styleQML, styleSLD, useAsDefault, description, owner) "
            "VALUES ('', '', ?, 'geom', ?, ?, '', 1, 'rams default style', 'rams')",
            (layer, f"{layer} (rams)", qml),
        )

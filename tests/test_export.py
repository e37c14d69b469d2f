"""Exports: every format written, read back with pyogrio, and compared (geometry and attributes)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely import force_2d
from shapely.geometry import Polygon, box
from typer.testing import CliRunner

from rams.classes import CLASS_NAMES
from rams.cli.main import app
from rams.export import (
    IMSMA_CSV_COLUMNS,
    ExportConfig,
    export_layers,
    kml_fields,
    read_zipped_shapefile,
    shapefile_fields,
    split_holes,
)
from rams.layers import read_layer, write_gpkg
from rams.sha import reduce_files

UTM = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0
DECISION_LAYERS = ["detections", "hazard_polygons", "sha_reduction", "sha_proposed_remaining",
                   "sha_proposed_cancellation"]


def B(x0: float, y0: float, x1: float, y1: float) -> Polygon:  # noqa: N802
    return box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


@pytest.fixture(scope="module")
def decision(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decision GeoPackage from `rams reduce`: one detection inside a fully adequate SHA, so the proposed
    cancellation has a hole (the evidence), plus an unimaged strip."""
    d = tmp_path_factory.mktemp("export")
    dets = gpd.GeoDataFrame(
        {"det_id": ["det-000001", "det-000002"], "label": ["pmn", "tm62"], "score": [0.91, 0.55],
         "model": ["m1", "m1"], "tile_id": ["r0000c0000", "r0000c0001"], "length_m": [0.12, 0.32],
         "width_m": [0.12, 0.32], "lon": [45.0006, 45.0007], "lat": [39.7504, 39.7505]},
        geometry=[B(49.94, 49.94, 50.06, 50.06), B(300, 300, 300.32, 300.32)], crs=UTM,
    )
    quality = gpd.GeoDataFrame({"quality": ["adequate", "not_imaged"]}, geometry=[B(0, 0, 100, 80), B(0, 80, 100, 100)],
                               crs=UTM)
    result = d / "result.gpkg"
    write_gpkg(result, {"detections": dets, "coverage": gpd.GeoDataFrame(geometry=[B(0, 0, 100, 80)], crs=UTM),
                        "coverage_quality": quality},
               metadata={"detect.model": "m1", "score_threshold": 0.5,  # a detector validated for every class
                         "model_recall": {"score_threshold": 0.5, "per_class": dict.fromkeys(CLASS_NAMES, 0.97)}})
    sha = d / "sha.gpkg"
    write_gpkg(sha, {"sha": gpd.GeoDataFrame({"PolyID": ["SHA-1"], "name": ["Field by the road"]},
                                             geometry=[B(0, 0, 100, 100)], crs=UTM)})
    out = d / "decision.gpkg"
    reduce_files(result, sha, out)
    return out


def same_geometry(a: object, b: object, tol: float) -> bool:
    return bool(force_2d(a).hausdorff_distance(force_2d(b)) <= tol)  # type: ignore[arg-type]


def assert_attributes_equal(src: pd.DataFrame, back: pd.DataFrame, columns: dict[str, str] | None = None) -> None:
    columns = columns or {c: c for c in src.columns if c != "geometry"}
    for c, c2 in columns.items():
        a, b = src[c].reset_index(drop=True), back[c2].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(a):
            np.testing.assert_allclose(a.astype(float), pd.to_numeric(b).astype(float), rtol=1e-9, err_msg=c)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), c


def test_decision_fixture_has_a_hole(decision: Path) -> None:
    cancel = read_layer(decision, "sha_proposed_cancellation").geometry.iloc[0]
    assert len(cancel.geoms[0].interiors) == 1


@pytest.mark.parametrize("layer", DECISION_LAYERS)
def test_geojson_rfc7946(decision: Path, tmp_path: Path, layer: str) -> None:
    out = tmp_path / f"{layer}.geojson"
    export_layers(decision, "geojson", out, [layer])
    back = pyogrio.read_dataframe(out)
    src = read_layer(decision, layer).to_crs("EPSG:4326")
    assert back.crs.to_epsg() == 4326 and len(back) == len(src)
    for g1, g2 in zip(src.geometry, back.geometry, strict=True):
        assert same_geometry(g1, g2, 1.1e-7)  # RFC 7946: 7 decimals
    assert_attributes_equal(src, back)
    text = out.read_text()
    assert '"crs"' not in text  # RFC 7946 forbids a crs member


def test_geojson_several_layers_go_to_a_folder(decision: Path, tmp_path: Path) -> None:
    out = tmp_path / "geojson"
    rep = export_layers(decision, "geojson", out, ["hazard_polygons", "sha_proposed_remaining"])
    assert sorted(p.name for p in out.iterdir()) == ["hazard_polygons.geojson", "sha_proposed_remaining.geojson"]
    assert rep.layers["hazard_polygons"] == 2


def test_kml_all_layers_styled(decision: Path, tmp_path: Path) -> None:
    out = tmp_path / "field.kml"
    rep = export_layers(decision, "kml", out)
    layers = [str(n) for n, _ in pyogrio.list_layers(out)]
    assert set(DECISION_LAYERS) <= set(layers) and set(rep.layers) == set(layers)
    for layer in DECISION_LAYERS:
        src = read_layer(decision, layer).to_crs("EPSG:4326")
        back = pyogrio.read_dataframe(out, layer=layer)
        assert len(back) == len(src)
        for g1, g2 in zip(src.geometry, back.geometry, strict=True):
            assert same_geometry(g1, g2, 1e-9)
        assert_attributes_equal(src, back, kml_fields(list(src.columns)))
    assert "model_attr" in pyogrio.read_dataframe(out, layer="detections").columns
    haz = pyogrio.read_dataframe(out, layer="hazard_polygons")
    assert haz["Name"].tolist() == ["HP-0001", "HP-0002"]
    text = out.read_text()
    # KML colours are aabbggrr: SHA orange and cancellation green at 50 % (0x80) fill
    assert "8018a7f4" in text.lower() and "8000a838" in text.lower() and "800000ff" in text.lower()


def test_shapefile_zip_imsma_fields(decision: Path, tmp_path: Path) -> None:
    out = tmp_path / "imsma.zip"
    export_layers(decision, "shp", out)
    names = zipfile.ZipFile(out).namelist()
    assert "sha_proposed_cancellation.shp" in names and "detections_fields.csv" in names
    for layer in DECISION_LAYERS:
        back = read_zipped_shapefile(out, layer)
        assert back.crs.to_epsg() == 4326
        assert all(len(c) <= 10 for c in back.columns)
        src = read_layer(decision, layer)
        mapping = shapefile_fields([c for c in src.columns if c != "geometry"])
        if layer == "detections":
            assert back["PointType"].eq("Evidence Point").all() and back.geom_type.eq("Point").all()
            src = src.assign(geometry=src.geometry.centroid)
        src = src.to_crs("EPSG:4326")
        for g1, g2 in zip(src.geometry, back.geometry, strict=True):
            assert same_geometry(g1, g2, 1e-9)
        assert_attributes_equal(src, back, mapping)
    remaining = read_zipped_shapefile(out, "sha_proposed_remaining")
    assert {"PolyID", "SHA_ID", "Reason", "Area_m2", "Status"} <= set(remaining.columns)
    haz = read_zipped_shapefile(out, "hazard_polygons")
    assert {"PolyID", "EvidStatus", "NumItems", "n_pmn", "n_submunit", "DetIDs"} <= set(haz.columns)
    dets = read_zipped_shapefile(out, "detections")
    assert dets["PointID"].tolist() == ["det-000001", "det-000002"] and "ItemClass" in dets.columns


def test_csv_imsma_point_lists(decision: Path, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    export_layers(decision, "csv", out, ["sha_proposed_cancellation", "detections", "hazard_polygons"])
    opts = {"X_POSSIBLE_NAMES": "Xcoord", "Y_POSSIBLE_NAMES": "Y*", "KEEP_GEOM_COLUMNS": "YES"}
    canc = pyogrio.read_dataframe(out / "sha_proposed_cancellation.csv", **opts)
    assert list(canc.columns[:6]) == list(IMSMA_CSV_COLUMNS)
    assert canc.crs is None or canc.crs.to_epsg() == 4326
    # the cancellation polygon has a hole (the evidence): cut into hole-free pieces that cover it exactly
    src = read_layer(decision, "sha_proposed_cancellation").to_crs("EPSG:4326").geometry.iloc[0]
    assert canc["PolyID"].str.startswith("SHA-1-C-").all() and canc["PolyID"].nunique() >= 2
    pieces = []
    for _, grp in canc.groupby("PolyID"):
        grp = grp.sort_values("PointNo", key=lambda s: s.astype(int))
        ring = Polygon(list(zip(grp["Xcoord"].astype(float), grp["Ycoord"].astype(float), strict=True)))
        assert ring.is_valid and not ring.exterior.is_ccw  # clockwise turning points
        pieces.append(ring)
    rebuilt = gpd.GeoSeries(pieces, crs="EPSG:4326").union_all()
    assert same_geometry(rebuilt, src, 1.1e-7)  # 7 decimals
    assert rebuilt.symmetric_difference(src).area < 1e-3 * src.area
    hole = Polygon(src.geoms[0].interiors[0])
    assert rebuilt.intersection(hole).area < 1e-3 * hole.area  # the evidence stays out of the cancellation
    assert canc["PointType"].eq("Turning Point").all()
    assert canc["PointID"].iloc[0] == f"{canc['PolyID'].iloc[0]}-TP1"
    det = pyogrio.read_dataframe(out / "detections.csv", **opts)
    assert det["PointID"].tolist() == ["det-000001", "det-000002"]
    assert det["PolyID"].tolist() == ["HP-0001", "HP-0002"] or det["PolyID"].tolist() == ["HP-0002", "HP-0001"]
    dsrc = read_layer(decision, "detections")
    cent = dsrc.geometry.centroid.to_crs("EPSG:4326")
    np.testing.assert_allclose(det["Xcoord"].astype(float), cent.x, atol=1e-7)
    np.testing.assert_allclose(det["Ycoord"].astype(float), cent.y, atol=1e-7)
    assert det["PointType"].eq("Evidence Point").all()


def test_csv_point_types_follow_config(decision: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.csv"
    export_layers(decision, "csv", out, ["hazard_polygons"], ExportConfig(vertex_point_type="Perimeter Point"))
    rows = pyogrio.read_dataframe(out)
    assert rows["PointType"].eq("Perimeter Point").all() and rows["PointID"].iloc[0].endswith("-PP1")


def test_flatgeobuf_keeps_crs(decision: Path, tmp_path: Path) -> None:
    out = tmp_path / "fgb"
    export_layers(decision, "fgb", out, DECISION_LAYERS)
    for layer in DECISION_LAYERS:
        back = pyogrio.read_dataframe(out / f"{layer}.fgb")
        src = read_layer(decision, layer)
        assert back.crs.to_epsg() == 32638 and len(back) == len(src)
        key = next(c for c in ("det_id", "poly_id", "sha_id") if c in src.columns)
        # FlatGeobuf's spatial index stores features in Hilbert order: compare by ID
        src, back = src.sort_values(key).reset_index(drop=True), back.sort_values(key).reset_index(drop=True)
        for g1, g2 in zip(src.geometry, back.geometry, strict=True):
            assert g1.equals_exact(g2, 1e-9)
        assert_attributes_equal(src, back)


def test_split_holes_covers_exactly() -> None:
    outer = box(0, 0, 10, 10)
    poly = outer.difference(box(2, 2, 3, 3)).difference(box(6, 5, 8, 9))
    pieces = split_holes(poly)
    assert len(pieces) >= 3 and all(not p.interiors for p in pieces)
    assert sum(p.area for p in pieces) == pytest.approx(poly.area)
    assert gpd.GeoSeries(pieces).union_all().symmetric_difference(poly).area == pytest.approx(0, abs=1e-9)


def test_shapefile_fields_unique_and_short() -> None:
    m = shapefile_fields(["poly_id", "evidence_status", "n_submunition", "n_submunition_x", "very_long_name"])
    assert m["poly_id"] == "PolyID" and m["evidence_status"] == "EvidStatus"
    assert all(len(v) <= 10 for v in m.values()) and len({v.lower() for v in m.values()}) == len(m)


def test_cli_export_and_errors(decision: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "c.geojson"
    r = runner.invoke(app, ["export", str(decision), "--format", "geojson", "--layer", "sha_proposed_cancellation",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "sha_proposed_cancellation (1)" in r.stdout and out.exists()
    r = runner.invoke(app, ["export", str(decision), "--format", "geojson", "--layer", "sha_proposed_cancellation",
                            "--out", str(out)])
    assert r.exit_code == 12 and "--overwrite" in r.output
    r = runner.invoke(app, ["export", str(decision), "--format", "gml", "--out", str(tmp_path / "x.gml")])
    assert r.exit_code == 16 and "unknown export format 'gml'" in r.output
    r = runner.invoke(app, ["export", str(decision), "--format", "kml", "--layer", "nope", "--out",
                            str(tmp_path / "x.kml")])
    assert r.exit_code == 13 and "no layer(s) ['nope']" in r.output
    r = runner.invoke(app, ["export", str(decision), "--format", "csv", "--layer", "rams_metadata", "--out",
                            str(tmp_path / "m.csv")])
    assert r.exit_code == 13 and "no geometry" in r.output
    r = runner.invoke(app, ["export", str(tmp_path / "missing.gpkg"), "--format", "kml", "--out",
                            str(tmp_path / "x.kml")])
    assert r.exit_code == 3 and "not found" in r.output
    assert not (tmp_path / "x.kml").exists() and not (tmp_path / "m.csv").exists()


def test_invalid_after_reprojection_is_repaired_for_kml(tmp_path: Path) -> None:
    """GDAL's KML writer rejects self-intersecting rings; exports repair geometry after reprojection."""
    bowtie = Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    gpkg = tmp_path / "b.gpkg"
    write_gpkg(gpkg, {"sha_proposed_remaining": gpd.GeoDataFrame(
        {"poly_id": ["X-R1"], "reason": ["not imaged"]}, geometry=[bowtie], crs=UTM)})
    out = tmp_path / "b.kml"
    export_layers(gpkg, "kml", out)
    back = pyogrio.read_dataframe(out)
    assert back.geometry.iloc[0].is_valid
    assert back.to_crs(UTM).area.iloc[0] == pytest.approx(50.0, rel=1e-3)  # both triangles kept


def test_out_name_must_fit_the_format(decision: Path, tmp_path: Path) -> None:
    from rams.errors import InputError

    with pytest.raises(InputError, match=r"must end in \.zip"):
        export_layers(decision, "shp", tmp_path / "x.shp")
    with pytest.raises(InputError, match="go to a folder"):
        export_layers(decision, "geojson", tmp_path / "x.geojson", ["hazard_polygons", "detections"])
    with pytest.raises(InputError, match=r"must end in \.fgb"):
        export_layers(decision, "fgb", tmp_path / "x", ["hazard_polygons"])


def sym_colour_of_other(root: object) -> str:
    """Fill colour of the catch-all ("") category of a categorized QML."""
    cats = {c.get("value"): c.get("symbol") for c in root.iter("category")}  # type: ignore[attr-defined]
    syms = {s.get("name"): s for s in root.iter("symbol")}  # type: ignore[attr-defined]
    opts = [o.get("value", "") for o in syms[cats[""]].iter("Option") if o.get("name") == "color"]
    return opts[0]


def test_qml_styles_parse_and_follow_land_release_colours() -> None:
    import xml.etree.ElementTree as ET

    from rams.styles import QUALITY_CLASSES, REMAINING_REASONS, SHA_SYMBOL, default_styles, ogr_style

    styles = default_styles(["sha_reduction", "sha_proposed_remaining", "sha_proposed_cancellation",
                             "hazard_polygons", "coverage_quality", "detections", "unknown_layer"])
    assert "unknown_layer" not in styles

    def colours(root: ET.Element) -> list[str]:
        return [o.get("value", "") for o in root.iter("Option") if o.get("name") == "color"]

    sha = ET.fromstring(styles["sha_reduction"])
    assert sha.find("renderer-v2").get("type") == "singleSymbol"  # type: ignore[union-attr]
    assert colours(sha) == ["244,167,24,128"]
    assert colours(ET.fromstring(styles["hazard_polygons"])) == ["255,0,0,128"]
    rem = ET.fromstring(styles["sha_proposed_remaining"])
    r = rem.find("renderer-v2")
    assert r is not None and r.get("type") == "categorizedSymbol" and r.get("attr") == "reason"
    cats = {c.get("value"): c.get("symbol") for c in rem.iter("category")}
    assert set(cats) == set(REMAINING_REASONS) | {""}  # "": QGIS's "all other values" category
    assert sym_colour_of_other(rem) == "244,167,24,128"  # an unforeseen reason is still drawn as SHA
    sym_colour = {s.get("name"): colours(s)[0] for s in rem.iter("symbol")}
    assert sym_colour[cats["evidence"]] == "255,0,0,128" and sym_colour[cats["not imaged"]] == "244,167,24,128"
    q = ET.fromstring(styles["coverage_quality"])
    assert {c.get("value") for c in q.iter("category")} == set(QUALITY_CLASSES)
    assert ogr_style(SHA_SYMBOL) == "BRUSH(fc:#F4A71880);PEN(c:#F4A718FF,w:2px)"


def test_chunked_layer_writer_appends_and_writes_an_empty_layer(tmp_path: Path) -> None:
    """Chunks append to one layer (a same-named layer in an existing file is replaced by the first chunk); a layer
    that never got a row is still written, with its columns and declared geometry type."""
    import sqlite3

    from rams.layers import GPKG_VERSION, ChunkedLayerWriter

    def chunk(start: int, n: int) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame({"cell_id": [f"c{i}" for i in range(start, start + n)], "v": np.arange(n, dtype=float)},
                                geometry=[box(i, 0, i + 1, 1) for i in range(start, start + n)], crs="EPSG:32638")

    path = tmp_path / "a.gpkg"
    w = ChunkedLayerWriter(path, "coverage_quality", new_file=True)
    for start, n in ((0, 3), (3, 0), (3, 2)):
        w.write(chunk(start, n))
    w.finish(chunk(0, 0))
    got = read_layer(path, "coverage_quality")
    assert list(got.cell_id) == [f"c{i}" for i in range(5)] and w.rows == 5 and w.chunks == 2
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # 'GPKG'
    major, minor = (int(v) for v in GPKG_VERSION.split("."))
    assert con.execute("PRAGMA user_version").fetchone()[0] == major * 10000 + minor * 100  # 1.2 -> 10200
    con.close()
    # into an existing file: the old same-named layer is replaced, other layers kept
    w2 = ChunkedLayerWriter(path, "coverage_quality", new_file=False)
    w2.write(chunk(10, 1))
    w2.finish(chunk(0, 0))
    assert list(read_layer(path, "coverage_quality").cell_id) == ["c10"]
    empty = tmp_path / "e.gpkg"
    w3 = ChunkedLayerWriter(empty, "coverage_quality", new_file=True)
    w3.write(chunk(0, 0))
    w3.finish(chunk(0, 0))
    info = pyogrio.read_info(empty, layer="coverage_quality")
    assert info["features"] == 0 and info["geometry_type"] == "MultiPolygon" and "cell_id" in list(info["fields"])


def _rams_with_file_size_limit(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess[str]:
    """Run the `rams` CLI in a child process that may write no file past ``limit_bytes`` (RLIMIT_FSIZE, SIGXFSZ
    ignored, so writes fail with EFBIG as on a full disk or a FAT32 stick): a real write failure, no root needed."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        "from rams.cli.main import app\n"
        f"app({args!r}, prog_name='rams')\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fmt", ["kml", "geojson", "fgb"])
def test_a_failed_write_is_an_error_never_a_short_file(tmp_path: Path, fmt: str) -> None:
    """When the disk cannot take the file, export says so (exit 12, the file, the likely cause) and leaves nothing:
    GDAL's KML driver writes at close without reporting a failure, and rams said "exported 200" over a truncated
    8 KB file before every layer was read back."""
    src = tmp_path / "many.gpkg"
    polys = [B(i % 20, i // 20, i % 20 + 0.5, i // 20 + 0.5) for i in range(200)]
    write_gpkg(src, {"coverage_quality": gpd.GeoDataFrame({"quality": ["adequate"] * 200}, geometry=polys, crs=UTM)})
    out = tmp_path / f"many.{fmt}"
    ok = _rams_with_file_size_limit(["export", str(src), "-f", fmt, "-o", str(out)], 10**9)
    assert ok.returncode == 0, ok.stderr
    assert pyogrio.read_info(out, force_feature_count=True)["features"] == 200
    out.unlink()
    r = _rams_with_file_size_limit(["export", str(src), "-f", fmt, "-o", str(out)], 8192)
    assert r.returncode == 12, (r.returncode, r.stdout, r.stderr)
    assert f"{out}: could not write layer coverage_quality" in r.stderr and "disk" in r.stderr
    assert "internal error" not in r.stderr and "exported" not in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.gpkg"]  # no output, no temporary file


def test_a_full_disk_or_a_too_large_file_under_detect_is_a_one_line_output_error(make_geotiff, tmp_path: Path) -> None:
    """Writing the checkpoint or result fails (EFBIG here, as on a FAT32 stick; ENOSPC reads the same): exit 12 with
    the fix, not an internal error, and no result file."""
    ortho = make_geotiff(height=600, width=600, seed=3)
    out = tmp_path / "r.gpkg"
    r = _rams_with_file_size_limit(["detect", str(ortho), "--out", str(out)], 20000)
    assert r.returncode == 12, (r.returncode, r.stderr[-2000:])
    assert "could not write" in r.stderr and "ulimit -f" in r.stderr and "internal error" not in r.stderr
    assert not out.exists()
    # every tile was done (the checkpoint is small); the error says how to write the result without rerunning
    assert (tmp_path / "r.gpkg.partial").is_dir() and "rerun with --resume" in " ".join(r.stderr.split())
    ok = _rams_with_file_size_limit(["detect", str(ortho), "--out", str(out), "--resume"], 10**9)
    assert ok.returncode == 0 and out.exists() and "1 from checkpoint" in ok.stdout, ok.stdout + ok.stderr

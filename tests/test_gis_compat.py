"""What GIS software sees in rams GeoPackages: declared geometry types of empty layers, the GeoPackage version
older QGIS/ArcGIS builds read without warnings, conformant style timestamps, and (where PyQGIS is installed)
the default styles as QGIS itself loads them."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from shapely.geometry import box

from rams.detect import DetectConfig, run_detect
from rams.layers import write_gpkg
from rams.styles import default_styles

UTM = "EPSG:32638"


def test_empty_layers_keep_a_polygon_type_and_the_file_is_gpkg_1_2(tmp_path: Path) -> None:
    empty = gpd.GeoDataFrame({"label": np.array([], dtype=object)}, geometry=gpd.GeoSeries([], crs=UTM))
    cov = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=UTM)
    out = write_gpkg(tmp_path / "r.gpkg", {"detections": empty, "hazard_polygons": empty, "coverage": cov},
                     metadata={"k": "v"}, styles=default_styles(["detections", "coverage"]))
    types = dict(pyogrio.list_layers(out))
    # GDAL alone would declare "Unknown" for the empty ones; QGIS then opens them without any style
    assert types["detections"] == "Polygon" and types["hazard_polygons"] == "MultiPolygon"
    assert types["coverage"] == "Polygon"
    con = sqlite3.connect(out)
    try:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert con.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # 'GPKG'
        times = [t for (t,) in con.execute("SELECT update_time FROM layer_styles")]
    finally:
        con.close()
    assert len(times) == 2
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", t) for t in times), times


def _qgis_python() -> str | None:
    """A Python that can import PyQGIS (``RAMS_QGIS_PYTHON`` or the system one), else None."""
    for py in (os.environ.get("RAMS_QGIS_PYTHON"), "/usr/bin/python3"):
        if py and Path(py).exists():
            ok = subprocess.run([py, "-c", "import qgis.core"], capture_output=True, timeout=60).returncode == 0
            if ok:
                return py
    return None


QGIS_PROBE = r"""
import json, os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from qgis.core import QgsApplication, QgsVectorLayer, QgsWkbTypes
app = QgsApplication([], False)
app.initQgis()
out = {}
for name in sys.argv[2].split(","):
    lyr = QgsVectorLayer(f"{sys.argv[1]}|layername={name}", name, "ogr")
    r = lyr.renderer()
    info = {"valid": lyr.isValid(), "geometry": QgsWkbTypes.geometryDisplayString(lyr.geometryType()),
            "renderer": r.type() if r else None, "style": lyr.styleManager().currentStyle()}
    if r is not None and r.type() == "singleSymbol":
        sl = r.symbol().symbolLayer(0)
        info["fill"] = sl.color().name(); info["fill_alpha"] = sl.color().alpha()
        info["outline"] = sl.strokeColor().name(); info["brush"] = int(sl.brushStyle())
        info["symbol_layers"] = r.symbol().symbolLayerCount()
    if r is not None and r.type() == "categorizedSymbol":
        from qgis.core import QgsRenderContext
        ctx = QgsRenderContext()
        r.startRender(ctx, lyr.fields())
        info["drawn"] = {str(f[r.classAttribute()]): r.symbolForFeature(f, ctx) is not None
                         for f in lyr.getFeatures()}
        r.stopRender(ctx)
    out[name] = info
print(json.dumps(out), flush=True)
os._exit(0)  # QgsApplication.exitQgis() can crash at interpreter exit in headless runs
"""


def test_qgis_opens_a_detect_result_with_the_rams_styles(make_geotiff, tmp_path: Path) -> None:
    """The detect result as QGIS loads it: both layers valid polygon layers with rams' default styles (red
    footprints with centroid markers; the analysed ground as a blue outline without fill), also when nothing
    was detected."""
    py = _qgis_python()
    if py is None:
        pytest.skip("PyQGIS not installed (apt install python3-qgis, or set RAMS_QGIS_PYTHON): QGIS check not run")
    from rams.detector.bundle import make_test_bundle

    make_test_bundle(tmp_path / "tiny", tile_size_px=256, threshold=0.3)
    ortho = make_geotiff(height=400, width=400, gsd=0.01, alpha=True, seed=5)
    results = {}
    for name, thr in (("some", 0.3), ("none", 0.999)):
        out = tmp_path / f"{name}.gpkg"
        s = run_detect(ortho, out, DetectConfig(model=str(tmp_path / "tiny"), threads=1, tile_size_px=256,
                                                threshold=thr))
        results[name] = s.detections
        probe = subprocess.run([py, "-c", QGIS_PROBE, str(out), "detections,coverage"], capture_output=True,
                               text=True, timeout=120)
        assert probe.returncode == 0, probe.stderr[-2000:]
        got = json.loads(probe.stdout.strip().splitlines()[-1])
        det, cov = got["detections"], got["coverage"]
        assert det["valid"] and det["geometry"] == "Polygon" and det["renderer"] == "singleSymbol", (name, det)
        assert det["fill"] == "#ff0000" and det["symbol_layers"] == 2, det  # fill + centroid marker
        assert cov["valid"] and cov["geometry"] == "Polygon" and cov["renderer"] == "singleSymbol", cov
        assert cov["outline"] == "#0070c0" and cov["brush"] == 0, cov  # Qt.NoBrush: only the outline
    assert results["some"] > 0 and results["none"] == 0  # both cases really ran


def test_qgis_draws_every_remaining_reason(tmp_path: Path) -> None:
    """Each piece of a proposed remaining area gets a symbol in QGIS, including reasons the style does not list
    (its catch-all category): nothing the reduction keeps may render invisible."""
    py = _qgis_python()
    if py is None:
        pytest.skip("PyQGIS not installed (apt install python3-qgis, or set RAMS_QGIS_PYTHON): QGIS check not run")
    from rams.styles import REMAINING_REASONS

    reasons = [*REMAINING_REASONS, "a reason added later"]
    rem = gpd.GeoDataFrame({"reason": reasons}, geometry=[box(i, 0, i + 1, 1) for i in range(len(reasons))], crs=UTM)
    out = write_gpkg(tmp_path / "s.gpkg", {"sha_proposed_remaining": rem},
                     styles=default_styles(["sha_proposed_remaining"]))
    probe = subprocess.run([py, "-c", QGIS_PROBE, str(out), "sha_proposed_remaining"], capture_output=True,
                           text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    got = json.loads(probe.stdout.strip().splitlines()[-1])["sha_proposed_remaining"]
    assert got["renderer"] == "categorizedSymbol"
    assert got["drawn"] == {r: True for r in reasons}

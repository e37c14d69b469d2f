"""scripts/false_alarm_sources.py: each false alarm put under what lies beneath it."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
from shapely.geometry import Point, box

from rams.detector.bundle import make_test_bundle
from tests.script_helpers import load_script

X0, Y0 = 500000.0, 4420000.0
CRS = "EPSG:32633"


def _scene(folder: Path, det_name: str) -> None:
    """A 4 x 4 m scene: two PMN and a TM-62, a small leaf inside a big shadow, a stone; detections on each."""
    folder.mkdir(parents=True)
    gpd.GeoDataFrame({"class": ["pmn", "tm62", "pmn"], "length_m": [0.12, 0.32, 0.12]},
                     geometry=[Point(X0 + 1, Y0 - 1).buffer(0.06), Point(X0 + 3, Y0 - 1).buffer(0.16),
                               Point(X0 + 1, Y0 - 2).buffer(0.06)],
                     crs=CRS).to_file(folder / "truth.gpkg", layer="truth")  # fmt: skip
    gpd.GeoDataFrame({"kind": ["shadow", "leaf", "stone"], "length_m": [1.0, 0.1, 0.1], "width_m": [0.5, 0.05, 0.1]},
                     geometry=[box(X0 + 0.5, Y0 - 3.5, X0 + 1.5, Y0 - 2.5), Point(X0 + 1, Y0 - 3).buffer(0.04),
                               Point(X0 + 3, Y0 - 3).buffer(0.05)],
                     crs=CRS).to_file(folder / "truth.gpkg", layer="confusers")  # fmt: skip
    dets = gpd.GeoDataFrame(
        {"label": ["pmn", "pmn", "tm62", "pmn", "tm62", "pmn", "pmn", "pmn"],
         "score": [0.9, 0.8, 0.7, 0.6, 0.9, 0.6, 0.6, 0.3]},
        geometry=[Point(X0 + 1, Y0 - 1).buffer(0.05),        # finds the PMN
                  Point(X0 + 1.01, Y0 - 1).buffer(0.05),     # a second PMN on it: duplicate
                  Point(X0 + 0.99, Y0 - 2).buffer(0.05),     # TM-62 on the second PMN: wrong class
                  Point(X0 + 1.01, Y0 - 3).buffer(0.05),     # on the leaf (inside the shadow): leaf
                  Point(X0 + 3, Y0 - 1).buffer(0.15),        # finds the TM-62
                  Point(X0 + 3.02, Y0 - 3).buffer(0.05),     # on the stone
                  Point(X0 + 2, Y0 - 2).buffer(0.05),        # on nothing: ground
                  Point(X0 + 2.5, Y0 - 2).buffer(0.05)],     # below the PMN threshold: not kept
        crs=CRS,
    )  # fmt: skip
    dets.to_file(folder / det_name, layer="detections")
    gpd.GeoDataFrame(geometry=[box(X0, Y0 - 4, X0 + 4, Y0)], crs=CRS).to_file(folder / det_name, layer="coverage")


def test_each_false_alarm_gets_its_source(tmp_path: Path) -> None:
    mod = load_script("false_alarm_sources")
    bundle = make_test_bundle(tmp_path / "m", classes=("pmn", "tm62"), threshold=0.5)
    det_name = f"det-{bundle.card.name}-{bundle.card.weights_sha256[:8]}.gpkg"
    folder = tmp_path / "scenes" / "s9001-ploughed-0.01"
    _scene(folder, det_name)
    pairs, area = mod.scene_sources(folder, folder / det_name, bundle.card.thresholds(), 0.03)
    assert sorted(pairs) == sorted([("pmn", "duplicate"), ("tm62", "wrong_class"), ("pmn", "leaf"),
                                    ("pmn", "stone"), ("pmn", "ground")])  # fmt: skip
    assert area == 16.0
    # the CLI: a lower PMN threshold adds the 0.3 detection (on ground); a JSON table per label
    out = tmp_path / "fa.json"
    args = ["--model", str(tmp_path / "m"), "--scenes-dir", str(tmp_path / "scenes"), "--seeds", "9001"]
    assert mod.main([*args, "--threshold", "pmn=0.2", "--json", str(out)]) == 0
    table = json.loads(out.read_text())["false_alarms"]
    assert table == {"pmn": {"duplicate": 1, "leaf": 1, "stone": 1, "ground": 2}, "tm62": {"wrong_class": 1}}
    assert mod.main([*args, "--threshold", "mon=0.2"]) == 2  # not a class of the model
    assert mod.main([*args[:-1], "9002"]) == 3  # no such scene

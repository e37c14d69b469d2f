"""scripts/recall_by_contrast.py: local contrast of truth items and class-aware recall by contrast bin."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import box

from rams.detector.bundle import make_test_bundle
from tests.script_helpers import load_script

GSD = 0.01
X0, Y0 = 500000.0, 4420000.0


def _scene(folder: Path, det_name: str) -> None:
    """A 200 x 200 px noisy grey field: a bright PMN (found), a PMN painted in the ground colour (missed), a TM-62
    found with the wrong class (missed, class-aware)."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(100, 8, (3, 200, 200)), 0, 255)
    img[:, 40:52, 40:52] = 200  # bright PMN, rows/cols 40-52
    folder.mkdir(parents=True)
    tr = from_origin(X0, Y0, GSD, GSD)
    with rasterio.open(folder / "ortho.tif", "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=tr) as dst:  # fmt: skip
        dst.write(img.astype(np.uint8))

    def cell(r: int, c: int, n: int) -> object:
        return box(X0 + c * GSD, Y0 - (r + n) * GSD, X0 + (c + n) * GSD, Y0 - r * GSD)

    truth = gpd.GeoDataFrame(
        {"class": ["pmn", "pmn", "tm62"], "length_m": [0.12, 0.12, 0.32]},
        geometry=[cell(40, 40, 12), cell(140, 140, 12), cell(60, 120, 32)], crs="EPSG:32633",
    )  # fmt: skip
    truth.to_file(folder / "truth.gpkg", layer="truth")
    dets = gpd.GeoDataFrame(
        {"label": ["pmn", "pmn", "pmn"], "score": [0.9, 0.2, 0.95]},
        geometry=[cell(41, 41, 10), cell(140, 140, 12), cell(66, 126, 20)], crs="EPSG:32633",
    )  # fmt: skip
    dets.to_file(folder / det_name, layer="detections")


def test_contrast_and_recall_per_bin(tmp_path: Path) -> None:
    mod = load_script("recall_by_contrast")
    bundle = make_test_bundle(tmp_path / "m", classes=("pmn", "tm62"), threshold=0.5)
    card = bundle.card
    _scene(tmp_path / "scenes" / "s9001-ploughed-0.01", f"det-{card.name}-{card.weights_sha256[:8]}.gpkg")
    items = mod.scene_items(
        tmp_path / "scenes" / "s9001-ploughed-0.01",
        tmp_path / "scenes" / "s9001-ploughed-0.01" / f"det-{card.name}-{card.weights_sha256[:8]}.gpkg",
        card.thresholds(), 8.0, GSD,
    )  # fmt: skip
    (c1, k1, f1), (c2, k2, f2), (c3, _k3, f3) = items
    assert (c1, f1) == ("pmn", True) and k1 > 5  # 100 grey levels above ground of std 8
    assert (c2, f2) == ("pmn", False) and k2 < 0.5  # the 0.2 detection is under the 0.5 threshold
    assert (c3, f3) == ("tm62", False)  # called pmn: class-aware miss
    out = tmp_path / "r.json"
    rc = mod.main(["--model", str(tmp_path / "m"), "--scenes-dir", str(tmp_path / "scenes"), "--seeds", "9001",
                   "--json", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())["bins"]
    pmn = {tuple(r["contrast"]): (r["items"], r["recall"]) for r in res["pmn"]}
    assert pmn[(0.0, 0.5)] == (1, 0.0) and pmn[(5.0, float("inf"))] == (1, 1.0)
    assert sum(r["items"] for r in res["all"]) == 3
    assert mod.main(["--model", str(tmp_path / "m"), "--scenes-dir", str(tmp_path / "scenes"), "--seeds", "9002"]) == 3


@pytest.mark.parametrize(("text", "want"), [("9001-9003", [9001, 9002, 9003]), ("1,5-6", [1, 5, 6])])
def test_parse_seeds(text: str, want: list[int]) -> None:
    assert load_script("recall_by_contrast").parse_seeds(text) == want

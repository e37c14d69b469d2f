"""Candidate hazard polygons: clustering per class, buffers, attributes, review status, CLI."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, box
from typer.testing import CliRunner

from rams.cli.main import app
from rams.config import load_config
from rams.errors import ConfigError, VectorInputError
from rams.layers import read_layer, write_gpkg
from rams.polygons import PolygonsConfig, build_hazard_polygons, single_linkage

UTM = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0


def dets(items: Sequence[tuple[str, str, float, float, float]], crs: str = UTM, **extra: list) -> gpd.GeoDataFrame:
    """Detections as 10 x 10 cm footprints centred at (x, y) metres from the origin."""
    geoms = [box(X0 + x - 0.05, Y0 + y - 0.05, X0 + x + 0.05, Y0 + y + 0.05) for _, _, _, x, y in items]
    data = {
        "det_id": [i[0] for i in items],
        "label": [i[1] for i in items],
        "score": [i[2] for i in items],
        "model": ["test"] * len(items),
        "tile_id": ["r0000c0000"] * len(items),
        "length_m": [0.1] * len(items),
        "width_m": [0.1] * len(items),
        "lon": [0.0] * len(items),
        "lat": [0.0] * len(items),
        **extra,
    }
    return gpd.GeoDataFrame(data, geometry=geoms, crs=UTM).to_crs(crs)


def cfg(**kw: object) -> PolygonsConfig:
    base: dict[str, object] = {"georef_error_m": 1.0, "safety_distance_m": {"pmn": 4.0, "shell": 9.0},
                               "cluster_distance_m": {"pmn": 10.0, "shell": 5.0}}
    base.update(kw)
    return PolygonsConfig.model_validate(base)


def test_single_linkage_chains_within_distance() -> None:
    xy = np.array([[0, 0], [8, 0], [16, 0], [40, 0]], float)
    lab = single_linkage(xy, 10.0)
    assert lab[0] == lab[1] == lab[2] and lab[3] != lab[0]
    assert len(set(single_linkage(xy, 5.0))) == 4


def test_single_detection_makes_a_buffered_polygon() -> None:
    layer = build_hazard_polygons(dets([("d1", "pmn", 0.8, 10, 10)]), cfg())
    assert len(layer) == 1
    row = layer.iloc[0]
    assert row.poly_id == "HP-0001" and row.n_items == 1 and row.n_pmn == 1
    assert row.evidence_status == "candidate" and row.det_ids == "d1"
    # hull = the 10 cm square, buffered by 4 m safety + 1 m georef error: a rounded square of radius 5 m
    expected = 0.01 + 4 * 0.1 * 5 + math.pi * 25
    assert row.area_m2 == pytest.approx(expected, rel=2e-3)
    assert row.buffer_m == 5.0
    c = layer.geometry.iloc[0].centroid
    assert (c.x - X0, c.y - Y0) == pytest.approx((10, 10), abs=1e-6)


def test_clusters_per_class_and_attributes() -> None:
    items = [
        ("a", "pmn", 0.9, 0, 0), ("b", "pmn", 0.5, 9, 0), ("c", "pmn", 0.7, 18, 0),  # one chain (10 m link)
        ("d", "pmn", 0.6, 100, 0),  # isolated
        ("e", "shell", 0.4, 300, 0), ("f", "shell", 0.8, 306, 0),  # 6 m apart > 5 m link: two clusters...
    ]
    layer = build_hazard_polygons(dets(items), cfg(merge_overlapping=False))
    assert len(layer) == 4
    chain = layer[layer.det_ids == "a,b,c"].iloc[0]
    assert chain.n_items == 3 and chain.score_max == pytest.approx(0.9) and chain.score_mean == pytest.approx(0.7)
    # hull of the three footprints is 18.1 x 0.1 m; buffered by 5 m
    assert chain.area_m2 == pytest.approx(18.1 * 0.1 + 2 * 5 * (18.1 + 0.1) + math.pi * 25, rel=2e-3)
    # ...which overlap once buffered by 10 m: merged when merge_overlapping
    merged = build_hazard_polygons(dets(items), cfg())
    assert len(merged) == 3
    shells = merged[merged.n_shell == 2].iloc[0]
    assert shells.det_ids == "e,f" and shells.classes == "shell" and shells.n_pmn == 0


def test_overlapping_classes_merge_with_counts_by_class() -> None:
    items = [("a", "pmn", 0.9, 0, 0), ("b", "shell", 0.6, 7, 0)]
    layer = build_hazard_polygons(dets(items), cfg())
    assert len(layer) == 1
    row = layer.iloc[0]
    assert (row.n_pmn, row.n_shell, row.n_items) == (1, 1, 2)
    assert row.classes == "pmn,shell" and row.buffer_m == 10.0
    union = Point(X0, Y0).buffer(5).union(Point(X0 + 7, Y0).buffer(10))
    assert layer.geometry.iloc[0].symmetric_difference(union).area < 0.02 * union.area


def test_review_confirms_and_rejects() -> None:
    items = [("a", "pmn", 0.9, 0, 0), ("b", "pmn", 0.5, 5, 0), ("c", "pmn", 0.7, 200, 0)]
    d = dets(items, review=["Confirmed", None, "rejected"])
    layer = build_hazard_polygons(d, cfg())
    assert len(layer) == 1
    assert layer.iloc[0].evidence_status == "confirmed" and layer.iloc[0].n_confirm == 1
    kept = build_hazard_polygons(d, cfg(drop_rejected=False))
    assert len(kept) == 2 and set(kept.evidence_status) == {"confirmed", "candidate"}


def test_geographic_detections_are_clustered_in_metres_and_returned_in_their_crs() -> None:
    items = [("a", "pmn", 0.9, 0, 0), ("b", "pmn", 0.5, 9, 0)]
    layer = build_hazard_polygons(dets(items, crs="EPSG:4326"), cfg())
    assert layer.crs.to_epsg() == 4326 and len(layer) == 1
    assert layer.iloc[0].area_m2 == pytest.approx(9.1 * 0.1 + 2 * 5 * 9.2 + math.pi * 25, rel=5e-3)


def test_empty_and_missing_columns() -> None:
    empty = build_hazard_polygons(dets([]), cfg())
    assert empty.empty and "evidence_status" in empty.columns
    with pytest.raises(VectorInputError, match="lack column"):
        build_hazard_polygons(dets([("a", "pmn", 0.9, 0, 0)]).drop(columns=["score"]), cfg())


def test_config_rejects_unknown_class(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("polygons:\n  safety_distance_m:\n    pmnn: 3\n")
    from rams.sha import DecisionsConfig

    with pytest.raises(ConfigError, match="pmnn"):
        load_config(DecisionsConfig, y)


def test_cli_polygons_writes_new_file(tmp_path: Path) -> None:
    result = tmp_path / "result.gpkg"
    write_gpkg(result, {"detections": dets([("a", "pmn", 0.9, 0, 0), ("b", "pmn", 0.5, 9, 0)])},
               metadata={"detect.model": "m"})
    out = tmp_path / "poly.gpkg"
    r = CliRunner().invoke(app, ["polygons", str(result), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "1 candidate hazard polygon" in r.output
    layer = read_layer(out, "hazard_polygons")
    assert len(layer) == 1 and layer.iloc[0].det_ids == "a,b"
    assert len(read_layer(out, "detections")) == 2  # the copy keeps the result's layers
    r2 = CliRunner().invoke(app, ["polygons", str(result), "--out", str(out)])
    assert r2.exit_code == 12 and "already exists" in r2.output


def test_cli_polygons_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["polygons", str(tmp_path / "nope.gpkg"), "--out", str(tmp_path / "o.gpkg")])
    assert r.exit_code == 3 and "not found" in r.output
    other = tmp_path / "other.gpkg"
    write_gpkg(other, {"coverage": gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=UTM)})
    r = runner.invoke(app, ["polygons", str(other), "--out", str(tmp_path / "o.gpkg")])
    assert r.exit_code == 13 and "no layer 'detections'" in r.output
    assert not (tmp_path / "o.gpkg").exists()


def test_metric_crs_is_true_to_scale_where_the_features_are() -> None:
    """Buffers are metres on the ground: a CRS in metres that is not true to scale there (World Mercator at 40 N:
    1.3x) is replaced by the features' UTM zone; UTM itself is kept."""
    import geopandas as gpd
    from shapely.geometry import Point

    from rams.polygons import metric_crs

    utm = gpd.GeoSeries([Point(500000, 4400000)], crs="EPSG:32638")
    assert metric_crs("EPSG:32638", utm).to_epsg() == 32638
    for merc in ("EPSG:3395", "EPSG:3857"):
        assert metric_crs(merc, utm.to_crs(merc)).to_epsg() == 32638

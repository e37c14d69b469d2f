"""`rams evaluate --errors`: class-aware false alarms and missed items as layers, and their use as the hard
negatives of an `ortho` training source."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from rams.cli.main import app
from rams.detector.datasets import OrthoSource, OrthoSourceConfig, SourceContext
from rams.evaluate import evaluate
from rams.layers import list_layers, read_metadata, write_gpkg

CRS = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0


def _sq(cx: float, cy: float, half: float) -> object:
    return box(X0 + cx - half, Y0 - cy - half, X0 + cx + half, Y0 - cy + half)


def _layers() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Items (x, y in metres from the corner): pmn A (found), tm62 B (called pmn), pmn C (missed)."""
    truth = gpd.GeoDataFrame(
        {"class": ["pmn", "tm62", "pmn"]},
        geometry=[_sq(0.5, 0.5, 0.06), _sq(1.5, 0.5, 0.16), _sq(0.5, 1.5, 0.06)], crs=CRS,
    )  # fmt: skip
    pred = gpd.GeoDataFrame(
        {"label": ["pmn", "pmn", "pmn", "shell"], "score": [0.9, 0.6, 0.8, 0.7]},
        geometry=[
            _sq(0.5, 0.5, 0.05),  # finds A
            _sq(0.52, 0.5, 0.05),  # A again: duplicate
            _sq(1.5, 0.5, 0.1),  # on B with the wrong class
            _sq(1.5, 1.5, 0.1),  # on bare ground
        ],
        crs=CRS,
    )
    return truth, pred


def test_error_layers_say_what_went_wrong() -> None:
    truth, pred = _layers()
    rep = evaluate(pred, truth, area_m2=4.0)
    fa = rep.false_alarms.sort_values("score", ascending=False).reset_index(drop=True)
    assert fa[["label", "error", "item_class"]].values.tolist() == [
        ["pmn", "wrong_class", "tm62"], ["shell", "no_item", ""], ["pmn", "duplicate", ""],
    ]  # fmt: skip
    assert fa.score.tolist() == pytest.approx([0.8, 0.7, 0.6])
    assert len(fa) == rep.class_aware.fp
    missed = rep.missed.sort_values("class").reset_index(drop=True)
    assert missed[["class", "error", "detected_as"]].values.tolist() == [
        ["pmn", "not_detected", ""], ["tm62", "other_class", "pmn"],
    ]  # fmt: skip
    assert missed.score.iloc[1] == pytest.approx(0.8) and np.isnan(missed.score.iloc[0])
    assert missed.geometry.iloc[0].equals(truth.geometry.iloc[2])
    assert len(missed) == rep.class_aware.fn


def test_cli_writes_errors_and_an_ortho_source_trains_on_them(
    make_geotiff: Callable[..., Path], tmp_path: Path
) -> None:
    truth, pred = _layers()
    write_gpkg(tmp_path / "truth.gpkg", {"truth": truth})
    write_gpkg(tmp_path / "det.gpkg", {"detections": pred})
    err = tmp_path / "errors.gpkg"
    args = ["evaluate", str(tmp_path / "det.gpkg"), str(tmp_path / "truth.gpkg"), "--area-ha", "0.0004",
            "--errors", str(err)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"3 false alarms and 2 missed items in {err}" in res.output.replace("\n", "")
    assert set(list_layers(err)) >= {"false_alarms", "missed"}
    assert read_metadata(err)["pred"] == str(tmp_path / "det.gpkg")
    res = CliRunner().invoke(app, args)  # exists: refused, one line, exit 12
    assert res.exit_code == 12 and "--overwrite" in res.output
    assert CliRunner().invoke(app, [*args, "--overwrite", "--min-score", "0.75"]).exit_code == 0
    assert len(gpd.read_file(err, layer="false_alarms")) == 1  # only the 0.8 wrong-class call is left
    # the false alarms become hard negatives of an ortho source on the same ground (1 cm mosaic, 2 x 2 m)
    tif = make_geotiff(height=200, width=200, gsd=0.01, origin=(X0, Y0), crs=CRS)
    write_gpkg(tmp_path / "ann.gpkg", {"targets": truth})
    ctx = SourceContext(("pmn", "tm62"), ("red", "green", "blue"), 0.01, 64)
    cfg = OrthoSourceConfig(raster=str(tif), annotations=str(tmp_path / "ann.gpkg"), layer="targets",
                            negatives=str(err), positive_fraction=0.0, hard_negative_fraction=1.0)  # fmt: skip
    src = OrthoSource(cfg, ctx)
    np.testing.assert_allclose(src.neg_boxes, [[140, 40, 160, 60]], atol=0.05)  # the 0.8 box, grid pixels
    same = OrthoSource(cfg.model_copy(update={"negatives": f"{err}:false_alarms"}), ctx)
    np.testing.assert_array_equal(same.neg_boxes, src.neg_boxes)
    s = src.sample(np.random.default_rng(0), 0)
    assert s.image.shape == (3, 64, 64)

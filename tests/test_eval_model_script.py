"""The per-class threshold calibration of ``scripts/eval_model.py`` (the knapsack that sets the shipped card's
``class_thresholds``), on hand-made score tables with a known best answer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.script_helpers import SCRIPTS, load_script

SCRIPT = SCRIPTS / "eval_model.py"


@pytest.fixture(scope="module")
def eval_model() -> Any:
    return load_script("eval_model")


# per class: scores of the detections on items (each finds one item) and of the false alarms
TABLE = {
    "pmn": {"hits": [0.95, 0.5, 0.5, 0.5, 0.5, 0.5], "false": [0.5], "items": 10},  # 5 more for one false alarm
    "tm62": {"hits": [0.95, 0.4], "false": [0.4, 0.4, 0.4], "items": 10},  # 1 more for three false alarms
    "pom2": {"hits": [], "false": [0.65, 0.3], "items": 0},  # nothing countable: keeps the single threshold
}


def _counts(_class_aware: bool, _keep: np.ndarray, thr: float, cls: str | None = None) -> dict[str, Any]:
    assert cls is not None
    t = TABLE[cls]
    found = sum(s >= thr for s in t["hits"])
    return {"found": found, "fp": sum(s >= thr for s in t["false"]), "items": t["items"]}


def _truth() -> tuple[np.ndarray, np.ndarray]:
    classes = np.array(["pmn"] * 10 + ["tm62"] * 10 + ["pom2"] * 2)
    keep = classes != "pom2"
    return keep, classes


def test_the_budget_goes_where_it_buys_the_most_recall(eval_model: Any) -> None:
    keep, classes = _truth()
    got = eval_model.per_class_thresholds(["pmn", "tm62", "pom2"], _counts, keep, classes, 2.0, 0.7)
    # pom2 keeps 0.7 (its false alarm at 0.65 is not kept there); pmn spends one false alarm for 5 items (at the
    # lowest threshold of that effect, 0.05: nothing more is kept below 0.5);
    # tm62 cannot afford three, so it stays at the lowest threshold with no false alarm (0.41)
    assert got == {"pmn": 0.05, "tm62": 0.41, "pom2": 0.7}
    got = eval_model.per_class_thresholds(["pmn", "tm62", "pom2"], _counts, keep, classes, 4.0, 0.7)
    assert got == {"pmn": 0.05, "tm62": 0.05, "pom2": 0.7}  # budget for both
    # pom2 at a single threshold of 0.6 charges its false alarm first: only pmn's fits the remaining 1
    got = eval_model.per_class_thresholds(["pmn", "tm62", "pom2"], _counts, keep, classes, 2.0, 0.6)
    assert got == {"pmn": 0.05, "tm62": 0.41, "pom2": 0.6}


def test_a_looser_point_never_raises_a_class_threshold(eval_model: Any) -> None:
    keep, classes = _truth()
    cap = {"pmn": 0.45, "tm62": 0.9, "pom2": 0.5}
    got = eval_model.per_class_thresholds(["pmn", "tm62", "pom2"], _counts, keep, classes, 5.0, 0.7, cap)
    assert got["pmn"] <= 0.45 and got["pom2"] == 0.5 and got["tm62"] <= 0.9
    # pom2 capped at 0.5 charges one false alarm; pmn takes the lowest threshold of equal effect under its cap
    assert got == {"pmn": 0.05, "tm62": 0.05, "pom2": 0.5}
    # a cap below the best choice binds: tm62 may not go above 0.3 although 0.41 would spare three false alarms
    got = eval_model.per_class_thresholds(["pmn", "tm62", "pom2"], _counts, keep, classes, 5.0, 0.7,
                                          {"pmn": 0.9, "tm62": 0.3, "pom2": 0.7})
    assert got["tm62"] <= 0.3 and got["pmn"] == 0.05


def test_maximin_gives_up_no_class_for_the_mean(eval_model: Any) -> None:
    """Three false alarms to spend: the mean buys PMN from 1 to 9 of 10 with all three and leaves TM-62 at 0 of 10;
    maximin first keeps every class above nothing (TM-62 3 of 10 for one false alarm), then the mean within that."""
    table = {
        "pmn": {"hits": [0.95] + [0.5] * 8, "false": [0.5] * 3, "items": 10},
        "tm62": {"hits": [0.4] * 3, "false": [0.4], "items": 10},
    }

    def counts(_class_aware: bool, _keep: np.ndarray, thr: float, cls: str | None = None) -> dict[str, Any]:
        assert cls is not None
        t = table[cls]
        return {"found": sum(v >= thr for v in t["hits"]), "fp": sum(v >= thr for v in t["false"]),
                "items": t["items"]}

    classes = np.array(["pmn"] * 10 + ["tm62"] * 10)
    keep = np.ones(20, bool)
    mean = eval_model.per_class_thresholds(["pmn", "tm62"], counts, keep, classes, 3.0, 0.7)
    assert mean["pmn"] <= 0.5 and mean["tm62"] > 0.4  # 0.9 and 0.0: mean 0.45
    fair = eval_model.per_class_thresholds(["pmn", "tm62"], counts, keep, classes, 3.0, 0.7, objective="maximin")
    assert fair["pmn"] > 0.5 and fair["tm62"] <= 0.4  # 0.1 and 0.3: the lowest class at 0.1, not 0
    assert counts(True, keep, fair["tm62"], "tm62")["found"] == 3 and counts(True, keep, fair["pmn"], "pmn")["fp"] == 0
    # a budget that affords both: maximin and mean agree
    assert eval_model.per_class_thresholds(["pmn", "tm62"], counts, keep, classes, 4.0, 0.7, objective="maximin") == \
        eval_model.per_class_thresholds(["pmn", "tm62"], counts, keep, classes, 4.0, 0.7)
    with pytest.raises(ValueError, match="objective"):
        eval_model.per_class_thresholds(["pmn", "tm62"], counts, keep, classes, 3.0, 0.7, objective="median")


def test_calibrates_on_annotated_flights(tmp_path: Path) -> None:
    """``--flights``: a site's own annotated flights (QGIS points in WGS84 with only a ``class`` column) instead
    of synthetic scenes; per-class thresholds are written into a copy of the model's card."""
    import json
    import shutil
    import subprocess

    import geopandas as gpd

    from rams.detector.bundle import load_bundle, resolve_bundle_path

    rams = str(Path(sys.executable).with_name("rams"))
    flights = []
    for i, seed in enumerate((41, 42)):
        d = tmp_path / f"flight{i}"
        run = subprocess.run([rams, "-q", "synth", str(d), "--seed", str(seed), "--size", "12x12", "--gsd", "0.01",
                              "--targets", "at", "--density", "400", "--terrain", "ploughed"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        truth = gpd.read_file(d / "truth.gpkg", layer="truth")
        points = gpd.GeoDataFrame({"class": truth["class"]}, geometry=truth.geometry.centroid, crs=truth.crs)
        (d / "truth.gpkg").unlink()
        points.to_crs(4326).to_file(d / "truth.gpkg", layer="truth")  # as annotated in QGIS
        flights.append(str(d))
    model = tmp_path / "site-model"
    shutil.copytree(resolve_bundle_path("default"), model)
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--flights", *flights, "--calibrate",
                          "balanced=200", "--per-class", "--update-card", "--json", str(tmp_path / "c.json"),
                          "--rams", rams], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["what"].startswith("operating points set on 2 annotated flight(s)")
    point = rec["points"]["balanced"]
    assert point["with_class_thresholds"]["per_class"]["tm62"]["items"] > 0  # the AT mines were counted
    card = load_bundle(model).card
    assert card.class_thresholds["balanced"] == point["class_thresholds"]
    assert card.metrics["operating_point_calibration"]["what"] == rec["what"]
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--flights", flights[1], "--update-card",
                          "--rams", rams], capture_output=True, text=True)  # evaluate (here: on a calibration flight)
    assert out.returncode == 0, out.stderr[-3000:]
    held = load_bundle(model).card.metrics["held_out_flights"]  # the record the detector gate prefers
    assert held["what"].startswith("1 annotated flight(s)") and held["class_thresholds"] == point["class_thresholds"]
    bad = tmp_path / "empty"
    bad.mkdir()
    out = subprocess.run([sys.executable, str(SCRIPT), "--model", str(model), "--flights", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "missing ortho.tif, truth.gpkg" in out.stderr


def test_a_thin_false_alarm_budget_is_flagged(eval_model: Any) -> None:
    rates = {"precise": 2.0, "balanced": 10.0, "high_recall": 30.0}
    # half a hectare: 1 and 5 false alarms allowed; 15 is enough
    notes = eval_model.thin_budget_notes(rates, 0.5)
    assert len(notes) == 2
    assert notes[0].startswith("precise (2 FP/ha) rests on 1.0 false alarms in 0.50 ha")
    assert "at least 5.0 ha" in notes[0] and "at least 1.0 ha" in notes[1]
    assert eval_model.thin_budget_notes(rates, 5.0) == []
    assert eval_model.thin_budget_notes(rates, 4.9)[0].startswith("precise")

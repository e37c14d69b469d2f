"""Model bundles: save/load round trip, SHA-256 check, card validation, name resolution, `rams models`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rams.cli.main import app
from rams.detector.bundle import (
    CARD_FILE,
    MODELS_DIR_ENV,
    WEIGHTS_FILE,
    ModelCard,
    load_bundle,
    make_test_bundle,
    save_bundle,
)
from rams.detector.predict import Predictor
from rams.errors import BandError, ModelError


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    make_test_bundle(tmp_path / "tiny", classes=("pmn", "tm62"))
    return tmp_path / "tiny"


def _card(folder: Path) -> dict:
    return json.loads((folder / CARD_FILE).read_text())


def test_round_trip_is_bit_exact(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert b.card.classes == ["pmn", "tm62"]
    assert b.card.bands == ["red", "green", "blue"]
    assert b.card.class_sizes_m["tm62"] == (0.32, 0.32)
    again = save_bundle(
        bundle_dir.parent / "copy",
        {k: v for k, v in b.card.model_dump().items() if k != "weights_sha256"},
        b.state_dict,
    )
    assert again.card.weights_sha256 == b.card.weights_sha256
    assert (bundle_dir / WEIGHTS_FILE).read_bytes() == (bundle_dir.parent / "copy" / WEIGHTS_FILE).read_bytes()
    loaded = load_bundle(bundle_dir.parent / "copy")
    for k, v in b.state_dict.items():
        assert torch.equal(loaded.state_dict[k], v)


def test_weights_are_safetensors_not_pickle(bundle_dir: Path) -> None:
    head = (bundle_dir / WEIGHTS_FILE).read_bytes()[:16]
    n = int.from_bytes(head[:8], "little")  # safetensors: 8-byte header length, then a JSON header
    assert head[8:9] == b"{" and n > 0
    assert not head.startswith(b"\x80")  # pickle protocol marker


def test_hash_mismatch_is_refused(bundle_dir: Path) -> None:
    w = bundle_dir / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last weight
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fails its SHA-256 check.*restore the original bundle"):
        load_bundle(bundle_dir)


def test_missing_weights_and_card_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ModelError, match=f"has no {WEIGHTS_FILE}"):
        load_bundle(bundle_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=f"has no {CARD_FILE}"):
        load_bundle(empty)


def test_card_with_extra_key_is_refused(bundle_dir: Path) -> None:
    card = _card(bundle_dir)
    card["colour"] = "green"
    (bundle_dir / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not a valid model card: colour: Extra inputs are not permitted"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["pmn", "landmine"]}, "unknown classes"),
        ({"overlap_px": 20}, "must exceed the largest object"),
        ({"default_operating_point": "nope"}, "default_operating_point 'nope' is not one of"),
        ({"normalisation": {"mean": [0.5], "std": [0.2]}}, "one per band"),
        ({"weights_sha256": "xyz"}, "64 lowercase hex"),
        ({"class_thresholds": {"nope": {"pmn": 0.5}}}, "class_thresholds for 'nope', which is not an operating"),
        ({"class_thresholds": {"balanced": {"shell": 0.5}}}, r"\['shell'\] are not classes of this model"),
        ({"class_thresholds": {"balanced": {"pmn": 0.0}}}, r"class_thresholds\['balanced'\]\['pmn'\]: threshold 0.0"),
    ],
)
def test_card_values_are_validated(bundle_dir: Path, change: dict, message: str) -> None:
    card = _card(bundle_dir)
    card.update(change)
    (bundle_dir / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message):
        load_bundle(bundle_dir)


def test_broken_json_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="is not valid JSON"):
        load_bundle(bundle_dir)


def test_weights_that_do_not_fit_the_card_are_refused(bundle_dir: Path) -> None:
    card = _card(bundle_dir)
    card["classes"] = ["pmn"]  # one heatmap channel, but the weights have two
    (bundle_dir / CARD_FILE).write_text(json.dumps(card))
    b = load_bundle(bundle_dir)
    with pytest.raises(ModelError, match="weights do not fit the architecture"):
        b.build_model()


def test_wrong_band_count_is_refused_with_a_clear_message(bundle_dir: Path) -> None:
    pred = Predictor(load_bundle(bundle_dir))
    with pytest.raises(BandError) as err:
        pred.predict(np.zeros((1, 1, 64, 64), np.float32), None, 0.5)
    msg = str(err.value)
    assert "model tiny expects 3 bands (red, green, blue) but the input has 1" in msg
    assert "--bands" in msg and "\n" not in msg


def test_names_resolve_in_the_models_dir(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(bundle_dir.parent))
    assert load_bundle("tiny").path == bundle_dir
    with pytest.raises(ModelError, match=r"model 'nosuch' not found.*known: tiny"):
        load_bundle("nosuch")


def test_cli_models_list_and_show(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(bundle_dir.parent))
    runner = CliRunner()
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0, res.output
    assert "tiny" in res.output and "red/green/blue" in res.output and "sha256 ok" in res.output
    res = runner.invoke(app, ["models", "show", "tiny"])
    assert res.exit_code == 0, res.output
    assert "0:pmn, 1:tm62" in res.output and "balanced=0.300 (default)" in res.output
    res = runner.invoke(app, ["models", "show", "tiny", "--json"])
    assert res.exit_code == 0
    assert ModelCard.model_validate(json.loads(res.output)).name == "tiny"


def test_cli_models_errors(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODELS_DIR_ENV, str(bundle_dir.parent))
    runner = CliRunner()
    res = runner.invoke(app, ["models", "show", "nosuch"])
    assert res.exit_code == 11
    assert "model 'nosuch' not found" in res.output
    w = bundle_dir / WEIGHTS_FILE
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    res = runner.invoke(app, ["models", "show", "tiny"])
    assert res.exit_code == 11 and "fails its SHA-256 check" in res.output
    res = runner.invoke(app, ["models", "list"])
    assert res.exit_code == 0 and "broken" in res.output and "SHA-256" in res.output


def test_the_shipped_default_model_loads_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from rams.classes import CLASS_NAMES
    from rams.detector.bundle import DEFAULT_MODEL, models_dir

    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    if not (models_dir() / DEFAULT_MODEL / CARD_FILE).is_file():
        pytest.skip("no shipped default model in models/")
    b = load_bundle(DEFAULT_MODEL)  # hash verified
    card = b.card
    assert card.classes == list(CLASS_NAMES) and card.bands == ["red", "green", "blue"]
    assert card.gsd_m == 0.01 and card.gsd_range_m[0] <= 0.005 and card.gsd_range_m[1] >= 0.01
    assert card.training.command and card.training.config and card.metrics
    pred = Predictor(b, threads=1)
    blank = pred.predict(np.full((1, 3, 256, 256), 0.4, np.float32), None)[0]
    assert len(blank) == 0  # nothing on featureless ground at the default operating point


def test_update_card_metrics_and_operating_points(tmp_path: Path) -> None:
    from rams.detector.bundle import update_card_metrics

    folder = tmp_path / "b"
    make_test_bundle(folder)
    before = load_bundle(folder)
    card = update_card_metrics(folder, "calib", {"what": "test"}, operating_points={"balanced": 0.42})
    after = load_bundle(folder)  # still loads: the weights and their hash are untouched
    assert after.card.operating_points["balanced"] == 0.42 == card.default_threshold
    assert after.card.metrics["calib"] == {"what": "test"}
    assert after.card.weights_sha256 == before.card.weights_sha256
    with pytest.raises(ModelError, match="threshold 1.5 must be in"):
        update_card_metrics(folder, "calib", {}, operating_points={"balanced": 1.5})
    assert load_bundle(folder).card.operating_points["balanced"] == 0.42  # a refused update changes nothing


def test_class_thresholds_per_operating_point(tmp_path: Path) -> None:
    """A card's per-class thresholds replace the operating point's single threshold for the classes listed; the
    others keep it; recalibrating writes them atomically and a bad value changes nothing."""
    from rams.detector.bundle import update_card_metrics

    folder = tmp_path / "b"
    make_test_bundle(folder, classes=("pmn", "tm62", "shell"))
    card = load_bundle(folder).card
    single = card.default_threshold
    assert card.thresholds() == {"pmn": single, "tm62": single, "shell": single}
    card = update_card_metrics(folder, "calib", {"what": "test"}, operating_points={"balanced": 0.5},
                               class_thresholds={"balanced": {"pmn": 0.3, "shell": 0.7}})
    assert load_bundle(folder).card.thresholds("balanced") == {"pmn": 0.3, "tm62": 0.5, "shell": 0.7}
    with pytest.raises(ModelError, match="not classes of this model"):
        update_card_metrics(folder, "calib", {}, class_thresholds={"balanced": {"pfm1": 0.3}})
    assert load_bundle(folder).card.thresholds() == card.thresholds()

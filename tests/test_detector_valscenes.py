"""Whole-scene validation (``validation.scenes``): the scenes are the pixels ``rams synth`` writes, tiled as
``rams detect`` tiles a mosaic, every item and hectare counted once; a run selects on them and records them."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from rams.detect import DetectConfig, run_detect
from rams.detector.bundle import load_bundle
from rams.detector.datasets import SourceContext
from rams.detector.train import TrainConfig, build_val_set, frame_predictions, train, validate
from rams.detector.valscenes import ValSceneConfig
from rams.errors import ConfigError
from rams.synth.scene import SynthConfig
from rams.synth.writer import write_scene
from tests.detector_helpers import tiny_config, write_toy_yolo

SPEC = {"seed": 7701, "terrain": "crop", "size_m": (12.0, 12.0)}
SCENE = ValSceneConfig.model_validate(SPEC)


def _scene_files(root: Path, spec: ValSceneConfig, gsd: float) -> Path:
    """The scene as `rams synth` writes it (same draw as validation's)."""
    w, h = spec.size_m
    out = root / f"s{spec.seed}"
    write_scene(SynthConfig(seed=spec.seed, width_m=w, height_m=h, gsd_m=gsd, terrain=spec.terrain,
                            target_density_per_ha=spec.density_per_ha), out)  # fmt: skip
    return out


def _default_cfg(tile: int) -> TrainConfig:
    cfg = TrainConfig.model_validate(load_bundle("default").card.training.config)
    vcfg = cfg.validation.model_copy(update={"sources": [], "scenes": [SCENE], "chip_size_px": tile})
    return cfg.model_copy(update={"validation": vcfg})


def _val_set(cfg: TrainConfig):  # type: ignore[no-untyped-def]
    return build_val_set(cfg, SourceContext(cfg.class_names, tuple(cfg.bands), cfg.gsd_m, cfg.chip_size_px), 0)


def test_scene_tiles_are_rams_synth_pixels_and_count_every_item_and_pixel_once(tmp_path: Path) -> None:
    cfg = _default_cfg(tile=256)
    val = _val_set(cfg)
    scene = _scene_files(tmp_path, SCENE, cfg.gsd_m)
    with rasterio.open(scene / "ortho.tif") as src:
        rgb, alpha = src.read([1, 2, 3]), src.read(4) > 0
    H, W = alpha.shape
    assert val.n_scenes == 1 and val.images.shape[1:] == (3, 256, 256) and len(val.images) > 4
    owners = np.zeros((H, W), np.int32)
    for k in range(len(val.images)):
        ox, oy = (int(v) for v in val.offsets[k])
        hh, ww = min(256, H - oy), min(256, W - ox)
        win = (slice(oy, oy + hh), slice(ox, ox + ww))
        assert np.array_equal(val.images[k][:, :hh, :ww], rgb[:, win[0], win[1]] * alpha[win])
        assert np.array_equal(val.valid[k][:hh, :ww], alpha[win])
        assert not val.valid[k][hh:, :].any() and not val.valid[k][:, ww:].any()  # past the scene: not imaged
        c0, r0, c1, r1 = val.cores[k]
        owners[oy + r0 : oy + r1, ox + c0 : ox + c1] += 1
    # cores partition the scene (a tile owning no imaged ground is left out, as rams detect skips it)
    assert owners.max() == 1 and not alpha[owners == 0].any()
    assert val.area_px == int(alpha.sum())
    # every item of the truth layer once, at its map position; counted iff learnt, >= 8 px and imaged
    truth = gpd.read_file(scene / "truth.gpkg", layer="truth")
    assert len(val.truth_xy) == len(truth)
    assert np.allclose(val.truth_xy[:, 0], (truth["x_map"] - 500000.0) / cfg.gsd_m)
    assert np.allclose(val.truth_xy[:, 1], (4420000.0 - truth["y_map"]) / cfg.gsd_m)
    cols, rows = np.floor(val.truth_xy).astype(int).T
    expect = (truth["length_m"].to_numpy() / cfg.gsd_m >= 8) & alpha[rows, cols] & truth["class"].isin(cfg.class_names)
    assert np.array_equal(val.truth_keep, expect.to_numpy()) and 0 < val.truth_keep.sum() < len(truth)
    names = [cfg.class_names[k] for k in val.truth_labels[val.truth_keep]]
    assert names == truth["class"][expect].tolist()


def test_validation_sees_what_rams_detect_sees(tmp_path: Path) -> None:
    """The default model on a scene through validation and through `rams detect` with the same tiles: the same
    detections (position, class, score), seam pairs merged alike."""
    cfg = _default_cfg(tile=512)
    val = _val_set(cfg)
    bundle = load_bundle("default")
    pxy, ps, pl = frame_predictions(bundle.build_model().eval(), val, cfg, torch.device("cpu"))
    scene = _scene_files(tmp_path, SCENE, cfg.gsd_m)
    floor = cfg.validation.score_floor
    run_detect(scene / "ortho.tif", tmp_path / "det.gpkg",
               DetectConfig(model="default", tile_size_px=512, threshold=floor, threads=2))  # fmt: skip
    det = gpd.read_file(tmp_path / "det.gpkg", layer="detections")
    c = det.geometry.centroid
    dxy = np.stack([(c.x - 500000.0) / cfg.gsd_m, (4420000.0 - c.y) / cfg.gsd_m], axis=1)
    # scores agree to 1e-3 (batching and layout differ), so a detection within that of the floor may be kept by one
    # path and not by the other; every other detection must be in both
    tol = 1e-3
    dscore = det["score"].to_numpy()
    assert len(det) > 100 and abs(len(pxy) - len(det)) <= ((ps < floor + tol).sum() + (dscore < floor + tol).sum())
    d = np.hypot(pxy[:, None, 0] - dxy[None, :, 0], pxy[:, None, 1] - dxy[None, :, 1])
    nearest = d.argmin(axis=1)
    same = (d.min(axis=1) < 0.01) & (np.asarray(bundle.card.classes)[pl] == det["label"].to_numpy()[nearest])
    same &= np.abs(ps - dscore[nearest]) < tol
    assert (same | (ps < floor + tol)).all(), same.mean()
    assert same.sum() >= (ps >= floor + tol).sum() and same.mean() > 0.99
    matched = nearest[same]
    assert len(set(matched.tolist())) == len(matched)  # one to one
    unmatched = np.setdiff1d(np.arange(len(det)), matched)
    assert (dscore[unmatched] < floor + tol).all(), dscore[unmatched]


def test_a_run_selects_on_whole_scenes_and_its_card_says_so(tmp_path: Path) -> None:
    yolo = write_toy_yolo(tmp_path / "yolo")
    base = tiny_config(yolo)
    vcfg = base.validation.model_copy(update={"sources": [], "scenes": [SCENE], "chip_size_px": 256})
    cfg = base.model_copy(update={"validation": vcfg, "max_epochs": 2})
    res = train(cfg, tmp_path / "run", progress=False)
    assert res.bundle_dir is not None
    card = load_bundle(res.bundle_dir).card
    rec = card.metrics["held_out_scenes"]
    assert "held_out_chips" not in card.metrics
    assert rec["n_scenes"] == 1 and rec["n_items"] > 0 and 0.005 < rec["area_ha"] < 0.0144
    assert "1 whole synthetic scenes (seed 7701 crop 12x12 m" in rec["what"]
    # the same numbers again from the exported model and the same scene: the record is the scene's
    m = validate(load_bundle(res.bundle_dir).build_model().eval(), _val_set(cfg), cfg, torch.device("cpu"))
    assert m["n_items"] == rec["n_items"] and m["area_ha"] == pytest.approx(rec["area_ha"])


def test_scene_validation_config_errors(tmp_path: Path) -> None:
    yolo = write_toy_yolo(tmp_path / "yolo", n_per_zone=2)
    base = tiny_config(yolo).model_dump(mode="json")
    with pytest.raises(ValueError, match="not both"):
        TrainConfig.model_validate({**base, "validation": {**base["validation"], "scenes": [SPEC]}})
    with pytest.raises(ValueError, match="unknown terrain 'moon'"):
        ValSceneConfig(seed=1, terrain="moon")
    with pytest.raises(ValueError, match="unknown targets preset"):
        ValSceneConfig(seed=1, targets="nukes")
    scenes_only = {"scenes": [SPEC], "chip_size_px": 48}
    cfg = TrainConfig.model_validate({**base, "validation": scenes_only})
    with pytest.raises(ConfigError, match="must exceed the tile overlap"):
        _val_set(cfg)
    cfg = TrainConfig.model_validate({**base, "validation": {"scenes": [{"seed": 1, "size_m": (150, 100)}]}})
    with pytest.raises(ConfigError, match="keep each under 100 Mpx"):
        _val_set(cfg)
    ms = {**base, "bands": ["red", "green", "blue", "nir"], "mean": [0.5] * 4, "std": [0.25] * 4,
          "validation": {"scenes": [SPEC]}}  # fmt: skip
    with pytest.raises(ConfigError, match="RGB and single-band"):
        _val_set(TrainConfig.model_validate(ms))


def test_a_finer_flight_is_block_averaged_as_rams_detect_reads_it(tmp_path: Path) -> None:
    """`source_gsd_m: 0.005` for a 1 cm model: the scene `rams synth` writes at 0.5 cm, read at 1 cm by rams.raster
    (2 x 2 block mean), within half a grey level; same validity; items at their map positions."""
    from rasterio.windows import Window

    from rams.raster import ReadConfig, make_reader, open_raster

    spec = ValSceneConfig(seed=7702, terrain="sand", size_m=(8.0, 8.0), source_gsd_m=0.005)
    cfg = _default_cfg(tile=256)
    cfg = cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"scenes": [spec]})})
    val = _val_set(cfg)
    assert val.area_px > 0
    scene = tmp_path / "s"
    write_scene(SynthConfig(seed=7702, width_m=8.0, height_m=8.0, gsd_m=0.005, terrain="sand",
                            target_density_per_ha=600.0), scene)  # fmt: skip
    with open_raster(scene / "ortho.tif") as src:
        reader = make_reader(src, ["red", "green", "blue"], 0.01, ReadConfig())
        assert reader._factor == 2  # the reader's exact block-mean path
        td = reader.read(Window(0, 0, 800, 800))
    owned = 0
    for k in range(len(val.images)):
        ox, oy = (int(v) for v in val.offsets[k])
        hh, ww = min(256, 800 - oy), min(256, 800 - ox)
        ref = td.image[:, oy : oy + hh, ox : ox + ww] * 255
        assert np.abs(val.images[k][:, :hh, :ww].astype(np.float32) - ref).max() <= 0.5 + 1e-3
        assert np.array_equal(val.valid[k][:hh, :ww], td.valid[oy : oy + hh, ox : ox + ww])
        c0, r0, c1, r1 = val.cores[k]
        owned += int(val.valid[k][r0:r1, c0:c1].sum())
    assert owned == val.area_px == int(td.valid.sum())
    truth = gpd.read_file(scene / "truth.gpkg", layer="truth")
    assert np.allclose(val.truth_xy[:, 0], (truth["x_map"] - 500000.0) / 0.01)
    # only whole-number ratios are block means
    bad = ValSceneConfig(seed=1, size_m=(5.0, 5.0), source_gsd_m=0.0075)
    with pytest.raises(ConfigError, match="must divide the model GSD"):
        _val_set(cfg.model_copy(update={"validation": cfg.validation.model_copy(update={"scenes": [bad]})}))


def test_an_annotated_flight_validates_like_the_scene_it_shows(tmp_path: Path) -> None:
    """`validation.flights`: the scene's ortho.tif and truth layer as a site's annotated flight, read through
    rams.raster, give the same tiles and area as the in-memory scene, and (near) the same items and numbers."""
    cfg = _default_cfg(tile=512)
    scene = _scene_files(tmp_path, SCENE, cfg.gsd_m)
    flight = {"kind": "ortho", "raster": str(scene / "ortho.tif"), "annotations": str(scene / "truth.gpkg"),
              "layer": "truth", "class_column": "class"}  # fmt: skip
    data = cfg.model_dump(mode="json")
    fcfg = TrainConfig.model_validate({**data, "validation": {**data["validation"], "scenes": [], "flights": [flight]}})
    by_scene, by_flight = _val_set(cfg), _val_set(fcfg)
    assert by_flight.n_scenes == 1 and by_flight.area_px == by_scene.area_px
    assert np.array_equal(by_flight.images, by_scene.images) and np.array_equal(by_flight.valid, by_scene.valid)
    assert np.array_equal(by_flight.offsets, by_scene.offsets) and np.array_equal(by_flight.cores, by_scene.cores)
    # items: annotation box centres (a few px from the object's own centre for lopsided shapes), box long side
    assert len(by_flight.truth_xy) == len(by_scene.truth_xy)
    assert np.abs(by_flight.truth_xy - by_scene.truth_xy).max() < 6
    assert np.array_equal(by_flight.truth_labels, by_scene.truth_labels)
    agree = by_flight.truth_keep == by_scene.truth_keep
    assert agree.mean() > 0.85, agree.mean()
    model = load_bundle("default").build_model().eval()
    ms = validate(model, by_scene, cfg, torch.device("cpu"))
    mf = validate(model, by_flight, fcfg, torch.device("cpu"))
    assert mf["area_ha"] == pytest.approx(ms["area_ha"])
    assert abs(mf["n_items"] - ms["n_items"]) <= (~agree).sum()
    assert abs(mf["any_ordnance"].get("tp", 0) - ms["any_ordnance"].get("tp", 0)) <= (~agree).sum() + 1
    # sources and flights together are refused
    with pytest.raises(ValueError, match="not both"):
        TrainConfig.model_validate({**data, "validation": {"flights": [flight], "sources": [flight]}})


def test_synthetic_training_with_scene_validation_runs_without_gdal(tmp_path: Path) -> None:
    """`scripts/gpu_train.sh` runs on a GPU box that has torch but no rasterio/geopandas: chips from
    `rams.synth` and validation on whole synthetic scenes must not import GDAL (a flight-only import did)."""
    import subprocess
    import sys

    import yaml

    from tests.detector_helpers import TINY_MODEL

    block = tmp_path / "nogdal"
    block.mkdir()
    (block / "sitecustomize.py").write_text(
        "import sys\nfor m in ('rasterio', 'geopandas', 'pyogrio', 'fiona', 'shapely', 'pyproj'):\n"
        "    sys.modules[m] = None\n"
    )
    cfg = {
        "name": "nogdal", "classes": ["pmn", "tm62"], "chip_size_px": 64, "batch_size": 2, "steps_per_epoch": 2,
        "max_epochs": 1, "model": TINY_MODEL, "optim": {"lr": 0.005, "warmup_steps": 1},
        "sources": [{"kind": "synthetic", "seed": 5, "pool_size": 4, "cache_dir": str(tmp_path / "cache")}],
        "validation": {"chip_size_px": 256, "scenes": [{"seed": 7702, "terrain": "sand", "size_m": [4, 4]}]},
        "augment": {"p_degrade": 0.0}, "threads": 1,
    }  # fmt: skip
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**__import__("os").environ, "PYTHONPATH": f"{block}:{Path(__file__).parents[1]}"}
    probe = subprocess.run([sys.executable, "-c", "import rasterio"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0  # the block works: the run below really has no GDAL
    res = subprocess.run(
        [sys.executable, "-m", "rams.detector.train", "--config", str(tmp_path / "cfg.yaml"), "--out",
         str(tmp_path / "run"), "--workers", "0", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    card = load_bundle(tmp_path / "run" / "bundle").card
    assert card.metrics["held_out_scenes"]["n_scenes"] == 1

"""`rams detect` plumbing on real GeoTIFFs with a tiny randomly initialised bundle.

The model's detections are meaningless here; what is tested is exact: coverage areas, georeferencing,
determinism, resume equivalence, CRS handling, AOI clipping, provenance and every error path. Detection
quality with the shipped model is tested in test_detect_model.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from affine import Affine
from shapely.geometry import box
from typer.testing import CliRunner

from rams.cli.main import app
from rams.detect import DetectConfig, partial_dir, run_detect
from rams.errors import AOIError, OutputError
from rams.layers import read_metadata

runner = CliRunner()
ORIGIN = (500000.0, 4400000.0)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rams.detector.bundle import make_test_bundle

    d = tmp_path_factory.mktemp("models") / "tiny"
    make_test_bundle(d, tile_size_px=256, threshold=0.3)
    return d


def _cfg(bundle_dir: Path, **kw: object) -> DetectConfig:
    # tiles of the bundle's 256 px (not the 1024 px default): several tiles and batches on these small mosaics
    opts: dict[str, object] = {"model": str(bundle_dir), "batch_size": 2, "threads": 1, "tile_size_px": 256, **kw}
    return DetectConfig(**opts)  # type: ignore[arg-type]


def _dets(path: Path) -> gpd.GeoDataFrame:
    return pyogrio.read_dataframe(path, layer="detections")


def _rgba(make_geotiff, h: int = 900, w: int = 1000, valid_cols: int = 700, **kw: object) -> Path:
    am = np.zeros((h, w), np.uint8)
    am[:, :valid_cols] = 255
    return make_geotiff(height=h, width=w, gsd=0.005, alpha=True, alpha_mask=am, seed=5, **kw)


def test_detect_writes_georeferenced_layers(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    ortho = _rgba(make_geotiff)  # 5.0 x 4.5 m at 0.5 cm; alpha hides the right 1.5 m
    out = tmp_path / "r.gpkg"
    s = run_detect(ortho, out, _cfg(bundle_dir))
    assert out.exists() and not partial_dir(out).exists()
    assert (tmp_path / "r.config.yaml").exists()
    layers = {name for name, _ in pyogrio.list_layers(out)}
    assert {"detections", "coverage", "rams_metadata", "layer_styles"} <= layers
    cov = pyogrio.read_dataframe(out, layer="coverage")
    assert cov.crs.to_epsg() == 32638
    # analysed ground = the imaged 3.5 x 4.5 m, exactly; the alpha-hidden strip is not in it
    assert cov.geometry.iloc[0].area == pytest.approx(3.5 * 4.5, abs=1e-6)
    assert cov.geometry.iloc[0].bounds == pytest.approx((ORIGIN[0], ORIGIN[1] - 4.5, ORIGIN[0] + 3.5, ORIGIN[1]))
    assert s.analysed_ha == pytest.approx(3.5 * 4.5 / 1e4)
    dets = _dets(out)
    assert len(dets) == s.detections > 0
    assert dets.crs.to_epsg() == 32638
    assert set(dets.columns) >= {"det_id", "label", "score", "model", "tile_id", "length_m", "width_m", "lon",
                                 "lat", "status"}
    assert (dets.score >= 0.3).all()
    # every detection is centred on analysed ground
    assert dets.geometry.centroid.within(cov.geometry.iloc[0].buffer(1e-9)).all()
    # lon/lat agree with the geometry
    c = dets.geometry.centroid.to_crs(4326)
    np.testing.assert_allclose(dets.lon, c.x, atol=1e-7)
    np.testing.assert_allclose(dets.lat, c.y, atol=1e-7)
    meta = read_metadata(out)
    for key in ("input_hash", "weights_sha256", "model_name", "resolved_config", "rams_version", "host",
                "started_utc", "finished_utc", "score_threshold", "evidence_note"):
        assert meta.get(key), key
    assert meta["input_hash"].startswith("sha256:")


def test_detect_applies_the_cards_per_class_thresholds(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """A card with per-class thresholds: each class is kept at its own threshold, the result's metadata records
    them (the detector gate reads them), ``--threshold`` sets one for all, and the summary says so."""
    import json
    import shutil

    from rams.detector.bundle import read_card, update_card_metrics

    ortho = _rgba(make_geotiff)
    model = tmp_path / "per-class"
    shutil.copytree(bundle_dir, model)
    classes = read_card(model).classes
    uniform = run_detect(ortho, tmp_path / "u.gpkg", _cfg(model))
    base = _dets(tmp_path / "u.gpkg")
    # raise the threshold of the two classes with the most detections, keep the rest at the card's 0.3
    top = list(base.label.value_counts().index[:2])
    assert len(top) == 2, "the tiny model must find two classes on this mosaic"
    raised = {c: round(float(base.score[base.label == c].median()), 3) for c in top}
    update_card_metrics(model, "calib", {"what": "test"}, class_thresholds={"balanced": raised})
    s = run_detect(ortho, tmp_path / "p.gpkg", _cfg(model))
    dets = _dets(tmp_path / "p.gpkg")
    want = {c: raised.get(c, 0.3) for c in classes}
    assert s.class_thresholds == want and s.threshold == 0.3
    assert all(float(r.score) >= want[r.label] for r in dets.itertuples())
    assert 0 < len(dets) < len(base) == uniform.detections
    for c in top:  # the raised classes lost their low-scoring detections, the others kept theirs
        assert (dets.label == c).sum() < (base.label == c).sum()
    assert json.loads(read_metadata(tmp_path / "p.gpkg")["class_thresholds"]) == want
    res = CliRunner().invoke(app, ["detect", str(ortho), "--out", str(tmp_path / "c.gpkg"), "--model", str(model),
                                   "--tile-size", "256"])
    assert res.exit_code == 0, res.output
    assert f"score >= 0.3-{max(raised.values()):g} by class" in res.output
    s = run_detect(ortho, tmp_path / "t.gpkg", _cfg(model, threshold=0.3))
    assert s.detections == uniform.detections and set(s.class_thresholds.values()) == {0.3}


def test_detect_is_deterministic(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    ortho = _rgba(make_geotiff)
    run_detect(ortho, tmp_path / "a.gpkg", _cfg(bundle_dir))
    run_detect(ortho, tmp_path / "b.gpkg", _cfg(bundle_dir, workers=2))
    a, b = _dets(tmp_path / "a.gpkg"), _dets(tmp_path / "b.gpkg")
    assert len(a) == len(b) > 0
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.equals(b.geometry)


def test_interrupted_run_resumes_to_same_result(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    ortho = _rgba(make_geotiff)
    ref = tmp_path / "ref.gpkg"
    run_detect(ortho, ref, _cfg(bundle_dir))
    out = tmp_path / "r.gpkg"
    calls = {"n": 0}

    def stop_after_two(done: int, total: int, mpx: float) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # initial call + 2 batches
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_detect(ortho, out, _cfg(bundle_dir), progress=stop_after_two)
    assert not out.exists()  # no half-written output
    assert partial_dir(out).exists()
    s = run_detect(ortho, out, _cfg(bundle_dir), resume=True)
    assert s.tiles_resumed == 4  # two batches of two tiles
    a, b = _dets(ref), _dets(out)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a.geometry.equals(b.geometry)


def test_resume_refuses_tiles_kept_at_other_thresholds(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """Re-calibrating the card (same weights) between an interrupted run and its resume must not mix tiles kept
    at the old thresholds into the new result."""
    import shutil

    from rams.detector.bundle import update_card_metrics
    from rams.errors import InputError

    model = tmp_path / "m"
    shutil.copytree(bundle_dir, model)
    ortho = _rgba(make_geotiff)
    out = tmp_path / "r.gpkg"
    calls = {"n": 0}

    def stop(done: int, total: int, mpx: float) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_detect(ortho, out, _cfg(model), progress=stop)
    update_card_metrics(model, "calib", {"what": "test"}, class_thresholds={"balanced": {"pmn": 0.5}})
    with pytest.raises(InputError, match="cannot resume: class_thresholds changed"):
        run_detect(ortho, out, _cfg(model), resume=True)


def test_kill_9_then_resume(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    ortho = _rgba(make_geotiff, h=1600, w=1600, valid_cols=1600)
    ref = tmp_path / "ref.gpkg"
    # same resolved config as the CLI runs below (threads by core count: float sums depend on thread count)
    run_detect(ortho, ref, DetectConfig(model=str(bundle_dir), batch_size=1, tile_size_px=256))
    out = tmp_path / "k.gpkg"
    cmd = [sys.executable, "-m", "rams.cli.main", "detect", str(ortho), "--out", str(out), "--model",
           str(bundle_dir), "--batch-size", "1", "--tile-size", "256"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = partial_dir(out) / "tiles.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ck.exists() and len(ck.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("run finished before it could be killed (machine too fast for this test's mosaic)")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(bundle_dir), "--batch-size", "1",
                            "--tile-size", "256", "--resume"])
    assert r.exit_code == 0, r.output
    assert "from checkpoint" in r.output
    a, b = _dets(ref), _dets(out)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


def test_untiled_input_same_detections(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    tiled = _rgba(make_geotiff, name="tiled.tif")
    strip = _rgba(make_geotiff, name="strip.tif", tiled=False)
    run_detect(tiled, tmp_path / "t.gpkg", _cfg(bundle_dir))
    run_detect(strip, tmp_path / "s.gpkg", _cfg(bundle_dir))
    a, b = _dets(tmp_path / "t.gpkg"), _dets(tmp_path / "s.gpkg")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


def test_epsg4326_input(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    t = Affine(6.0e-8, 0, 49.8, 0, -4.5e-8, 40.4)  # ~0.5 cm pixels near Baku
    am = np.full((800, 800), 255, np.uint8)
    am[400:] = 0
    ortho = make_geotiff(height=800, width=800, crs="EPSG:4326", transform=t, alpha=True, alpha_mask=am)
    out = tmp_path / "g.gpkg"
    s = run_detect(ortho, out, _cfg(bundle_dir))
    cov = pyogrio.read_dataframe(out, layer="coverage")
    assert cov.crs.to_epsg() == 4326  # output in the raster's CRS
    meta = read_metadata(out)
    assert meta["analysis_crs"] == "EPSG:32639"
    # imaged area: 400 x 800 px of (6e-8 deg lon x 4.5e-8 deg lat) at 40.4 N
    lon_m = 6.0e-8 * 111320 * np.cos(np.radians(40.4))
    lat_m = 4.5e-8 * 111030
    expect = 400 * 800 * lon_m * lat_m
    assert s.analysed_ha * 1e4 == pytest.approx(expect, rel=0.03)


def test_aoi_clips_coverage_and_detections(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    ortho = _rgba(make_geotiff)
    aoi = tmp_path / "sha.gpkg"
    sha = box(ORIGIN[0] + 0.5, ORIGIN[1] - 3.0, ORIGIN[0] + 2.5, ORIGIN[1] - 1.0)
    gpd.GeoDataFrame({"sha_id": ["SHA-1"]}, geometry=[sha], crs=32638).to_crs(4326).to_file(aoi)
    out = tmp_path / "a.gpkg"
    run_detect(ortho, out, _cfg(bundle_dir), aoi=aoi)
    cov = pyogrio.read_dataframe(out, layer="coverage").geometry.iloc[0]
    assert cov.area == pytest.approx(4.0, rel=1e-4)
    dets = _dets(out)
    assert dets.geometry.centroid.within(sha.buffer(1e-6)).all()
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[box(0, 0, 1, 1)], crs=32638).to_file(far)
    with pytest.raises(AOIError, match="does not overlap"):
        run_detect(ortho, tmp_path / "x.gpkg", _cfg(bundle_dir), aoi=far)


def test_a_self_intersecting_aoi_is_repaired_whole_and_named(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """A bow-tie SHA outline (digitised with crossing edges) is analysed whole, both lobes, as rams quality and
    rams reduce read it (buffer(0) kept one lobe: half the SHA silently not analysed), and the result says so."""
    from shapely.geometry import Polygon

    ortho = _rgba(make_geotiff)
    x0, y0 = ORIGIN[0] + 0.5, ORIGIN[1] - 0.5
    bow = Polygon([(x0, y0), (x0 + 2, y0 - 2), (x0 + 2, y0), (x0, y0 - 2)])  # two 1 m2 triangles
    assert not bow.is_valid
    aoi = tmp_path / "bow.gpkg"
    gpd.GeoDataFrame({"sha_id": ["SHA-1"]}, geometry=[bow], crs=32638).to_file(aoi)
    out = tmp_path / "b.gpkg"
    s = run_detect(ortho, out, _cfg(bundle_dir), aoi=aoi)
    cov = pyogrio.read_dataframe(out, layer="coverage").geometry.iloc[0]
    assert cov.area == pytest.approx(2.0, rel=1e-3)
    assert any("were invalid (e.g. self-intersecting) and were repaired" in w for w in s.warnings)


@pytest.mark.parametrize(
    "case,code,message",
    [
        ("gray", 7, "model needs 3 (red, green, blue)"),
        ("coarse", 9, "too coarse"),
        ("exists", 12, "already exists"),
        ("missing", 3, "not found"),
        ("aoi_missing", 3, "not found"),
        ("badext", 12, ".gpkg"),
    ],
)
def test_detect_cli_errors(case: str, code: int, message: str, make_geotiff, bundle_dir: Path,
                           tmp_path: Path) -> None:
    out = tmp_path / "out.gpkg"
    extra: list[str] = []
    ortho = make_geotiff(height=300, width=300, gsd=0.005)
    if case == "gray":
        ortho = make_geotiff(height=300, width=300, bands=1, gsd=0.005)
    elif case == "coarse":
        ortho = make_geotiff(height=100, width=100, gsd=0.05)
    elif case == "exists":
        out.write_text("x")
    elif case == "missing":
        ortho = tmp_path / "nope.tif"
    elif case == "aoi_missing":
        extra = ["--aoi", str(tmp_path / "nope.gpkg")]
    elif case == "badext":
        out = tmp_path / "out.shp"
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(bundle_dir), *extra])
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    if case != "exists":
        assert not out.exists()


def test_coarse_gsd_force_proceeds_with_warning(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    ortho = make_geotiff(height=100, width=100, gsd=0.05)
    out = tmp_path / "f.gpkg"
    r = runner.invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(bundle_dir), "--force"])
    assert r.exit_code == 0, r.output
    assert "warning" in r.output
    assert "too coarse" in read_metadata(out)["warnings"]


@pytest.mark.parametrize("fill", [0, 255])
def test_black_or_white_collar_of_an_unmasked_mosaic_is_not_coverage(make_geotiff, bundle_dir: Path, tmp_path: Path,
                                                                      fill: int) -> None:
    """An RGB export with no alpha, nodata or mask fills the ground it did not image with 0 (or, some, with white):
    that collar is not analysed ground, and no detection is centred on it; a white one is named in the warnings."""
    rng = np.random.default_rng(2)
    data = rng.integers(1, 250, (3, 600, 800)).astype(np.uint8)
    data[:, :, 500:] = fill  # 4 x 3 m at 0.5 cm; 2.5 x 2.0 m imaged: the right 1.5 m collar
    data[:, 400:, :] = fill  # and the bottom 1.0 m
    ortho = make_geotiff(height=600, width=800, gsd=0.005, data=data)
    out = tmp_path / "c.gpkg"
    s = run_detect(ortho, out, _cfg(bundle_dir))
    cov = pyogrio.read_dataframe(out, layer="coverage").geometry.iloc[0]
    assert cov.area == pytest.approx(2.5 * 2.0, abs=1e-6)
    assert cov.bounds == pytest.approx((ORIGIN[0], ORIGIN[1] - 2.0, ORIGIN[0] + 2.5, ORIGIN[1]))
    assert s.analysed_ha == pytest.approx(5.0 / 1e4)
    dets = _dets(out)
    assert dets.geometry.centroid.within(cov.buffer(1e-9)).all()
    assert ("edges are white (255 in every band)" in read_metadata(out)["warnings"]) == (fill == 255)


def test_a_damaged_block_mid_mosaic_stops_with_its_place_and_no_output(make_geotiff, bundle_dir: Path,
                                                                         tmp_path: Path) -> None:
    """A bad copy: blocks in the middle of the file do not decode (the first and last, probed at open, do). The run
    stops with one line naming where and GDAL's reason, the damaged-file exit code, and no result file."""
    from rams.errors import EXIT_CODES, CorruptRasterError
    from tests.test_cli_info import _damaged_in_the_middle

    ortho = _damaged_in_the_middle(make_geotiff(height=512, width=512, seed=1))
    out = tmp_path / "d.gpkg"
    with pytest.raises(CorruptRasterError, match=r"GDAL:? .*(IReadBlock|Decod).*damaged or truncated"):
        run_detect(ortho, out, _cfg(bundle_dir))
    assert not out.exists()
    r = CliRunner().invoke(app, ["detect", str(ortho), "--out", str(out), "--model", str(bundle_dir), "--overwrite"])
    assert r.exit_code == EXIT_CODES[CorruptRasterError] and "the file is damaged or truncated" in r.output
    assert "--skip-damaged" in r.output
    assert not out.exists()


def test_skip_damaged_leaves_the_damaged_block_not_analysed(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """--skip-damaged: the run goes on; the block that does not decode (and only it) is outside the coverage,
    with its area in a warning and the metadata; the rest is analysed as in the undamaged file."""
    from rams.config import ReadConfig
    from rams.errors import CorruptRasterError
    from tests.test_cli_info import _damaged_in_the_middle

    good = make_geotiff(height=512, width=512, blocksize=128, seed=1)
    bad = _damaged_in_the_middle(make_geotiff(height=512, width=512, blocksize=128, seed=1), block=(1, 2))
    cfg = _cfg(bundle_dir, read=ReadConfig(skip_damaged=True))
    run_detect(good, tmp_path / "g.gpkg", cfg)
    # stopped by the damaged block first; --resume --skip-damaged then keeps the tiles done before it
    with pytest.raises(CorruptRasterError, match="--skip-damaged"):
        run_detect(bad, tmp_path / "b.gpkg", _cfg(bundle_dir))
    assert partial_dir(tmp_path / "b.gpkg").is_dir()
    s = run_detect(bad, tmp_path / "b.gpkg", cfg, resume=True)
    assert s.tiles_resumed > 0
    cov_g = pyogrio.read_dataframe(tmp_path / "g.gpkg", layer="coverage").geometry.union_all()
    cov_b = pyogrio.read_dataframe(tmp_path / "b.gpkg", layer="coverage").geometry.union_all()
    hole = box(ORIGIN[0] + 1.28, ORIGIN[1] - 3.84, ORIGIN[0] + 2.56, ORIGIN[1] - 2.56)  # block x 1, y 2 of 128 px
    assert cov_g.area == pytest.approx(5.12 * 5.12)
    assert cov_b.area == pytest.approx(cov_g.area - hole.area)
    assert cov_b.intersection(hole).area == pytest.approx(0.0, abs=1e-9)
    assert cov_g.difference(cov_b).symmetric_difference(hole).area == pytest.approx(0.0, abs=1e-9)
    meta = read_metadata(tmp_path / "b.gpkg")
    assert float(meta["damaged_m2"]) == pytest.approx(hole.area, abs=1e-3)
    assert any("1.6 m2 in" in w and "NOT analysed" in w for w in s.warnings)
    assert float(read_metadata(tmp_path / "g.gpkg")["damaged_m2"]) == 0.0


def test_a_reader_on_a_multithreaded_handle_never_takes_a_damaged_block_for_imagery(make_geotiff) -> None:
    """GDAL 3.10: after a block fails to decode on a NUM_THREADS handle, reading it again there returns made-up
    pixels without an error. With skip_damaged the reader reads on from a fresh single-threaded handle, so the
    block stays unread (invalid, zero), as on a single-threaded handle."""
    from rasterio.windows import Window

    from rams.raster import OrthoReader, open_raster, target_grid
    from tests.test_cli_info import _damaged_in_the_middle

    bad = _damaged_in_the_middle(make_geotiff(height=512, width=512, blocksize=128, seed=1), block=(1, 2))
    got = []
    for threads in (None, 2):
        with open_raster(bad, num_threads=threads) as src:
            reader = OrthoReader(src, target_grid(src, 0.01), (1, 2, 3), (0.0, 255.0), skip_damaged=True)
            td = reader.read(Window(0, 0, 512, 512))
            again = reader.read(Window(64, 192, 256, 256))  # overlaps the damaged block: still not imaged
            reader.close()
        assert not td.valid[256:384, 128:256].any() and td.valid.sum() == 512 * 512 - 128 * 128
        assert not (td.image[:, 256:384, 128:256] != 0).any()
        assert not again.valid[64:192, 64:192].any() and again.valid.sum() == 256 * 256 - 128 * 128
        assert reader.damaged and all(b - a <= 128 and d - c <= 128 for a, b, c, d in reader.damaged)
        got.append(td.image)
    assert np.array_equal(got[0], got[1])


def test_a_second_run_on_the_same_output_stops_at_once(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """A run holds an OS lock on its output while it works: a second one started on the same --out (a command run
    twice) stops with one line and touches nothing; the lock goes with the run."""
    import subprocess
    import sys
    import textwrap

    from rams.outputs import lock_path

    ortho = make_geotiff(height=300, width=300)
    out = tmp_path / "r.gpkg"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from rams.outputs import output_lock
        with output_lock(Path({str(out)!r})):
            print("held", flush=True)
            sys.stdin.readline()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match="another rams run is writing .*r.gpkg"):
            run_detect(ortho, out, _cfg(bundle_dir))
        assert not out.exists() and not partial_dir(out).exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    run_detect(ortho, out, _cfg(bundle_dir))  # free again
    assert out.exists() and not lock_path(out).exists()


def test_mosaic_in_feet_gives_areas_in_square_metres(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    from affine import Affine

    ft = 0.005 / 0.3048006096  # 0.5 cm in US survey feet
    ortho = make_geotiff(height=600, width=600, crs="EPSG:2263", transform=Affine(ft, 0, 1e6, 0, -ft, 2e5))
    out = tmp_path / "ft.gpkg"
    s = run_detect(ortho, out, _cfg(bundle_dir))
    cov = pyogrio.read_dataframe(out, layer="coverage")
    assert cov.crs.to_epsg() == 2263  # layers in the mosaic's own CRS, for its GIS project
    assert s.analysed_ha * 1e4 == pytest.approx(9.0, rel=0.02)  # 3 x 3 m
    assert cov["area_m2"].iloc[0] == pytest.approx(9.0, rel=0.02)
    assert cov.to_crs(32618).area.iloc[0] == pytest.approx(9.0, rel=0.02)


def test_dim_or_clipped_values_are_refused_with_the_range_and_run_with_it(bundle_dir: Path, tmp_path: Path) -> None:
    """12-bit values in uint16 without NBITS (the model would see a nearly black image) and 0-255 values stored as
    float32 (clipped white): refused before any tile, nothing written; the named --value-range runs; 14-bit values
    run with a recorded warning."""
    import rasterio
    from rasterio.transform import from_origin

    def write(name: str, data: np.ndarray) -> Path:
        p = tmp_path / name
        with rasterio.open(p, "w", driver="GTiff", width=300, height=300, count=3, dtype=data.dtype.name,
                           crs="EPSG:32638", transform=from_origin(*ORIGIN, 0.01, 0.01)) as dst:
            dst.write(data)
        return p

    rng = np.random.default_rng(4)
    u12 = write("u12.tif", rng.integers(100, 4000, (3, 300, 300)).astype(np.uint16))
    f255 = write("f255.tif", rng.integers(0, 256, (3, 300, 300)).astype(np.float32))
    for p, fix in ((u12, "--value-range 0,4095"), (f255, "--value-range 0,255")):
        out = tmp_path / f"{p.stem}.gpkg"
        r = runner.invoke(app, ["detect", str(p), "--out", str(out), "--model", str(bundle_dir), "--bands", "1,2,3"])
        assert r.exit_code == 7 and fix in r.output, r.output
        assert not out.exists() and not any(tmp_path.glob(f".{p.stem}*"))
        r = runner.invoke(app, ["detect", str(p), "--out", str(out), "--model", str(bundle_dir), "--bands", "1,2,3",
                                "--value-range", fix.split()[1]])
        assert r.exit_code == 0, r.output
        assert "value" not in read_metadata(out)["warnings"]
    u14 = write("u14.tif", rng.integers(100, 12000, (3, 300, 300)).astype(np.uint16))
    s = run_detect(u14, tmp_path / "u14.gpkg", _cfg(bundle_dir, read={"bands": [1, 2, 3]}))
    assert any("--value-range 0,16383" in w for w in s.warnings)
    assert "read.value_range: [0, 16383]" in read_metadata(tmp_path / "u14.gpkg")["warnings"]


def test_a_forced_run_carries_no_recall_to_the_gate(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """The card's recall was measured at the GSDs the model serves; a run forced onto coarser imagery must not
    let the detector gate use it (its silence says nothing), while the same card on imagery it serves may."""
    import json
    import shutil

    from rams.detector.bundle import update_card_metrics
    from rams.gate import run_detector_gate

    model = tmp_path / "m"
    shutil.copytree(bundle_dir, model)
    update_card_metrics(model, "synthetic_scenes", {
        "what": "test", "score_threshold": 0.3, "per_class": {"tm62": {"recall": 0.99, "recall_ci95": [0.97, 1.0]}},
    })
    served, coarse = tmp_path / "served.gpkg", tmp_path / "coarse.gpkg"
    run_detect(make_geotiff(height=300, width=300, gsd=0.01, seed=3), served, _cfg(model))
    run_detect(make_geotiff(height=100, width=100, gsd=0.05, seed=3), coarse, _cfg(model, force=True))
    ok, forced = read_metadata(served), read_metadata(coarse)
    assert json.loads(ok["model_recall"])["per_class"] == {"tm62": 0.99}
    assert run_detector_gate(ok, ["tm62"], 0.9) is None
    assert forced["model_recall"] == "null"
    assert "5.00 cm/px imagery, coarser than the 0.50-1.20 cm/px" in forced["model_recall_withheld"]
    why = run_detector_gate(forced, ["tm62"], 0.9)
    assert why is not None and "(--force): its measured recall does not apply" in why
    assert run_detector_gate(forced, ["tm62"], 0.0) is None  # no minimum asked: nothing to refuse


def test_core_coverage_blocks_cover_exactly_the_valid_pixels() -> None:
    """Coverage pieces (all-valid block runs as rectangles, mixed blocks polygonised) are exactly the valid
    pixels of the core: same region as polygonising the whole core at once."""
    from rasterio import features
    from rasterio.windows import Window
    from shapely import union_all
    from shapely.geometry import shape

    from rams.coverage import BLOCK_PX, core_coverage
    from rams.raster import Grid
    from rams.tiling import Tile

    grid = Grid(None, Affine(0.01, 0, ORIGIN[0], 0, -0.01, ORIGIN[1]), 2000, 2000)  # type: ignore[arg-type]
    size = 2 * BLOCK_PX + 77  # a partial last block in both directions
    window = Window(100, 200, size + 40, size + 40)
    core = Window(120, 220, size, size)
    tile = Tile("r0000c0000", 0, 0, window, core, grid.window_transform(window))
    yy, xx = np.mgrid[0 : size + 40, 0 : size + 40]
    rng = np.random.default_rng(3)
    valid = ((yy - 150) ** 2 / 260**2 + (xx - 300) ** 2 / 200**2 < 1) & (rng.random(yy.shape) > 0.02)
    valid[:, -60:] = True  # an all-valid run that reaches the core's right edge
    pieces = core_coverage(tile, valid, grid)
    sub = valid[20 : 20 + size, 20 : 20 + size]
    ref = union_all([shape(g) for g, v in features.shapes(sub.astype(np.uint8), mask=sub,
                                                           transform=grid.window_transform(core)) if v == 1])
    got = union_all(pieces)
    assert got.area == pytest.approx(sub.sum() * 1e-4, abs=1e-7)
    assert got.symmetric_difference(ref).area < 1e-7
    assert len(pieces) > 1  # really split into blocks


def test_mosaic_without_imaged_pixels_is_refused(make_geotiff, bundle_dir: Path, tmp_path: Path) -> None:
    """Tiles without imagery are found when read (no mask pass before the run) and skip the model; a mosaic
    with no imaged pixel at all is still refused, and nothing is written."""
    from rams.errors import InputError

    ortho = _rgba(make_geotiff, valid_cols=0)
    out = tmp_path / "none.gpkg"
    with pytest.raises(InputError, match="no imaged pixels"):
        run_detect(ortho, out, _cfg(bundle_dir))
    assert not out.exists()
    # a partly imaged mosaic: the unimaged tiles are counted as empty, and no detection lies outside the image
    s = run_detect(_rgba(make_geotiff, valid_cols=200), tmp_path / "part.gpkg", _cfg(bundle_dir))
    assert s.tiles_empty >= 2 and s.tiles_empty < s.tiles_total
    assert s.analysed_ha == pytest.approx(1.0 * 4.5 / 1e4)


@pytest.mark.parametrize("max_tile", [1024, 1536])
@pytest.mark.parametrize("h,w", [(7071, 7071), (31622, 31622), (800, 1200), (450, 500), (3000, 20000), (100, 5000)])
def test_default_tile_size_covers_the_grid_with_the_fewest_pixels(h: int, w: int, max_tile: int) -> None:
    """The default tile is at most the cap (1024 or 1536 px), a multiple of 16 (or the card's), and shrunk only as
    far as the same number of tiles still covers each axis with at least the overlap."""
    from rams.detect import default_tile_px
    from rams.raster import Grid
    from rams.tiling import axis_starts

    grid = Grid(None, Affine(0.01, 0, 0, 0, -0.01, 0), h, w)  # type: ignore[arg-type]
    t = default_tile_px(grid, 512, 96, max_tile)
    assert 512 <= t <= max_tile and (t % 16 == 0 or t == 512)
    cap = max(512, min(max_tile, -(-min(h, w) // 16) * 16))
    for length in (h, w):
        starts = axis_starts(length, t, 96)
        assert len(starts) == len(axis_starts(length, cap, 96))  # no more tiles than at the capped size
        assert all(b - a <= t - 96 for a, b in zip(starts, starts[1:], strict=False))  # overlap kept
        assert starts[-1] + t >= length
    if t > 512:  # and no smaller multiple of 16 would do
        assert any(len(axis_starts(length, t - 16, 96)) > len(axis_starts(length, t, 96)) or t - 16 < min(length, t)
                   for length in (h, w))
    if (h, w) == (7071, 7071):
        assert t == (976 if max_tile == 1024 else 1504)


@pytest.mark.parametrize("width,stripes", [(20000, 1), (64000, 2)])
def test_tiles_run_down_stripes_whose_block_cache_is_bounded(bundle_dir: Path, tmp_path: Path, width: int,
                                                             stripes: int) -> None:
    """On a wide mosaic the tiles run row by row down vertical stripes whose row of source blocks fits
    STRIPE_CACHE_MB (a 1 cm RGB mosaic 64 000 px wide: a whole row of 1536 px tiles needs ~412 MB, a stripe at
    most 256 MB); a narrower one is one stripe (row-major). Real (sparse) tiled GeoTIFFs, the real planner."""
    import rasterio

    from rams.detect import LARGE_TILE_PX, STRIPE_CACHE_MB, default_tile_px, plan_detect, stripe_width_px
    from rams.raster import open_raster, row_cache_mb
    from rams.tiling import make_tiles

    path = tmp_path / f"wide_{width}.tif"
    profile = {"driver": "GTiff", "width": width, "height": 4000, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32638", "transform": Affine(0.01, 0, ORIGIN[0], 0, -0.01, ORIGIN[1]), "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate", "sparse_ok": True}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((3, 512, 512), 90, np.uint8), window=rasterio.windows.Window(0, 0, 512, 512))
    plan = plan_detect(path, DetectConfig(model=str(bundle_dir)))  # the tiny bundle works at 1 cm, as the file
    assert plan.tile_px == default_tile_px(plan.grid, plan.card.tile_size_px, plan.overlap_px, LARGE_TILE_PX) > 1024
    assert plan.batch_size == 1
    n_cols = 1 + max(t.col for t in plan.tiles)
    assert -(-n_cols // plan.stripe_cols) == stripes
    with open_raster(path) as src:
        assert row_cache_mb(src, 0.01, plan.tile_px, stripe_width_px(plan)) <= STRIPE_CACHE_MB
        assert (row_cache_mb(src, 0.01, plan.tile_px) > STRIPE_CACHE_MB) == (stripes > 1)
    # every tile once, row by row within each stripe
    assert sorted(t.tile_id for t in plan.tiles) == sorted(
        t.tile_id for t in make_tiles(plan.grid, plan.tile_px, plan.overlap_px))
    keys = [(t.col // plan.stripe_cols, t.row, t.col) for t in plan.tiles]
    assert keys == sorted(keys)


def test_stripe_order_gives_the_row_major_result(make_geotiff, bundle_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles run down one-column stripes (a tiny stripe cache budget) or row by row across the mosaic: the same
    detections and the same coverage."""
    import rams.detect as detect_mod

    ortho = _rgba(make_geotiff, h=1200, w=1400, valid_cols=1000)
    cfg = _cfg(bundle_dir, batch_size=1)
    monkeypatch.setattr(detect_mod, "STRIPE_CACHE_MB", 10**6)
    assert detect_mod.plan_detect(ortho, cfg).stripe_cols > 1
    run_detect(ortho, tmp_path / "rows.gpkg", cfg)
    monkeypatch.setattr(detect_mod, "STRIPE_CACHE_MB", 0)
    plan = detect_mod.plan_detect(ortho, cfg)
    assert plan.stripe_cols == 1 and [t.col for t in plan.tiles[:3]] == [0, 0, 0]
    run_detect(ortho, tmp_path / "stripes.gpkg", cfg)
    a, b = _dets(tmp_path / "rows.gpkg"), _dets(tmp_path / "stripes.gpkg")
    assert len(a) == len(b) > 0

    def key(d: gpd.GeoDataFrame) -> list[tuple[str, float, str]]:
        return sorted(zip(d.label, d.score.round(6), d.geometry.normalize().to_wkt(rounding_precision=6),
                          strict=True))

    assert key(a) == key(b)
    ca = pyogrio.read_dataframe(tmp_path / "rows.gpkg", layer="coverage").geometry.union_all()
    cb = pyogrio.read_dataframe(tmp_path / "stripes.gpkg", layer="coverage").geometry.union_all()
    assert ca.symmetric_difference(cb).area < 1e-9


def test_untiled_mosaics_run_row_by_row(make_geotiff, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A strip (untiled) file decodes whole-width strips whatever the window: stripes would decode every strip
    once per stripe, so its tiles run row by row even when a stripe budget would cut the row."""
    import rams.detect as detect_mod

    monkeypatch.setattr(detect_mod, "STRIPE_CACHE_MB", 0)
    tiled = _rgba(make_geotiff, h=1200, w=1400, valid_cols=1000)
    strips = _rgba(make_geotiff, h=1200, w=1400, valid_cols=1000, tiled=False)
    cfg = _cfg(bundle_dir)
    n_cols = 1 + max(t.col for t in detect_mod.plan_detect(strips, cfg).tiles)
    assert n_cols > 1
    assert detect_mod.plan_detect(strips, cfg).stripe_cols == n_cols
    assert detect_mod.plan_detect(tiled, cfg).stripe_cols == 1

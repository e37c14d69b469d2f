"""rams batch on real Dask clusters: local cluster, a real scheduler with two workers, SIGKILL and resume.

Three overlapping flights are cut from one synthetic scene (``rams.synth``), so objects in the overlaps are
imaged by two flights. The model is a tiny randomly initialised bundle: its detections mean nothing, but they
are deterministic, which is what these tests need (same inputs, same detections, however the work is split).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import box
from typer.testing import CliRunner

from rams.batch.run import SURVEY_NAME, BatchConfig, flight_output, run_batch
from rams.batch.status import STATUS_FILE, BatchStatus
from rams.cli.main import app
from rams.config import load_config

BIN = Path(sys.executable).parent
FLIGHT_IDS = ["east", "middle", "west"]
FLIGHT_LAYERS = ["detections", "coverage", "coverage_quality", "hazard_polygons"]
SURVEY_LAYERS = ["detections", "sightings", "coverage", "hazard_polygons", "coverage_quality", "flights"]
SHA_LAYERS = ["sha_reduction", "sha_proposed_remaining", "sha_proposed_cancellation"]
CONFIG = """\
detect:
  threshold: 0.95
  threads: 1
  batch_size: 2
  tile_size_px: 256  # the bundle's tile size (not the 1024 px default): several tiles and tasks per flight
decisions:
  quality:
    classes: [tm62, shell]
tiles_per_task: 2
"""

runner = CliRunner()


def _crop(src_path: Path, dest: Path, col0: int, width: int) -> Path:
    with rasterio.open(src_path) as src:
        win = Window(col0, 0, width, src.height)
        profile = src.profile | {"width": width, "transform": src.window_transform(win), "blockxsize": 256,
                                 "blockysize": 256}
        with rasterio.open(dest, "w", **profile) as dst:
            dst.write(src.read(window=win))
            dst.colorinterp = src.colorinterp
    return dest


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Three overlapping flights (manifest), a tiny model, a config, one SHA, and a reference local batch."""
    from rams.detector.bundle import make_test_bundle
    from rams.synth.scene import SynthConfig
    from rams.synth.writer import write_scene

    root = tmp_path_factory.mktemp("batch")
    bundle = root / "tiny"
    make_test_bundle(bundle)
    write_scene(SynthConfig(seed=5, width_m=12.0, height_m=6.0, gsd_m=0.0075), root / "scene")
    ortho = root / "scene" / "ortho.tif"
    (root / "flights").mkdir()
    # 1600 x 800 px at 7.5 mm: three flights 720 px wide overlapping by 160 px (1.2 m)
    for fid, col0 in zip(FLIGHT_IDS, (0, 560, 1120), strict=True):
        _crop(ortho, root / "flights" / f"{fid}.tif", col0, min(720, 1600 - col0))
    manifest = root / "flights.csv"
    manifest.write_text(
        "orthomosaic,flight_id,date,operator,sensor\n"
        + "".join(f"flights/{fid}.tif,{fid},2024-05-0{i + 1},Team 1,synthetic RGB\n"
                  for i, fid in enumerate(FLIGHT_IDS))
    )
    config = root / "batch.yaml"
    config.write_text(CONFIG)
    with rasterio.open(ortho) as src:
        left, bottom, right, top = src.bounds
    sha = gpd.GeoDataFrame({"sha_id": ["SHA-1"]}, geometry=[box(left + 3, bottom + 1, right - 3, top - 1)],
                           crs="EPSG:32638")
    sha_path = root / "sha.gpkg"
    sha.to_file(sha_path, layer="sha", driver="GPKG")
    cfg = load_config(BatchConfig, config, {"detect.model": str(bundle)})
    ref = root / "ref"
    summary = run_batch(manifest, ref, cfg, sha=sha_path, workers=1)
    return SimpleNamespace(root=root, bundle=bundle, manifest=manifest, config=config, cfg=cfg, sha=sha_path,
                           ref=ref, summary=summary, ortho=ortho)


def assert_same_layer(a: Path, b: Path, layer: str) -> None:
    """Attributes equal (but the paths of the outputs themselves) and geometries bit-identical."""
    da = pyogrio.read_dataframe(a, layer=layer)
    db = pyogrio.read_dataframe(b, layer=layer)
    if layer == "flights":
        da, db = da.drop(columns="output"), db.drop(columns="output")
    pd.testing.assert_frame_equal(pd.DataFrame(da.drop(columns="geometry")), pd.DataFrame(db.drop(columns="geometry")),
                                  check_exact=True)
    assert list(da.geometry.to_wkb()) == list(db.geometry.to_wkb()), f"{layer}: geometries differ"


def assert_same_batch(a: Path, b: Path, with_sha: bool) -> None:
    for fid in FLIGHT_IDS:
        for layer in FLIGHT_LAYERS + (SHA_LAYERS if with_sha else []):
            assert_same_layer(flight_output(a, fid), flight_output(b, fid), layer)
    for layer in SURVEY_LAYERS + (SHA_LAYERS if with_sha else []):
        assert_same_layer(a / SURVEY_NAME, b / SURVEY_NAME, layer)


# ---------------------------------------------------------------------------------------------------------
# Local cluster


def test_local_batch_writes_flights_and_a_fused_survey(survey: SimpleNamespace) -> None:
    s = survey.summary
    assert [f.state for f in s.flights] == ["done"] * 3 and not s.failed
    assert s.cluster == "local" and s.workers == 1
    st = BatchStatus.load(survey.ref / STATUS_FILE)
    for fid in FLIGHT_IDS:
        rec = st.flights[fid]
        assert rec.state == "done" and rec.done_runs == 1 and rec.attempts == 1
        names = [n for n, _ in pyogrio.list_layers(flight_output(survey.ref, fid))]
        assert set(FLIGHT_LAYERS + SHA_LAYERS) <= set(names)
        assert rec.summary["tiles"] > 2  # more tiles than one task: the mosaic was split over tasks
    assert not (survey.ref / ".work").exists()
    objs = pyogrio.read_dataframe(survey.ref / SURVEY_NAME, layer="detections")
    sights = pyogrio.read_dataframe(survey.ref / SURVEY_NAME, layer="sightings")
    per_flight = sum(len(pyogrio.read_dataframe(flight_output(survey.ref, f), layer="detections"))
                     for f in FLIGHT_IDS)
    assert len(sights) == per_flight > 0
    assert objs["n_views"].sum() == len(sights)
    assert s.survey_summary["detections"] == len(objs) == per_flight - s.survey_summary["cross_flight_links"]
    assert sorted(set(sights["det_id"])) == list(objs["det_id"])
    for _, o in objs[objs["n_views"] > 1].iterrows():  # fused sightings come from different flights
        flights = o["flights"].split(",")
        assert len(flights) == len(set(flights)) == o["n_views"]
    hazard = pyogrio.read_dataframe(survey.ref / SURVEY_NAME, layer="hazard_polygons")
    assert hazard["n_items"].sum() == len(objs)  # every object counted once, however many flights saw it
    flights_layer = pyogrio.read_dataframe(survey.ref / SURVEY_NAME, layer="flights")
    assert list(flights_layer["flight_id"]) == FLIGHT_IDS
    assert list(flights_layer["date"]) == ["2024-05-01", "2024-05-02", "2024-05-03"]
    table = pyogrio.read_dataframe(survey.ref / SURVEY_NAME, layer="sha_reduction")
    assert list(table["sha_id"]) == ["SHA-1"]
    # the tiny test model has no measured recall: its silence supports no cancellation, per flight or survey
    from rams.layers import read_metadata

    assert (table["cancel_m2"] == 0).all() and table["status"].str.startswith("no cancellation proposed").all()
    assert "no measured recall" in read_metadata(flight_output(survey.ref, "middle"))["reduce.notes"]
    assert pyogrio.read_dataframe(survey.ref / SURVEY_NAME, layer="sha_proposed_cancellation").empty


def test_flight_equals_single_process_detect(survey: SimpleNamespace, tmp_path: Path) -> None:
    from rams.detect import run_detect

    out = tmp_path / "middle.gpkg"
    run_detect(survey.root / "flights" / "middle.tif", out, survey.cfg.detect)
    for layer in ("detections", "coverage"):
        assert_same_layer(out, flight_output(survey.ref, "middle"), layer)


def test_rerun_skips_done_flights_without_a_cluster(survey: SimpleNamespace) -> None:
    before = json.loads((survey.ref / STATUS_FILE).read_text())
    res = run_batch(survey.manifest, survey.ref, survey.cfg, sha=survey.sha, workers=2)
    assert [f.state for f in res.flights] == ["skipped"] * 3
    assert res.cluster.startswith("none") and not res.survey_rebuilt
    after = json.loads((survey.ref / STATUS_FILE).read_text())
    assert after["flights"] == before["flights"]


def test_output_written_but_not_marked_done_is_recovered_not_redone(survey: SimpleNamespace,
                                                                     tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(survey.ref, out)
    # as if killed between renaming the flight's GeoPackage into place and marking it done
    status = json.loads((out / STATUS_FILE).read_text())
    rec = status["flights"]["middle"]
    rec["state"], rec["summary"] = "running", {}
    rec["runs"][-1]["state"] = "running"
    (out / STATUS_FILE).write_text(json.dumps(status))
    res = run_batch(survey.manifest, out, survey.cfg, sha=survey.sha, workers=1)
    assert [f.state for f in res.flights] == ["skipped"] * 3 and res.flights[1].reason == "recovered"
    assert res.cluster.startswith("none")
    back = BatchStatus.load(out / STATUS_FILE).flights["middle"]
    assert back.state == "done" and back.done_runs == 1 and back.attempts == 1
    assert back.summary["detections"] == res.flights[1].detections > 0  # read back from the GeoPackage
    assert "recovered" in back.runs[-1]["note"]


# ---------------------------------------------------------------------------------------------------------
# A real scheduler and two workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1; all stopped afterwards."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                  "--host", "127.0.0.1", "--name", f"w{i}")
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


def test_dask_cluster_gives_exactly_the_local_detections(survey: SimpleNamespace, dask_scheduler: str,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "dist"
    res = runner.invoke(app, ["batch", str(survey.manifest), "--out", str(out), "--config", str(survey.config),
                              "--model", str(survey.bundle), "--sha", str(survey.sha), "--scheduler",
                              dask_scheduler])
    assert res.exit_code == 0, res.output
    assert f"cluster {dask_scheduler} (2 workers)" in res.output
    for fid in FLIGHT_IDS:
        assert fid in res.output
    assert_same_batch(survey.ref, out, with_sha=True)


# ---------------------------------------------------------------------------------------------------------
# SIGKILL and resume


def _lines(path: Path) -> int:
    """Complete lines in a checkpoint file (0 when absent)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_midway_then_resume_loses_and_repeats_nothing(survey: SimpleNamespace, dask_scheduler: str,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cfg = tmp_path / "kill.yaml"
    # one flight at a time, so that the kill lands mid-batch (and other reader threads: results do not change)
    cfg.write_text(CONFIG.replace("threads: 1", "threads: 1\n  workers: 2") + "max_active_flights: 1\n")
    cmd = [str(BIN / "rams"), "batch", str(survey.manifest), "--out", str(out), "--config", str(cfg),
           "--model", str(survey.bundle), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    status_path = out / STATUS_FILE
    second_ckpt = out / ".work" / FLIGHT_IDS[1] / "tiles.jsonl"
    deadline = time.monotonic() + 240
    first_done = False
    try:
        # kill once the first flight is done and, if we catch it, the second is part-way through its tiles
        while time.monotonic() < deadline and proc.poll() is None:
            if not first_done and status_path.exists():
                st = json.loads(status_path.read_text())
                first_done = st["flights"].get(FLIGHT_IDS[0], {}).get("state") == "done"
                t_first = time.monotonic()
            if first_done and (_lines(second_ckpt) > 0 or time.monotonic() - t_first > 20):
                break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the batch and its local workers, as a crash would
        proc.wait(timeout=30)
    assert first_done, "the first flight never finished: " + (proc.stdout.read().decode() if proc.stdout else "")
    killed = BatchStatus.load(status_path)
    assert [killed.flights[f].state for f in FLIGHT_IDS[1:]].count("done") < 2, "killed too late to test resume"
    assert not (out / SURVEY_NAME).exists()
    checkpointed = _lines(second_ckpt) if killed.flights[FLIGHT_IDS[1]].state == "running" else 0

    # resumed on the running scheduler (whichever cluster resumes, the result must not change)
    res = runner.invoke(app, ["batch", str(survey.manifest), "--out", str(out), "--config", str(cfg),
                              "--model", str(survey.bundle), "--scheduler", dask_scheduler])
    assert res.exit_code == 0, res.output
    st = BatchStatus.load(status_path)
    for fid in FLIGHT_IDS:
        rec = st.flights[fid]
        assert rec.state == "done" and rec.done_runs == 1, (fid, rec.runs)  # none lost, none done twice
    assert st.flights[FLIGHT_IDS[0]].attempts == 1  # the finished flight was not touched again
    resumed = [f for f in FLIGHT_IDS[1:] if killed.flights.get(f) and killed.flights[f].state == "running"]
    for fid in resumed:
        assert [r["state"] for r in st.flights[fid].runs] == ["interrupted", "done"]
    assert "skipped" in res.output
    if checkpointed:  # the half-done flight resumed from its tile checkpoint instead of starting over
        assert st.flights[FLIGHT_IDS[1]].summary["tiles_resumed"] >= 2 * checkpointed
    # every output is complete and valid: identical to the uninterrupted reference, no temporaries left
    for fid in FLIGHT_IDS:
        for layer in FLIGHT_LAYERS:
            assert_same_layer(flight_output(survey.ref, fid), flight_output(out, fid), layer)
    for layer in ("detections", "sightings", "coverage", "hazard_polygons"):
        assert_same_layer(survey.ref / SURVEY_NAME, out / SURVEY_NAME, layer)
    assert not list(out.rglob(".*tmp-*")) and not (out / ".work").exists()


# ---------------------------------------------------------------------------------------------------------
# Failures


def _batch_args(survey: SimpleNamespace, scheduler: str, tmp_path: Path,
                flights: list[tuple[Path, str]]) -> tuple[Path, Path, list[str]]:
    """A manifest of ``flights`` (path, id) in ``tmp_path``, the batch folder, and the `rams batch` arguments that run
    it with the survey's config and model on ``scheduler``."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("orthomosaic,flight_id\n" + "".join(f"{path},{fid}\n" for path, fid in flights))
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--config", str(survey.config), "--model",
            str(survey.bundle), "--scheduler", scheduler]
    return manifest, out, args


def test_failed_flights_are_recorded_reported_and_retried(survey: SimpleNamespace, dask_scheduler: str,
                                                          tmp_path: Path) -> None:
    good = survey.root / "flights" / "west.tif"
    broken = tmp_path / "broken.tif"
    data = good.read_bytes()
    broken.write_bytes(data[: len(data) // 3])  # a truncated copy
    manifest, out, args = _batch_args(survey, dask_scheduler, tmp_path,
                                      [(good, "west"), (broken, "broken"), (tmp_path / "gone.tif", "gone")])
    res = runner.invoke(app, args)
    assert res.exit_code == 15, res.output
    assert "2 of 3 flights failed" in res.output and "orthomosaic not found" in res.output
    assert "broken: " in res.output and "truncated" in res.output
    st = BatchStatus.load(out / STATUS_FILE)
    assert st.flights["west"].state == "done"
    assert st.flights["broken"].state == "failed" and "truncated" in (st.flights["broken"].error or "")
    assert st.flights["gone"].state == "failed" and "orthomosaic not found" in (st.flights["gone"].error or "")
    survey_flights = pyogrio.read_dataframe(out / SURVEY_NAME, layer="flights")
    assert list(survey_flights["flight_id"]) == ["west"]  # the survey holds the finished flight only
    # the failures fixed, a rerun retries them and skips the finished flight
    broken.write_bytes(data)
    manifest.write_text(f"orthomosaic,flight_id\n{good},west\n{broken},broken\n")
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [(f["flight_id"], f["state"], f["reason"]) for f in summary["flights"]] == [
        ("west", "skipped", "done"), ("broken", "done", "retry after failure")]
    assert summary["failed"] == 0 and summary["survey_summary"]["flights"] == 2
    st = BatchStatus.load(out / STATUS_FILE)
    assert st.flights["west"].attempts == 1 and st.flights["broken"].attempts == 2
    assert st.flights["broken"].state == "done"
    assert [r["state"] for r in st.flights["broken"].runs] == ["failed", "done"]
    assert_same_layer(flight_output(out, "west"), flight_output(out, "broken"), "detections")


def test_skip_damaged_finishes_the_flight_and_names_the_unread_ground(survey: SimpleNamespace, dask_scheduler: str,
                                                                      tmp_path: Path) -> None:
    """A flight with a block that does not decode fails the batch (exit 15, the fix named); with --skip-damaged it
    is done, its unread ground outside the coverage, and the end of the batch names it."""
    from tests.test_cli_info import _damaged_in_the_middle

    good = survey.root / "flights" / "west.tif"
    bad = tmp_path / "west-copy.tif"
    bad.write_bytes(good.read_bytes())
    _damaged_in_the_middle(bad, block=(1, 0))
    _, out, args = _batch_args(survey, dask_scheduler, tmp_path, [(bad, "copy")])
    res = runner.invoke(app, args)
    assert res.exit_code == 15 and "--skip-damaged" in res.output, res.output
    res = runner.invoke(app, [*args, "--skip-damaged"])
    assert res.exit_code == 0, res.output
    st = BatchStatus.load(out / STATUS_FILE)
    assert st.flights["copy"].state == "done"
    assert "copy: " in res.output and "could not be read (damaged blocks, --skip-damaged) and were NOT analysed" in (
        " ".join(res.output.split()))
    full = next(float(f.analysed_ha) for f in survey.summary.flights if f.flight_id == "west")
    assert 0 < st.flights["copy"].summary["analysed_ha"] < full
    # the switch is not part of a flight's key: a rerun with or without it redoes no finished flight
    for extra in (["--skip-damaged"], []):
        res = runner.invoke(app, [*args, *extra, "--json"])
        assert res.exit_code == 0, res.output
        assert [f["state"] for f in json.loads(res.stdout)["flights"]] == ["skipped"]


# ---------------------------------------------------------------------------------------------------------
# Several models per flight (--model A --model B), as rams detect runs them


@pytest.fixture(scope="module")
def second_model(survey: SimpleNamespace) -> Path:
    """Another tiny bundle (other weights, the small classes) that serves the survey's 7.5 mm flights."""
    from rams.detector.bundle import make_test_bundle

    path = survey.root / "tiny-small"
    make_test_bundle(path, classes=("pfm1", "pom2", "submunition"), seed=3)
    return path


def test_several_models_per_flight_give_what_rams_detect_gives(survey: SimpleNamespace, second_model: Path,
                                                               tmp_path: Path) -> None:
    from rams.detect import run_detect
    from rams.layers import read_metadata

    out = tmp_path / "two"
    args = ["batch", str(survey.manifest), "--out", str(out), "--config", str(survey.config), "--model",
            str(survey.bundle), "--model", str(second_model), "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    detect_cfg = survey.cfg.detect.model_copy(update={"extra_models": [str(second_model)]})
    for fid in FLIGHT_IDS:
        single = tmp_path / f"{fid}.gpkg"
        run_detect(survey.root / "flights" / f"{fid}.tif", single, detect_cfg)
        for layer in ("detections", "coverage"):  # the same combined result as rams detect --model A --model B
            assert_same_layer(single, flight_output(out, fid), layer)
        meta = read_metadata(flight_output(out, fid))
        assert meta["model_name"] == "tiny+tiny-small"
        for layer in FLIGHT_LAYERS:
            assert layer in pyogrio.list_layers(flight_output(out, fid))[:, 0]
    dets = pyogrio.read_dataframe(out / SURVEY_NAME, layer="detections")
    assert dets["model"].str.contains("tiny-small").any()  # the second model's detections reach the survey
    st = BatchStatus.load(out / STATUS_FILE)
    weights = st.flights["middle"].key["weights_sha256"].split(",")
    assert len(weights) == 2 and weights[0] == BatchStatus.load(survey.ref / STATUS_FILE).flights["middle"].key[
        "weights_sha256"]
    assert not (out / ".work").exists()
    # a rerun skips every flight; dropping the second model redoes them all (its detections must go)
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and res.output.count("skipped") >= 3, res.output
    res = runner.invoke(app, args[:-4] + ["--workers", "1"])
    assert res.exit_code == 0, res.output
    st = BatchStatus.load(out / STATUS_FILE)
    assert all(st.flights[f].done_runs == 2 for f in FLIGHT_IDS)
    assert_same_layer(flight_output(survey.ref, "middle"), flight_output(out, "middle"), "detections")


def test_thresholds_set_for_a_pair_apply_to_every_flight(survey: SimpleNamespace, second_model: Path,
                                                          tmp_path: Path) -> None:
    """A pair record in the second model's card (thresholds set for both models together): every flight runs each
    model at them, as rams detect does; setting them anew redoes the flights (the card is part of the key)."""
    import shutil

    from rams.detector.bundle import read_card, update_card_companion
    from rams.layers import read_metadata

    small = tmp_path / "tiny-small"
    shutil.copytree(second_model, small)
    main = read_card(survey.bundle)
    together = {"balanced": {main.name: {"pmn": 0.41, "pfm1": 0.43}, "tiny-small": {"pfm1": 0.42}}}
    update_card_companion(small, main.name, main.weights_sha256, thresholds=together)
    config = tmp_path / "pair.yaml"  # the operating point, not one --threshold for everything
    config.write_text(CONFIG.replace("  threshold: 0.95\n", ""))
    out = tmp_path / "pair"
    args = ["batch", str(survey.manifest), "--out", str(out), "--config", str(config), "--model",
            str(survey.bundle), "--model", str(small), "--workers", "1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for fid in FLIGHT_IDS:
        meta = read_metadata(flight_output(out, fid))
        per_model = json.loads(meta["model_class_thresholds"])
        assert per_model[main.name]["pmn"] == 0.41 and per_model["tiny-small"]["pfm1"] == 0.42
        assert json.loads(meta["joint_thresholds"])["thresholds"] == together["balanced"]
        assert not any("false alarms add up" in w for w in json.loads(meta["warnings"]))
    together["balanced"]["tiny-small"]["pfm1"] = 0.44
    update_card_companion(small, main.name, main.weights_sha256, thresholds=together)
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert {f["state"] for f in json.loads(res.stdout)["flights"]} == {"done"}
    meta = read_metadata(flight_output(out, FLIGHT_IDS[0]))
    assert json.loads(meta["model_class_thresholds"])["tiny-small"]["pfm1"] == 0.44


def test_each_model_keeps_its_own_tile_checkpoint(survey: SimpleNamespace, second_model: Path,
                                                  tmp_path: Path) -> None:
    """A flight's checkpoint holds each model's tiles apart: starting one model's afresh (its plan changed)
    keeps the other's, so a resumed batch redoes only what it must."""
    from rams.batch.manifest import Flight
    from rams.batch.run import WORK_DIR, _Job, _Runner
    from rams.batch.status import FlightKey
    from rams.detect import plan_detect

    ortho = survey.root / "flights" / "middle.tif"
    plans = {0: plan_detect(ortho, survey.cfg.detect),
             1: plan_detect(ortho, survey.cfg.detect.model_copy(update={"model": str(second_model)}))}
    job = _Job(Flight("middle", ortho), FlightKey("in", "w0,w1", "d", "q"), "new", 0, n_models=2, plans=plans)
    runner_ = object.__new__(_Runner)
    runner_.out_dir = tmp_path
    line = {"batch": 0, "tiles": []}
    for mi in (0, 1):
        assert runner_._open_checkpoint(job, mi) == {}
        job.ckpts[mi].write(json.dumps(line) + "\n")
    job.close_checkpoints()
    work = tmp_path / WORK_DIR / "middle"
    assert sorted(p.name for p in work.iterdir()) == ["state-1.json", "state.json", "tiles-1.jsonl", "tiles.jsonl"]
    # model 1's plan changes (another threshold): its tiles start over, model 0's stay
    job.plans[1] = plan_detect(ortho, survey.cfg.detect.model_copy(update={"model": str(second_model),
                                                                           "threshold": 0.9}))
    assert runner_._open_checkpoint(job, 1) == {}
    assert runner_._open_checkpoint(job, 0) == {0: []}
    job.close_checkpoints()
    assert (work / "tiles.jsonl").read_text() == json.dumps(line) + "\n"
    assert (work / "tiles-1.jsonl").read_text() == ""

"""rams batch without a cluster: manifests, status and resume decisions, fusion, CLI error paths.

Runs that start Dask clusters are in ``test_batch_run.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from rams.batch.fuse import FuseConfig, fuse_detections
from rams.batch.manifest import Flight, flights_from_folder, load_flights, read_manifest
from rams.batch.status import STATUS_FILE, BatchStatus, FlightKey, batch_lock
from rams.cli.main import app
from rams.errors import InputError, InputNotFoundError, OutputError
from tests.conftest import write_geotiff

runner = CliRunner()
UTM = "EPSG:32638"


# ---------------------------------------------------------------------------------------------------------
# Manifest


def test_folder_finds_geotiffs_recursively_with_ids(make_geotiff, tmp_path: Path) -> None:
    root = tmp_path / "flights"
    (root / "day1").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "out").mkdir()
    make_geotiff(name="flights/b.tif")
    make_geotiff(name="flights/day1/ortho.TIF")
    make_geotiff(name="flights/day1/a b.tiff")
    make_geotiff(name="flights/.hidden/x.tif")
    make_geotiff(name="flights/out/y.tif")
    (root / "notes.txt").write_text("not a raster")
    flights = flights_from_folder(root, exclude=[root / "out"])
    assert [f.flight_id for f in flights] == ["b", "day1_a_b", "day1_ortho"]
    assert all(f.ortho.is_absolute() and f.ortho.exists() for f in flights)


def test_folder_takes_a_vrt_with_its_blocks_as_one_flight(tmp_path: Path) -> None:
    from tests.test_provenance import _block, _vrt

    root = tmp_path / "flights"
    (root / "site4" / "blocks").mkdir(parents=True)
    blocks = [_block(root / "site4" / "blocks" / f"ortho-{i}.tif", i, 100 + 40 * i) for i in range(3)]
    _vrt(root / "site4" / "ortho.vrt", blocks[:2])  # the third block is not in the VRT: a flight of its own
    write_geotiff(root / "other.tif")
    flights = flights_from_folder(root)
    assert [f.flight_id for f in flights] == ["other", "site4_blocks_ortho-2", "site4_ortho"]


def test_csv_manifest_columns_relative_paths_and_dates(make_geotiff, tmp_path: Path) -> None:
    make_geotiff(name="a.tif")
    make_geotiff(name="b.tif")
    m = tmp_path / "m.csv"
    m.write_text(
        "Orthomosaic,Flight ID,date,operator,sensor\n"
        "a.tif,F-001,2024-05-02,Team 3,DJI M3E\n"
        f"{tmp_path / 'b.tif'},,2024-05-03T10:15,,\n"
        "\n"
    )
    flights = read_manifest(m)
    assert flights[0] == Flight("F-001", tmp_path / "a.tif", "2024-05-02", "Team 3", "DJI M3E")
    assert flights[1].flight_id == "b"  # default: the file's stem
    assert flights[1].date == "2024-05-03T10:15:00"
    assert flights[1].operator is None


def test_yaml_manifest_list_or_flights_key(make_geotiff, tmp_path: Path) -> None:
    make_geotiff(name="a.tif")
    m = tmp_path / "m.yaml"
    m.write_text("flights:\n  - orthomosaic: a.tif\n    flight_id: A1\n    date: 2024-05-02\n")
    (f,) = load_flights(m)
    assert (f.flight_id, f.date, f.ortho) == ("A1", "2024-05-02", tmp_path / "a.tif")
    m.write_text("- orthomosaic: a.tif\n")
    assert load_flights(m)[0].flight_id == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("orthomosaic,camera\na.tif,x\n", "unknown column(s) ['camera']"),
        ("flight_id\nA\n", "no 'orthomosaic' column"),
        ("orthomosaic,date\na.tif,2024-05-02\nb.tif,02/05/2024\n", "line 3: date '02/05/2024' is not an ISO date"),
        ("orthomosaic,flight_id\na.tif,A\nb.tif,A\n", "flight IDs ['A'] repeat"),
        ("orthomosaic,flight_id\na.tif,bad id!\n", "line 2: flight_id 'bad id!' is invalid"),
        ("orthomosaic\n\n", "lists no flights"),
        ("orthomosaic,flight_id\n,A\n", "line 2: 'orthomosaic' is empty"),
        ("orthomosaic\n/vsis3/bucket/a.tif\n", "object-store/URL path"),
        ("orthomosaic\na.tif\na.tif\n", "flight IDs ['a'] repeat"),
    ],
)
def test_bad_csv_manifest_rows(tmp_path: Path, text: str, message: str) -> None:
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        read_manifest(m)


def test_bad_yaml_manifests(tmp_path: Path) -> None:
    m = tmp_path / "m.yaml"
    m.write_text("orthomosaic: a.tif\n")
    with pytest.raises(InputError, match="must hold a list of flights"):
        read_manifest(m)
    m.write_text("- orthomosaic: a.tif\n  pilot: x\n")
    with pytest.raises(InputError, match=r"flight 1: unknown column\(s\) \['pilot'\]"):
        read_manifest(m)
    m.write_text("- [a, b]\n")
    with pytest.raises(InputError, match="flight 1: expected a mapping"):
        read_manifest(m)


def test_missing_and_wrong_sources(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="flights not found"):
        load_flights(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no orthomosaic"):
        load_flights(tmp_path / "empty")
    (tmp_path / "list.txt").write_text("a.tif\n")
    with pytest.raises(InputError, match="neither a folder nor a manifest"):
        load_flights(tmp_path / "list.txt")


# ---------------------------------------------------------------------------------------------------------
# Status


KEY = FlightKey("sha256:aa", "bb" * 32, "cc", "dd", None)


def test_status_decisions_and_run_history(tmp_path: Path) -> None:
    st = BatchStatus.load(tmp_path / STATUS_FILE)
    assert st.decide("F1", KEY, output_exists=False) == ("run", "new")
    st.start("F1", "/x/f1.tif", KEY, "new")
    assert st.decide("F1", KEY, False) == ("run", "resume interrupted run")
    st.finish("F1", "/out/F1.gpkg", {"detections": 3}, 1.5)
    assert st.decide("F1", KEY, output_exists=True) == ("skip", "done")
    assert st.decide("F1", KEY, output_exists=False) == ("run", "output missing")
    changed = FlightKey("sha256:aa", "bb" * 32, "cc", "xx", "sha256:ee")
    assert st.decide("F1", changed, True) == ("run", "changed: decisions_config_sha256, sha_sha256")
    recalibrated = FlightKey("sha256:aa", "bb" * 32, "cc", "dd", None, card_sha256="ff")  # same weights, new card
    assert st.decide("F1", recalibrated, True) == ("run", "changed: card_sha256")
    st.start("F2", "/x/f2.tif", KEY, "new")
    st.fail("F2", "orthomosaic is corrupt", 0.5)
    assert st.decide("F2", KEY, False) == ("run", "retry after failure")
    # a new start after a kill closes the dangling run as interrupted
    st.start("F3", "/x/f3.tif", KEY, "new")
    st.start("F3", "/x/f3.tif", KEY, "resume interrupted run")
    back = BatchStatus.load(tmp_path / STATUS_FILE)  # every transition was saved
    assert back.flights["F1"].state == "done" and back.flights["F1"].done_runs == 1
    assert back.flights["F2"].error == "orthomosaic is corrupt"
    assert [r["state"] for r in back.flights["F3"].runs] == ["interrupted", "running"]
    assert back.flights["F3"].attempts == 2
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_status_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    p = tmp_path / STATUS_FILE
    p.write_text("{not json")
    with pytest.raises(InputError, match="move it away to start the batch afresh"):
        BatchStatus.load(p)
    p.write_text(json.dumps({"version": 99, "flights": {}}))
    with pytest.raises(InputError, match="status version 99"):
        BatchStatus.load(p)


def test_lock_refuses_a_second_batch_on_the_same_folder(tmp_path: Path) -> None:
    with (
        batch_lock(tmp_path),
        pytest.raises(OutputError, match="another rams batch .* is writing"),
        batch_lock(tmp_path),
    ):
        pass
    with batch_lock(tmp_path):  # released on exit
        pass


# ---------------------------------------------------------------------------------------------------------
# Fusion


def _dets(rows: list[tuple[int, str, float, float, float]], crs: str = UTM) -> gpd.GeoDataFrame:
    """Detections (det_id, label, score, centre x, centre y) with 0.2 m square footprints."""
    return gpd.GeoDataFrame(
        {"det_id": [r[0] for r in rows], "label": [r[1] for r in rows], "score": [r[2] for r in rows],
         "model": "m", "tile_id": "r0000c0000", "length_m": 0.2, "width_m": 0.2, "lon": 0.0, "lat": 0.0,
         "status": "candidate: needs human review"},
        geometry=[box(x - 0.1, y - 0.1, x + 0.1, y + 0.1) for _, _, _, x, y in rows], crs=crs,
    )


def test_fuse_one_object_seen_by_two_flights_keeps_both_sightings() -> None:
    a = _dets([(1, "pmn", 0.9, 100.0, 200.0), (2, "pmn", 0.8, 110.0, 200.0)])
    b = _dets([(1, "pmn", 0.95, 100.2, 200.1), (2, "tm62", 0.7, 110.1, 200.0), (3, "pmn", 0.6, 130.0, 200.0)])
    res = fuse_detections({"A": a, "B": b}, FuseConfig(match_distance_m=0.5))
    obj = res.objects
    assert len(obj) == 4 and res.links == 1
    first = obj.iloc[0]
    # numbered by first sighting (A1); represented by its highest-scoring sighting (B1)
    assert (first["n_views"], first["flights"], first["sightings"]) == (2, "A,B", "A:1,B:1")
    assert first["score"] == pytest.approx(0.95) and first["flight_id"] == "B" and first["flight_det_id"] == 1
    assert first.geometry.centroid.x == pytest.approx(100.2)
    # different labels 0.1 m apart are two objects by default, one with same_label off
    assert sorted(obj["label"]) == ["pmn", "pmn", "pmn", "tm62"]
    assert len(fuse_detections({"A": a, "B": b}, FuseConfig(same_label=False)).objects) == 3
    s = res.sightings
    assert len(s) == 5 and set(s.columns) >= {"flight_id", "flight_det_id", "det_id"}
    assert s.loc[(s.flight_id == "B") & (s.flight_det_id == 1), "det_id"].item() == first["det_id"]


def test_fuse_never_joins_two_detections_of_one_flight() -> None:
    # A1 and A2 are 0.4 m apart (two items of one flight); B1 lies between them: it joins the closer one only
    a = _dets([(1, "pmn", 0.9, 0.0, 0.0), (2, "pmn", 0.9, 0.4, 0.0)])
    b = _dets([(1, "pmn", 0.9, 0.15, 0.0)])
    res = fuse_detections({"A": a, "B": b}, FuseConfig(match_distance_m=0.5))
    assert len(res.objects) == 2 and res.links == 1
    assert sorted(res.objects["sightings"]) == ["A:1,B:1", "A:2"]


def test_fuse_chains_three_flights_and_reprojects() -> None:
    a = _dets([(1, "shell", 0.7, 500100.0, 4400100.0)])
    b = _dets([(7, "shell", 0.8, 500100.3, 4400100.0)])
    c = _dets([(3, "shell", 0.6, 500100.6, 4400100.0)]).to_crs("EPSG:4326")  # another CRS: reprojected
    res = fuse_detections({"A": a, "B": b, "C": c}, FuseConfig(match_distance_m=0.35))
    assert len(res.objects) == 1
    o = res.objects.iloc[0]
    assert (o["n_views"], o["flights"], o["sightings"], o["flight_id"]) == (3, "A,B,C", "A:1,B:7,C:3", "B")
    assert res.objects.crs.to_string() == UTM


def test_fuse_far_apart_or_empty() -> None:
    a = _dets([(1, "pmn", 0.9, 0.0, 0.0)])
    b = _dets([(1, "pmn", 0.9, 0.6, 0.0)])
    assert len(fuse_detections({"A": a, "B": b}, FuseConfig(match_distance_m=0.5)).objects) == 2
    empty = fuse_detections({"A": a.iloc[:0], "B": b.iloc[:0]})
    assert empty.objects.empty and empty.sightings.empty and empty.links == 0


# ---------------------------------------------------------------------------------------------------------
# CLI error paths (exit code and message); runs with a cluster are in test_batch_run.py


def _cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["batch", *args])
    return res.exit_code, res.output


def test_cli_missing_folder(tmp_path: Path) -> None:
    code, out = _cli(str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert code == 3 and "flights not found" in out


def test_cli_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "o"))
    assert code == 16 and "no orthomosaic (*.tif, *.tiff, *.vrt)" in out


def test_cli_bad_manifest_row(tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("orthomosaic,date\na.tif,yesterday\n")
    code, out = _cli(str(m), "--out", str(tmp_path / "o"))
    assert code == 16 and "line 2: date 'yesterday' is not an ISO date" in out


def test_cli_out_is_a_file_or_a_foreign_folder(make_geotiff, tmp_path: Path) -> None:
    make_geotiff(name="a.tif")
    (tmp_path / "f").mkdir()
    make_geotiff(name="f/a.tif")
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "a.tif"))
    assert code == 12 and "is a file" in out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "other"))
    assert code == 12 and "holds no rams batch" in out


def test_cli_bad_config_key(make_geotiff, tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    make_geotiff(name="f/a.tif")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  treshold: 0.5\n")
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "o"), "--config", str(cfg))
    assert code == 10 and "detect.treshold" in out


def test_cli_missing_model(make_geotiff, tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    make_geotiff(name="f/a.tif")
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "nomodel"))
    assert code == 11 and "not found" in out


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rams.detector.bundle import make_test_bundle

    path = tmp_path_factory.mktemp("model") / "tiny"
    make_test_bundle(path)
    return path


def test_cli_bad_sha_file(make_geotiff, tmp_path: Path, tiny_bundle: Path) -> None:
    (tmp_path / "f").mkdir()
    make_geotiff(name="f/a.tif")
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "o"), "--model", str(tiny_bundle),
                     "--sha", str(tmp_path / "sha.gpkg"))
    assert code == 3 and "vector file not found" in out


def test_cli_unreachable_scheduler(make_geotiff, tmp_path: Path, tiny_bundle: Path) -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "f").mkdir()
    make_geotiff(name="f/a.tif")
    code, out = _cli(str(tmp_path / "f"), "--out", str(tmp_path / "o"), "--model", str(tiny_bundle),
                     "--scheduler", f"tcp://127.0.0.1:{port}", "--connect-timeout", "1")
    assert code == 14 and f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in out


def test_cli_second_batch_on_a_locked_folder(make_geotiff, tmp_path: Path, tiny_bundle: Path) -> None:
    (tmp_path / "f").mkdir()
    make_geotiff(name="f/a.tif")
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    with batch_lock(out_dir):
        code, out = _cli(str(tmp_path / "f"), "--out", str(out_dir), "--model", str(tiny_bundle))
    assert code == 12 and "another rams batch" in out


def test_changed_config_is_named(tmp_path: Path) -> None:
    from rams.batch.status import config_diff

    assert config_diff("a: 1\nb:\n  c: 2\n  d: 3\n", "a: 1\nb:\n  c: 5\n  d: 3\ne: 0\n") == ["b.c", "e"]
    st = BatchStatus.load(tmp_path / STATUS_FILE)
    st.configs = {"cc": "threshold: 0.5\nbatch_size: 4\n", "c2": "threshold: 0.6\nbatch_size: 4\n"}
    st.start("F1", "/x/f1.tif", KEY, "new")
    st.finish("F1", "/out/F1.gpkg", {}, 1.0)
    new = FlightKey("sha256:aa", "bb" * 32, "c2", "dd", None)
    assert st.decide("F1", new, True) == ("run", "changed: detect_config (threshold)")


def _cov(x0: float, x1: float) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"area_m2": [(x1 - x0) * 10.0]}, geometry=[box(x0, 0.0, x1, 10.0)], crs=UTM)


def _quality(x0: float, x1: float, cls: str) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"cell_id": ["c1"], "quality": [cls]}, geometry=[box(x0, 0.0, x1, 10.0)], crs=UTM)


def test_survey_of_two_overlapping_flights() -> None:
    from rams.batch.fuse import FlightLayers, build_survey

    a = FlightLayers(Flight("A", Path("/d/a.tif"), "2024-05-01", "T1", "cam"),
                     _dets([(1, "pmn", 0.9, 15.0, 5.0)]), _cov(0.0, 20.0), _quality(0.0, 20.0, "adequate"))
    b = FlightLayers(Flight("B", Path("/d/b.tif")), _dets([(1, "pmn", 0.7, 15.1, 5.0), (2, "shell", 0.8, 25.0, 5.0)]),
                     _cov(10.0, 30.0), _quality(10.0, 30.0, "inadequate:blur"), info={"input_hash": "sha256:bb"})
    sha = gpd.GeoDataFrame({"sha_id": ["S1"]}, geometry=[box(-10.0, 0.0, 40.0, 10.0)], crs=UTM)
    res = build_survey([a, b], FuseConfig(), sha=sha)
    layers = res.layers
    assert len(layers["detections"]) == 2 and res.summary["seen_more_than_once"] == 1
    assert res.summary["analysed_ha"] == pytest.approx(300.0 / 1e4)  # the union, not the sum (400 m2)
    assert list(layers["flights"]["flight_id"]) == ["A", "B"]
    assert list(layers["flights"]["analysed_ha"]) == pytest.approx([0.02, 0.02])
    assert layers["flights"].loc[1, "input_hash"] == "sha256:bb" and layers["flights"].loc[0, "date"] == "2024-05-01"
    assert list(layers["coverage_quality"]["cell_id"]) == ["A/c1", "B/c1"]
    assert layers["hazard_polygons"]["n_items"].sum() == 2  # the item seen twice counts once
    # SHA: 10-20 m is adequate in A, blurred in B: adequate wins there; 20-30 m only blurred; 30-40 not imaged
    table = layers["sha_reduction"]
    assert table.loc[0, "noimg_m2"] == pytest.approx(200.0) and table.loc[0, "n_items"] == 2


def test_survey_without_detections() -> None:
    from rams.batch.fuse import FlightLayers, build_survey

    empty = _dets([(1, "pmn", 0.9, 0.0, 0.0)]).iloc[:0]
    res = build_survey([FlightLayers(Flight("A", Path("/d/a.tif")), empty, _cov(0.0, 20.0), None)])
    assert res.layers["detections"].empty and res.layers["hazard_polygons"].empty
    assert "coverage_quality" not in res.layers and res.summary["analysed_ha"] == pytest.approx(0.02)

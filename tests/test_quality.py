"""Coverage quality: metrics, classes, and the coverage_quality layer of real GeoTIFFs."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from shapely.geometry import box
from skimage import data as skdata
from skimage.measure import blur_effect
from typer.testing import CliRunner

from rams.classes import smallest_length_m
from rams.cli.main import app
from rams.errors import AOIError
from rams.layers import read_layer, read_metadata, write_gpkg
from rams.quality import QualityConfig, QualityMetrics, assess_ortho, assess_tile, classify, failed_checks
from tests.conftest import write_geotiff

UTM = "EPSG:32638"
X0, Y0 = 500000.0, 4400000.0
GSD = 0.01
H, W = 600, 1000  # 6 x 10 m at 1 cm


def ground(h: int, w: int) -> np.ndarray:
    """Real grass texture (scikit-image) coloured as dry brown ground, uint8 (3, h, w)."""
    g = np.tile(skdata.grass(), (h // 512 + 1, w // 512 + 1))[:h, :w].astype(np.float32)
    return np.stack([g * 0.8 + 30, g * 0.75 + 25, g * 0.6 + 20]).clip(0, 255).astype("uint8")


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Columns (m): 0-2 sharp, 2-4 blurred (sigma 3 px), 4-6 sharp, 6-8 black, 8-9 sharp, 9-10 alpha-masked."""
    rgb = ground(H, W).astype(np.float32)
    rgb[:, :, 200:400] = ndi.gaussian_filter(rgb[:, :, 200:400], (0, 3, 3))
    rgb[:, :, 600:800] = 0
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, 900:] = 0
    path = tmp_path_factory.mktemp("quality") / "scene.tif"
    return write_geotiff(path, height=H, width=W, gsd=GSD, data=rgb.astype("uint8"), alpha=True, alpha_mask=alpha,
                         origin=(X0, Y0 + H * GSD))


def cfg(**kw: object) -> QualityConfig:
    base: dict[str, object] = {"classes": ["tm62"], "cell_size_m": 1.0, "tile_size_px": 256}
    base.update(kw)
    return QualityConfig.model_validate(base)


def quality_at(layer: gpd.GeoDataFrame, x_m: float, y_m: float) -> str:
    hit = layer[layer.intersects(box(X0 + x_m - 1e-3, Y0 + y_m - 1e-3, X0 + x_m + 1e-3, Y0 + y_m + 1e-3))]
    classes = set(hit.quality)  # a probe on a cell edge touches two cells: they must agree
    assert len(classes) == 1, hit[["cell_id", "quality"]]
    return str(classes.pop())


def test_blur_index_matches_scikit_image_and_ignores_brightness() -> None:
    g = skdata.grass().astype(np.float32) / 255
    ones = np.ones_like(g, bool)
    for sigma in (0, 1, 2, 3):
        b = ndi.gaussian_filter(g, sigma) if sigma else g
        m = assess_tile(b[None], ones, 0.005, ("gray",), cfg())
        assert m.blur_index == pytest.approx(blur_effect(b), abs=2e-3)
        dark = assess_tile((0.3 * b)[None], ones, 0.005, ("gray",), cfg())
        assert dark.blur_index == pytest.approx(m.blur_index, abs=1e-4)
        assert dark.lap_var_norm == pytest.approx(m.lap_var_norm, rel=1e-3)
    sharp = assess_tile(g[None], ones, 0.005, ("gray",), cfg())
    blurred = assess_tile(ndi.gaussian_filter(g, 3)[None], ones, 0.005, ("gray",), cfg())
    assert classify(sharp, cfg()) == "adequate" and classify(blurred, cfg()) == "inadequate:blur"


def test_invalid_pixels_do_not_count() -> None:
    g = skdata.grass().astype(np.float32) / 255
    valid = np.ones_like(g, bool)
    valid[:, 256:] = False
    junk = g.copy()
    junk[:, 256:] = 0.0  # invalid pixels are zero in TileData
    m = assess_tile(junk[None], valid, 0.005, ("gray",), cfg())
    ref = assess_tile(g[:, :256][None], np.ones((512, 256), bool), 0.005, ("gray",), cfg())
    assert m.valid_fraction == pytest.approx(0.5) and m.dark_fraction == pytest.approx(ref.dark_fraction)
    assert m.blur_index == pytest.approx(ref.blur_index, abs=0.02)


def test_classify_precedence_and_reasons() -> None:
    c = cfg(vegetation_max_fraction=0.5)
    base: dict[str, Any] = dict(gsd_m=0.01, target_px=32.0, valid_fraction=1.0, n_valid_px=100, blur_index=0.3,
                                lap_var_norm=0.1, dark_fraction=0.0, saturated_fraction=0.0, vegetation_fraction=0.1,
                                mean_grey=0.4)
    assert classify(QualityMetrics(**base), c) == "adequate"
    bad = {**base, "blur_index": 0.6, "vegetation_fraction": 0.9, "saturated_fraction": 0.5}
    m = QualityMetrics(**bad)
    assert failed_checks(m, c) == ["exposure", "blur", "vegetation"]
    assert classify(m, c) == "inadequate:exposure"
    assert classify(QualityMetrics(**{**base, "target_px": 3.0}), c) == "inadequate:gsd"
    assert classify(QualityMetrics(**{**base, "valid_fraction": 0.1}), c) == "inadequate:partial"
    assert classify(QualityMetrics(**{**base, "blur_index": float("nan")}), c) == "inadequate:blur"
    none = QualityMetrics(**{**base, "n_valid_px": 0, "valid_fraction": 0.0})
    assert classify(none, c) == "not_imaged"
    assert classify(QualityMetrics(**{**base, "vegetation_fraction": 0.9}), cfg(vegetation_max_fraction=None)) \
        == "adequate"


def test_scene_strips_are_classed(scene: Path) -> None:
    """One tile, 1 m cells aligned with the strips."""
    res = assess_ortho(scene, cfg(tile_size_px=1024))
    layer = res.layer
    for x in (0.5, 1.0, 5.0, 5.5, 8.5):
        for y in (0.5, 2.5, 5.5):
            assert quality_at(layer, x, y) == "adequate", (x, y)
    for x in (2.5, 3.5):
        assert quality_at(layer, x, 2.5) == "inadequate:blur"
    for x in (6.5, 7.5):
        assert quality_at(layer, x, 2.5) == "inadequate:exposure"
    assert quality_at(layer, 9.5, 2.5) == "not_imaged"
    by = res.area_by_class_m2()
    assert by["inadequate:exposure"] == pytest.approx(2.0 * 6) and by["not_imaged"] == pytest.approx(1.0 * 6)
    blur = layer[layer.quality == "inadequate:blur"].union_all()
    # the blurred strip (2-4 m) is covered, widened on the safe side by at most a window plus a block
    assert blur.contains(box(X0 + 2, Y0, X0 + 4, Y0 + 6))
    assert blur.within(box(X0 + 2 - 1.28 - 0.5, Y0, X0 + 4 + 1.28 + 0.5, Y0 + 6))
    assert by["adequate"] == pytest.approx(60 - 12 - 6 - by["inadequate:blur"])
    assert layer.union_all().area == pytest.approx(60.0)  # the layer tiles the raster extent exactly
    assert layer.area.sum() == pytest.approx(60.0)  # ... without overlaps
    assert all(layer.is_valid)
    dark = layer[layer.quality == "inadequate:exposure"]
    assert (dark.dark_frac == 1.0).all() and dark.reasons.str.startswith("exposure").all()
    s = res.summary()
    assert s["adequate_m2"] == pytest.approx(by["adequate"]) and s["not_imaged_m2"] == pytest.approx(6.0)


def test_scene_over_several_tiles(scene: Path) -> None:
    """Tiles of 256 px: cells follow the tile cores, the strips' middles keep their class, nothing is lost."""
    res = assess_ortho(scene, cfg(tile_size_px=256))
    assert res.tiles > 4
    layer = res.layer
    for x, expected in ((0.5, "adequate"), (3.0, "inadequate:blur"), (5.1, "adequate"),
                        (7.0, "inadequate:exposure"), (9.6, "not_imaged")):
        for y in (0.7, 3.3, 5.3):
            assert quality_at(layer, x, y) == expected, (x, y)
    assert layer[layer.quality == "inadequate:blur"].union_all().contains(box(X0 + 2, Y0, X0 + 4, Y0 + 6))
    assert layer[layer.quality == "inadequate:exposure"].union_all().contains(box(X0 + 6, Y0, X0 + 8, Y0 + 6))
    assert layer.union_all().area == pytest.approx(60.0)
    assert layer.area.sum() == pytest.approx(60.0)  # no overlaps
    assert res.area_by_class_m2()["not_imaged"] == pytest.approx(6.0)


@pytest.mark.parametrize("workers", ["1", "3"])
def test_same_layer_for_any_worker_count(scene: Path, workers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles are filtered in a thread pool but judged in tile order: the layer does not depend on the workers."""
    monkeypatch.setenv("RAMS_QUALITY_WORKERS", "2")
    ref = assess_ortho(scene, cfg(tile_size_px=256)).layer
    monkeypatch.setenv("RAMS_QUALITY_WORKERS", workers)
    got = assess_ortho(scene, cfg(tile_size_px=256)).layer
    assert len(got) == len(ref) > 4
    assert list(got.cell_id) == list(ref.cell_id)
    assert list(got.quality) == list(ref.quality)
    assert np.array_equal(got.blur_idx.to_numpy(), ref.blur_idx.to_numpy(), equal_nan=True)
    assert all(a.equals_exact(b, 0.0) for a, b in zip(got.geometry, ref.geometry, strict=True))


def test_quality_workers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from rams.errors import InputError
    from rams.quality import quality_workers

    monkeypatch.setenv("RAMS_QUALITY_WORKERS", "3")
    assert quality_workers() == 3
    monkeypatch.delenv("RAMS_QUALITY_WORKERS")
    assert 1 <= quality_workers() <= 4
    for bad in ("0", "two"):
        monkeypatch.setenv("RAMS_QUALITY_WORKERS", bad)
        with pytest.raises(InputError, match="RAMS_QUALITY_WORKERS"):
            quality_workers()


def test_small_dark_and_green_patches_are_carved_out_of_adequate_cells(make_geotiff: Callable[..., Path]) -> None:
    """A 0.5 x 1 m shadow and a 1 x 0.5 m green patch in 2 m cells: too small to fail a cell, still never adequate."""
    rgb = ground(200, 200)
    rgb[:, 50:100, 100:200] = 3  # shadow (near black; 0 in every band would be a collar): rows 0.5-1.0 m, cols 1-2 m
    rgb[0, 150:200, 0:100] = (rgb[0, 150:200, 0:100] * 0.4).astype("uint8")
    rgb[2, 150:200, 0:100] = (rgb[2, 150:200, 0:100] * 0.3).astype("uint8")
    p = make_geotiff(height=200, width=200, gsd=0.01, data=rgb)
    res = assess_ortho(p, cfg(cell_size_m=2.0, tile_size_px=256))
    by = res.area_by_class_m2()
    assert by == pytest.approx({"adequate": 4.0 - 0.5 - 0.5, "inadequate:exposure": 0.5, "inadequate:vegetation": 0.5})
    shadow = res.layer[res.layer.quality == "inadequate:exposure"].iloc[0]
    assert shadow.dark_frac == 1.0 and shadow.reasons == "exposure"
    assert shadow.geometry.equals(box(X0 + 1, 4400000 - 1.0, X0 + 2, 4400000 - 0.5))
    off = assess_ortho(p, cfg(cell_size_m=2.0, tile_size_px=256, patch_block_m=None)).area_by_class_m2()
    assert off == pytest.approx({"adequate": 4.0})  # what dilution would have said


def test_half_blurred_cell_has_its_blurred_half_carved_out(make_geotiff: Callable[..., Path]) -> None:
    """One 2.56 m cell, right half blurred: as a whole it reads sharp, its blurred 128 px blocks do not."""
    rgb = ground(256, 256).astype(np.float32)
    rgb[:, :, 128:] = ndi.gaussian_filter(rgb[:, :, 128:], (0, 3, 3))
    p = make_geotiff(height=256, width=256, gsd=0.01, data=rgb.astype("uint8"))
    whole = assess_ortho(p, cfg(cell_size_m=2.56, blur_block_px=None))
    assert whole.area_by_class_m2() == pytest.approx({"adequate": 2.56**2})  # the dilution this guards against
    res = assess_ortho(p, cfg(cell_size_m=2.56))
    blurred = res.layer[res.layer.quality == "inadequate:blur"].union_all()
    # the whole blurred half is carved out, widened on the safe side by less than one window (1.28 m)
    assert blurred.contains(box(X0 + 1.28, 4400000 - 2.56, X0 + 2.56, 4400000))
    assert blurred.within(box(X0 + 0.5, 4400000 - 2.56, X0 + 2.56, 4400000))
    assert res.area_by_class_m2()["adequate"] >= 0.5 * 2.56**2 * 0.39


def test_gsd_too_coarse_for_smallest_class(make_geotiff: Callable[..., Path]) -> None:
    p = make_geotiff(height=200, width=200, gsd=0.05, data=ground(200, 200))
    layer = assess_ortho(p, QualityConfig(cell_size_m=5.0)).layer  # all classes: ShOAB-0.5, 6 cm = 1.2 px
    assert set(layer.quality) == {"inadequate:gsd"}
    assert layer.target_px.iloc[0] == pytest.approx(smallest_length_m() / 0.05) == pytest.approx(1.2)
    ok = assess_ortho(p, QualityConfig(cell_size_m=5.0, classes=["shell"])).layer  # 56 cm = 11 px
    assert set(ok.quality) == {"adequate"}


def test_analysis_gsd_coarser_than_native_counts(make_geotiff: Callable[..., Path]) -> None:
    p = make_geotiff(height=400, width=400, gsd=0.01, data=ground(400, 400))
    res = assess_ortho(p, QualityConfig(cell_size_m=2.0, classes=["pom2"], analysis_gsd_m=0.02))
    assert res.analysis_gsd_m == pytest.approx(0.02) and res.native_gsd_m == pytest.approx(0.01)
    assert set(res.layer.quality) == {"inadequate:gsd"}  # 6.3 cm at 2 cm = 3 px < 8


def test_vegetation_and_partial_cells(make_geotiff: Callable[..., Path]) -> None:
    rgb = ground(400, 400)
    rgb[0, :, :200] = (rgb[0, :, :200] * 0.4).astype("uint8")  # strong green: ExG well above 0.1
    rgb[2, :, :200] = (rgb[2, :, :200] * 0.3).astype("uint8")
    alpha = np.full((400, 400), 255, np.uint8)
    alpha[:, 210:] = 0  # the cell from 2 to 4 m is 5 % imaged
    p = make_geotiff(height=400, width=400, gsd=0.01, data=rgb, alpha=True, alpha_mask=alpha)
    layer = assess_ortho(p, cfg(cell_size_m=2.0)).layer
    top = 4400000.0
    for y in (top - 0.5, top - 3.5):
        hit = layer[layer.intersects(box(X0 + 0.5, y, X0 + 0.51, y + 0.01))]
        assert list(hit.quality) == ["inadequate:vegetation"]
        hit = layer[layer.intersects(box(X0 + 2.05, y, X0 + 2.06, y + 0.01))]
        assert list(hit.quality) == ["inadequate:partial"]
    partial = layer[layer.quality == "inadequate:partial"]
    assert partial.area.sum() == pytest.approx(0.1 * 4.0)
    assert layer[layer.quality == "not_imaged"].area.sum() == pytest.approx(1.9 * 4.0)


def test_thermal_single_band_has_no_vegetation_check(make_geotiff: Callable[..., Path]) -> None:
    g = skdata.grass()[None, :300, :300].astype("uint16") * 200
    p = make_geotiff(height=300, width=300, bands=1, dtype="uint16", gsd=0.01, data=g)
    layer = assess_ortho(p, cfg(cell_size_m=3.0)).layer
    assert set(layer.quality) == {"adequate"} and layer.veg_frac.isna().all()


def test_geographic_mosaic_is_judged_in_utm(make_geotiff: Callable[..., Path]) -> None:
    from affine import Affine

    t = Affine(1e-7, 0, 45.0, 0, -1e-7, 39.75)  # about 1 cm
    p = make_geotiff(height=300, width=300, crs="EPSG:4326", transform=t, data=ground(300, 300))
    res = assess_ortho(p, cfg(cell_size_m=1.5))
    assert res.layer.crs.to_epsg() == 32638
    assert set(res.layer.quality) <= {"adequate", "not_imaged", "inadequate:partial"}
    assert (res.layer.quality == "adequate").any()


def test_aoi_clips_and_reports_unimaged_ground(scene: Path) -> None:
    aoi = gpd.GeoDataFrame(geometry=[box(X0 + 5, Y0 + 1, X0 + 12, Y0 + 5)], crs=UTM)  # 2 m past the raster
    res = assess_ortho(scene, cfg(tile_size_px=1024), aoi=aoi)
    by = res.area_by_class_m2()
    assert sum(by.values()) == pytest.approx(7 * 4)
    assert by["not_imaged"] == pytest.approx(3 * 4)  # 1 m alpha-masked + 2 m beyond the raster
    assert by["inadequate:exposure"] == pytest.approx(2 * 4)
    far = gpd.GeoDataFrame(geometry=[box(X0 + 500, Y0, X0 + 510, Y0 + 10)], crs=UTM)
    with pytest.raises(AOIError, match="does not overlap"):
        assess_ortho(scene, cfg(), aoi=far)


def _same_layer(got: gpd.GeoDataFrame, ref: gpd.GeoDataFrame) -> None:
    """Row for row the same cells; the dissolved not-imaged parts the same ground (unions made in another order
    may differ in vertex order)."""
    assert list(got.columns) == list(ref.columns)
    assert list(got.cell_id) == list(ref.cell_id) and list(got.quality) == list(ref.quality)
    for col in ("blur_idx", "valid_frac", "dark_frac", "area_m2"):
        assert np.allclose(got[col].to_numpy(float), ref[col].to_numpy(float), equal_nan=True, rtol=0, atol=1e-9)
    for a, b, q in zip(got.geometry, ref.geometry, ref.quality, strict=True):
        if q == "not_imaged":
            assert a.symmetric_difference(b).area < 1e-9
        else:
            assert a.equals_exact(b, 1e-9)


@pytest.mark.parametrize("chunk_rows", [1, 7])
def test_streamed_chunks_make_the_same_layer(scene: Path, chunk_rows: int) -> None:
    """With a sink the layer leaves in chunks (bounded memory); put together they are the held layer, and the
    summary is the same."""
    aoi = gpd.GeoDataFrame(geometry=[box(X0 - 1, Y0 + 0.5, X0 + 12, Y0 + 5.5)], crs=UTM)  # past both raster edges
    ref = assess_ortho(scene, cfg(tile_size_px=256), aoi=aoi)
    chunks: list[gpd.GeoDataFrame] = []
    got = assess_ortho(scene, cfg(tile_size_px=256), aoi=aoi, sink=chunks.append, chunk_rows=chunk_rows)
    assert got.layer is None
    with pytest.raises(RuntimeError, match="streamed"):
        got.require_layer()
    layer = ref.require_layer()
    # flushed after the tile that reaches chunk_rows (a tile's cells stay together), then the not-imaged parts
    tiles = len(set(layer.tile_id) - {""})
    assert len(chunks) >= min(tiles, len(layer) // (chunk_rows + 12)) > 3
    assert max(len(c) for c in chunks) < len(layer) / 3
    _same_layer(gpd.GeoDataFrame(pd.concat(chunks, ignore_index=True), crs=layer.crs), layer)
    assert got.rows == ref.rows == len(layer)
    assert got.area_by_class_m2().keys() == ref.area_by_class_m2().keys()
    for k, v in ref.area_by_class_m2().items():
        assert got.area_by_class_m2()[k] == pytest.approx(v, abs=1e-6)
    assert sum(ref.area_by_class_m2().values()) == pytest.approx(13 * 5)
    assert ref.area_by_class_m2()["not_imaged"] == pytest.approx((1 + 1 + 2) * 5)  # west, alpha, east


def test_stripes_give_the_row_major_layer(scene: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles run down one-column stripes (a tiny stripe budget: the block cache then holds one stripe's row of
    blocks, not the mosaic's) or row by row: the same cells with the same values, only in another order."""
    import rams.quality as quality_mod

    monkeypatch.setattr(quality_mod, "STRIPE_CACHE_MB", 10**6)
    rows = assess_ortho(scene, cfg(tile_size_px=256)).require_layer()
    monkeypatch.setattr(quality_mod, "STRIPE_CACHE_MB", 0)
    stripes = assess_ortho(scene, cfg(tile_size_px=256)).require_layer()
    assert list(stripes.cell_id) != list(rows.cell_id)  # another order: down the first column of tiles first
    cols = [int(t.split("c")[1]) for t in stripes.tile_id if t]
    assert cols == sorted(cols)
    key = "cell_id"
    _same_layer(stripes.sort_values(key, kind="stable").reset_index(drop=True),
                rows.sort_values(key, kind="stable").reset_index(drop=True))


def test_quality_file_streams_to_the_geopackage(scene: Path, tmp_path: Path) -> None:
    """``quality_file`` writes the layer chunk by chunk into its temporary file: same layer as held in memory,
    nothing under the final name before it is complete, and an existing file refused before the long run."""
    from rams.errors import OutputError
    from rams.quality import quality_file

    ref = assess_ortho(scene, cfg(tile_size_px=256)).require_layer()
    out = tmp_path / "q.gpkg"
    res = quality_file(scene, out, cfg(tile_size_px=256), chunk_rows=5)
    assert res.layer is None and res.rows == len(ref)
    _same_layer(read_layer(out, "coverage_quality"), ref)
    assert read_metadata(out)["quality.summary"].startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["q.gpkg"]  # no temporary file left
    calls: list[int] = []
    with pytest.raises(OutputError, match="already exists"):
        quality_file(scene, out, cfg(tile_size_px=256), progress=lambda done, total: calls.append(done))
    assert calls == []  # refused before any tile was read


def test_cli_quality_writes_styled_layer(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.gpkg"
    y = tmp_path / "c.yaml"
    y.write_text("quality:\n  classes: [tm62]\n  cell_size_m: 1.0\n  tile_size_px: 256\n")
    r = CliRunner().invoke(app, ["quality", str(scene), "--out", str(out), "--config", str(y)])
    assert r.exit_code == 0, r.output
    assert "inadequate:blur" in r.stdout and "not_imaged" in r.stdout
    layer = read_layer(out, "coverage_quality")
    assert {"adequate", "inadequate:blur", "inadequate:exposure", "not_imaged"} == set(layer.quality)
    assert layer.crs.to_epsg() == 32638
    meta = read_metadata(out)
    assert "quality.config" in meta and str(scene) == meta["quality.ortho"]
    con = sqlite3.connect(out)
    (qml,) = con.execute("SELECT styleQML FROM layer_styles WHERE f_table_name='coverage_quality'").fetchone()
    con.close()
    assert 'attr="quality"' in qml and 'value="not_imaged"' in qml


def test_cli_quality_add_to_result(scene: Path, tmp_path: Path) -> None:
    result = tmp_path / "result.gpkg"
    dets = gpd.GeoDataFrame({"det_id": ["a"], "label": ["pmn"], "score": [0.9]},
                            geometry=[box(X0 + 1, Y0 + 1, X0 + 1.1, Y0 + 1.1)], crs=UTM)
    write_gpkg(result, {"detections": dets})
    out = tmp_path / "rq.gpkg"
    r = CliRunner().invoke(app, ["quality", str(scene), "--out", str(out), "--add-to", str(result),
                                 "--classes", "tm62", "--cell-size", "2"])
    assert r.exit_code == 0, r.output
    assert len(read_layer(out, "detections")) == 1 and len(read_layer(out, "coverage_quality")) > 0
    from rams.provenance import dataset_hash

    assert read_metadata(out)["quality.input_hash"] == dataset_hash(scene)


def test_quality_of_another_mosaic_is_never_added_to_a_result(scene: Path, tmp_path: Path) -> None:
    """Detections of one flight with the quality of another would let sharp imagery vouch for ground the detector
    saw blurred (or not at all): refused before the pass, and by rams reduce when the two come as separate files."""
    from rams.provenance import dataset_hash

    result = tmp_path / "result.gpkg"
    dets = gpd.GeoDataFrame({"det_id": ["a"], "label": ["pmn"], "score": [0.9]},
                            geometry=[box(X0 + 1, Y0 + 1, X0 + 1.1, Y0 + 1.1)], crs=UTM)
    other = tmp_path / "other.tif"
    other.write_bytes(scene.read_bytes()[:-1] + b"\x01")  # another export: one byte differs
    write_gpkg(result, {"detections": dets}, metadata={"input_hash": dataset_hash(other), "input_path": str(other)})
    out = tmp_path / "rq.gpkg"
    r = CliRunner().invoke(app, ["quality", str(scene), "--out", str(out), "--add-to", str(result),
                                 "--classes", "tm62", "--cell-size", "2"])
    assert r.exit_code == 16, r.output
    assert "detections come from" in r.output and "on the orthomosaic the detector analysed" in r.output
    assert not out.exists()
    # the same pairing made by hand for rams reduce: quality judged on scene, detections of other
    q = tmp_path / "q.gpkg"
    assert CliRunner().invoke(app, ["quality", str(scene), "--out", str(q), "--classes", "tm62",
                                    "--cell-size", "2"]).exit_code == 0
    sha = tmp_path / "sha.gpkg"
    write_gpkg(sha, {"sha": gpd.GeoDataFrame({"sha_id": ["S1"]}, geometry=[box(X0, Y0, X0 + 4, Y0 + 4)], crs=UTM)})
    r = CliRunner().invoke(app, ["reduce", str(result), "--sha", str(sha), "--quality", str(q),
                                 "--out", str(tmp_path / "d.gpkg")])
    assert r.exit_code == 16 and "detections come from" in r.output, r.output
    # the detections of this very mosaic pair fine
    same = tmp_path / "same.gpkg"
    write_gpkg(same, {"detections": dets}, metadata={"input_hash": dataset_hash(scene), "input_path": str(scene)})
    r = CliRunner().invoke(app, ["reduce", str(same), "--sha", str(sha), "--quality", str(q),
                                 "--out", str(tmp_path / "d.gpkg")])
    assert r.exit_code == 0, r.output


def test_cli_quality_errors(scene: Path, tmp_path: Path, make_geotiff: Callable[..., Path]) -> None:
    runner = CliRunner()
    out = tmp_path / "q.gpkg"
    r = runner.invoke(app, ["quality", str(tmp_path / "none.tif"), "--out", str(out)])
    assert r.exit_code == 3 and "orthomosaic not found" in r.output
    r = runner.invoke(app, ["quality", str(scene), "--out", str(out), "--classes", "pmm"])
    assert r.exit_code == 10 and "pmm" in r.output
    aoi = tmp_path / "aoi.gpkg"
    write_gpkg(aoi, {"aoi": gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=UTM)})
    r = runner.invoke(app, ["quality", str(scene), "--out", str(out), "--aoi", str(aoi)])
    assert r.exit_code == 8 and "does not overlap" in r.output
    r = runner.invoke(app, ["quality", str(scene), "--out", str(out), "--aoi", str(aoi), "--aoi-layer", "x"])
    assert r.exit_code == 13 and "no layer 'x'" in r.output
    nodet = tmp_path / "nodet.gpkg"
    write_gpkg(nodet, {"aoi": gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=UTM)})
    r = runner.invoke(app, ["quality", str(scene), "--out", str(out), "--add-to", str(nodet)])
    assert r.exit_code == 13 and "'detections'" in r.output
    plain = make_geotiff("nocrs.tif", crs=None)
    r = runner.invoke(app, ["quality", str(plain), "--out", str(out)])
    assert r.exit_code == 6 and "coordinate reference system" in r.output
    assert not out.exists()


def test_dim_uint16_values_are_named_by_quality(tmp_path: Path) -> None:
    """12-bit values in a uint16 file that does not say so read nearly black against 0-65535: quality refuses them
    with the fix (as `rams detect` does; `rams info` names it), and warns about 14-bit values."""
    import json

    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    from rams.layers import read_metadata

    def write(path: Path, top: int) -> Path:
        data = np.random.default_rng(3).integers(100, top, (3, 600, 600)).astype(np.uint16)
        with rasterio.open(path, "w", driver="GTiff", width=600, height=600, count=3, dtype="uint16",
                           crs="EPSG:32638", transform=from_origin(500000, 4400000, 0.01, 0.01)) as dst:  # fmt: skip
            dst.write(data)
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        return path

    # values filling 1/16 of the range: refused with the fix, nothing written
    dim = write(tmp_path / "dim.tif", 4000)
    r = CliRunner().invoke(app, ["quality", str(dim), "--out", str(tmp_path / "q.gpkg")])
    assert r.exit_code == 7, r.output
    assert "nearly black" in r.output and "--value-range 0,4095" in r.output
    assert not (tmp_path / "q.gpkg").exists()
    r = CliRunner().invoke(app, ["quality", str(dim), "--out", str(tmp_path / "q.gpkg"), "--value-range", "0,4095"])
    assert r.exit_code == 0, r.output
    assert "nearly black" not in r.output
    # under a quarter of it: warned about, with the fix, and recorded
    mid = write(tmp_path / "mid.tif", 12000)
    r = CliRunner().invoke(app, ["quality", str(mid), "--out", str(tmp_path / "q2.gpkg")])
    assert r.exit_code == 0, r.output
    assert "warning" in r.output and "--value-range 0,16383" in r.output
    summary = json.loads(read_metadata(tmp_path / "q2.gpkg")["quality.summary"])
    assert any("read.value_range: [0, 16383]" in w for w in summary["warnings"])
    full = write(tmp_path / "full.tif", 65000)
    res = assess_ortho(full, QualityConfig())
    assert res.warnings == [] and res.summary()["warnings"] == []


def test_skip_damaged_classes_a_damaged_block_not_imaged_with_a_warning(tmp_path: Path) -> None:
    """A block that does not decode stops `rams quality` (one-line error naming --skip-damaged); with
    read.skip_damaged it is `not_imaged` (never judged adequate) and the warning gives its area."""
    from rams.errors import CorruptRasterError
    from tests.test_cli_info import _damaged_in_the_middle

    data = ground(512, 512)
    p = _damaged_in_the_middle(write_geotiff(tmp_path / "d.tif", height=512, width=512, blocksize=128, data=data),
                               block=(1, 2))
    with pytest.raises(CorruptRasterError, match="--skip-damaged"):
        assess_ortho(p, cfg())
    res = assess_ortho(p, cfg(read={"skip_damaged": True}))
    hole = box(500000.0 + 1.28, 4400000.0 - 3.84, 500000.0 + 2.56, 4400000.0 - 2.56)
    layer = res.layer
    assert layer is not None
    judged = layer[layer["quality"] != "not_imaged"].geometry.union_all()
    assert judged.intersection(hole).area == pytest.approx(0.0, abs=1e-9)
    assert layer[layer["quality"] == "not_imaged"].geometry.union_all().contains(hole.buffer(-1e-6))
    assert any("1.6 m2 could not be read" in w for w in res.warnings)


def test_threat_classes_set_the_blur_limit_and_the_grey_floor() -> None:
    """The strictest limit of the classes a run judges for applies; classes without one fall back to blur_max."""
    from rams.classes import CLASS_NAMES

    off = {"class_blur_max": dict.fromkeys(CLASS_NAMES, 1.0), "class_min_grey": dict.fromkeys(CLASS_NAMES, 0.0)}
    limits = {"class_blur_max": {**off["class_blur_max"], "pmn": 0.38, "mortar": 0.41},
              "class_min_grey": {**off["class_min_grey"], "pmn": 0.12, "shell": 0.06}}  # fmt: skip
    assert cfg(classes=["tm62"], **limits).blur_limit() == 0.45
    assert cfg(classes=["tm62"], **limits).grey_floor() == 0.0
    assert cfg(classes=["tm62", "mortar"], **limits).blur_limit() == 0.41
    assert cfg(classes=["shell", "pmn"], **limits).blur_limit() == 0.38
    assert cfg(classes=["shell", "pmn"], **limits).grey_floor() == 0.12
    assert cfg(classes=None, **limits).blur_limit() == 0.38  # all classes: the strictest
    assert cfg(classes=["mortar"], blur_max=0.35, **limits).blur_limit() == 0.35  # never above blur_max
    base: dict[str, Any] = dict(gsd_m=0.01, target_px=32.0, valid_fraction=1.0, n_valid_px=100, blur_index=0.40,
                                lap_var_norm=0.1, dark_fraction=0.0, saturated_fraction=0.0, vegetation_fraction=0.1,
                                mean_grey=0.09)
    m = QualityMetrics(**base)
    assert classify(m, cfg(classes=["tm62"], **limits)) == "adequate"
    assert failed_checks(m, cfg(classes=["pmn"], **limits)) == ["exposure", "blur"]
    assert classify(m, cfg(classes=["mortar"], **limits)) == "adequate"  # 0.40 <= 0.41, no grey floor
    # a preset naming one class keeps the shipped limits of the others (tightening one never loosens another)
    shipped = QualityConfig()
    one = cfg(class_blur_max={"pmn": 0.30}, class_min_grey={"tm62": 0.5})
    assert one.class_blur_max == {**shipped.class_blur_max, "pmn": 0.30}
    assert one.class_min_grey == {**shipped.class_min_grey, "tm62": 0.5}
    assert cfg(classes=["mortar"], class_blur_max={"pmn": 0.30}).blur_limit() == shipped.class_blur_max["mortar"]
    with pytest.raises(ValueError, match="unknown class"):
        cfg(class_blur_max={"pnm": 0.4})
    with pytest.raises(ValueError, match="0-1"):
        cfg(class_min_grey={"pmn": 12})


def test_shipped_limits_are_no_looser_than_the_general_ones() -> None:
    from rams.classes import CLASS_NAMES

    c = QualityConfig()
    assert set(c.class_blur_max) <= set(CLASS_NAMES) and set(c.class_min_grey) <= set(CLASS_NAMES)
    assert all(v <= c.blur_max for v in c.class_blur_max.values())
    assert c.blur_limit() == min([c.blur_max, *c.class_blur_max.values()])
    assert c.grey_floor() == max([0.0, *c.class_min_grey.values()])


def test_underexposed_ground_is_inadequate_for_classes_with_a_grey_floor(make_geotiff: Callable[..., Path]) -> None:
    """Ground darkened to a fifth keeps nearly all its pixels above dark_level: the pixel rule calls it adequate,
    the grey floor of a class that the detector loses there does not; a dim 0.5 x 1 m patch is carved out."""
    rgb = ground(200, 400).astype(np.float32)
    rgb[:, :, 200:] *= 0.2  # right half (2-4 m) underexposed
    rgb[:, 50:100, 100:200] *= 0.2  # a dim patch in the left half: rows 0.5-1.0 m, cols 1-2 m
    p = make_geotiff(height=200, width=400, gsd=0.01, data=rgb.clip(0, 255).astype("uint8"))
    limits = {"class_min_grey": {"pmn": 0.12}}
    plain = assess_ortho(p, cfg(classes=["tm62"], cell_size_m=2.0, tile_size_px=256, **limits))
    dark = plain.layer[plain.layer.intersects(box(X0 + 3, 4400000 - 1.5, X0 + 3.01, 4400000 - 1.49))]
    assert (dark.dark_frac < 0.25).all() and (dark.mean_grey < 0.12).all()
    assert plain.area_by_class_m2() == pytest.approx({"adequate": 8.0})  # tm62: no floor
    pmn = assess_ortho(p, cfg(classes=["pmn"], cell_size_m=2.0, tile_size_px=256, **limits))
    by = pmn.area_by_class_m2()
    assert by == pytest.approx({"adequate": 4.0 - 0.5, "inadequate:exposure": 4.0 + 0.5})
    patch = pmn.layer[(pmn.layer.quality == "inadequate:exposure") & (pmn.layer.area < 1.0)].iloc[0]
    assert patch.geometry.equals(box(X0 + 1, 4400000 - 1.0, X0 + 2, 4400000 - 0.5)) and patch.mean_grey < 0.12


def test_grey_floor_applies_to_rgb_not_to_thermal(make_geotiff: Callable[..., Path]) -> None:
    """The same dim values: an RGB mosaic is under-exposed for PMN, a thermal band's level is a temperature."""
    g = skdata.grass()[:300, :300].astype("uint16") * 30 + 6000  # grey 0.09-0.21 of the uint16 range
    thermal = make_geotiff(height=300, width=300, bands=1, dtype="uint16", gsd=0.01, data=g[None])
    rgb = make_geotiff(height=300, width=300, bands=3, dtype="uint16", gsd=0.01, data=np.stack([g, g, g]))
    limits = {"class_min_grey": {"pmn": 0.30}}
    t = assess_ortho(thermal, cfg(classes=["pmn"], cell_size_m=3.0, **limits)).layer
    assert set(t.quality) == {"adequate"} and (t.mean_grey < 0.30).all() and (t.dark_frac == 0).all()
    c = assess_ortho(rgb, cfg(classes=["pmn"], cell_size_m=3.0, **limits)).layer
    assert set(c.quality) == {"inadequate:exposure"}

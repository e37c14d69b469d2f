"""Write a synthetic scene to disk: ``ortho.tif`` block by block, ``truth.gpkg`` and ``scene.json``.

The only synth module that touches files (and imports rasterio/geopandas). The output folder is written
under a temporary name and renamed on success (:func:`rams.outputs.atomic_path`), so a failed or
interrupted run leaves nothing under the final name. Memory is bounded by one row band of blocks
(``block_px`` rows x scene width x bands bytes, plus the render working set of one block), never by the
scene size: gigapixel mosaics are fine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rams import __version__
from rams.errors import ConfigError, OutputError
from rams.outputs import atomic_path
from rams.synth.objects import Sprite
from rams.synth.scene import Scene, SynthConfig, build_scene, render_window

log = logging.getLogger(__name__)

ORTHO_NAME = "ortho.tif"
TRUTH_NAME = "truth.gpkg"
SCENE_NAME = "scene.json"


@dataclass(frozen=True)
class SynthResult:
    """What :func:`write_scene` wrote, and how fast."""

    out_dir: Path
    width_px: int
    height_px: int
    n_targets: int
    n_confusers: int
    valid_fraction: float
    seconds: float

    @property
    def megapixels(self) -> float:
        return self.width_px * self.height_px / 1e6

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "width_px": self.width_px,
            "height_px": self.height_px,
            "megapixels": round(self.megapixels, 3),
            "n_targets": self.n_targets,
            "n_confusers": self.n_confusers,
            "valid_fraction": round(self.valid_fraction, 4),
            "seconds": round(self.seconds, 2),
        }


def _crs(cfg: SynthConfig) -> Any:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        crs = CRS.from_user_input(cfg.crs)
    except CRSError as err:
        raise ConfigError(f"crs {cfg.crs!r} is not a CRS GDAL knows; give e.g. EPSG:32638") from err
    if not crs.is_projected:
        raise ConfigError(f"crs {cfg.crs!r} is not projected; synthetic scenes need a metric CRS such as UTM")
    return crs


def _transform(cfg: SynthConfig) -> Any:
    from affine import Affine

    return Affine(cfg.gsd_m, 0.0, cfg.origin_e, 0.0, -cfg.gsd_m, cfg.origin_n)


def write_scene(
    cfg: SynthConfig,
    out_dir: Path,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> SynthResult:
    """Build the scene of ``cfg`` and write ``out_dir/{ortho.tif, truth.gpkg, scene.json}`` atomically.

    ``progress(done_rows, total_rows)`` is called after each row band. ``workers`` > 1 renders blocks in
    that many processes; the files are byte-identical whatever the number of workers.
    """
    if workers < 1:
        raise ConfigError(f"workers={workers} must be >= 1")
    t0 = time.perf_counter()
    crs = _crs(cfg)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir} exists and is a file; give a folder path for the scene")
    scene = build_scene(cfg)
    with atomic_path(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        valid_px = write_ortho(scene, cfg, tmp / ORTHO_NAME, crs, progress, workers)
        write_truth(scene, cfg, tmp / TRUTH_NAME, crs)
        (tmp / SCENE_NAME).write_text(json.dumps(scene_record(scene, cfg), indent=2, sort_keys=True) + "\n")
    dt = time.perf_counter() - t0
    return SynthResult(
        out_dir=out_dir,
        width_px=scene.width_px,
        height_px=scene.height_px,
        n_targets=len(scene.targets),
        n_confusers=len(scene.confusers),
        valid_fraction=valid_px / (scene.width_px * scene.height_px),
        seconds=dt,
    )


def write_ortho(
    scene: Scene,
    cfg: SynthConfig,
    path: Path,
    crs: Any,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> int:
    """Render and write the mosaic one row band of blocks at a time; returns the number of valid pixels.

    Blocks are rendered in order (in ``workers`` processes when > 1) and written row band by row band.
    """
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.windows import Window

    b = cfg.block_px
    bands = cfg.bands
    count = {"rgb": 3, "rgba": 4, "thermal": 1}[bands]
    profile: dict[str, Any] = dict(
        driver="GTiff",
        width=scene.width_px,
        height=scene.height_px,
        count=count,
        dtype="uint8",
        crs=crs,
        transform=_transform(cfg),
        compress="deflate",
        predictor=2,
        BIGTIFF="YES" if cfg.bigtiff else "IF_SAFER",
    )
    if cfg.tiled:
        profile.update(tiled=True, blockxsize=b, blockysize=b)
    else:
        profile.update(tiled=False, blockysize=min(16, scene.height_px))
    if bands == "rgba":
        profile.update(photometric="RGB", alpha="YES")
    else:
        profile["nodata"] = 0
    if bands == "rgb":
        profile["photometric"] = "RGB"
    valid_total = 0
    with rasterio.Env(GDAL_CACHEMAX=128), rasterio.open(path, "w", **profile) as dst:
        if bands == "rgba":
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        elif bands == "rgb":
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        else:
            dst.colorinterp = [ColorInterp.gray]
            dst.update_tags(1, UNITS="uint8 DN; deg C = T_MIN_C + DN / 255 * (T_MAX_C - T_MIN_C); 0 = nodata",
                            T_MIN_C=f"{scene.thermal.t_min:.3f}", T_MAX_C=f"{scene.thermal.t_max:.3f}")
        dst.update_tags(RAMS_SYNTH_SEED=str(cfg.seed), RAMS_VERSION=__version__)
        blocks = scene_blocks(scene, b)
        with _block_renderer(scene, cfg, workers) as render:
            band: np.ndarray | None = None
            for (r0, c0, h, w), (image, valid) in zip(blocks, render(blocks), strict=True):
                if c0 == 0:
                    band = np.zeros((count, h, scene.width_px), np.uint8)
                assert band is not None
                band[: image.shape[0], :, c0:c0 + w] = image
                if bands == "rgba":
                    band[3, :, c0:c0 + w] = np.where(valid, 255, 0)
                valid_total += int(valid.sum())
                if c0 + w == scene.width_px:
                    dst.write(band, window=Window(0, r0, scene.width_px, h))
                    if progress is not None:
                        progress(r0 + h, scene.height_px)
    return valid_total


def scene_blocks(scene: Scene, block_px: int) -> list[tuple[int, int, int, int]]:
    """``(row, col, height, width)`` of the blocks a scene is rendered in, row by row (JPEG artefacts follow
    each block's grid, so the blocks fix the pixels)."""
    b = block_px
    return [
        (r0, c0, min(b, scene.height_px - r0), min(b, scene.width_px - c0))
        for r0 in range(0, scene.height_px, b)
        for c0 in range(0, scene.width_px, b)
    ]


def render_scene(scene: Scene, cfg: SynthConfig, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The whole scene in memory: ``image`` uint8 (bands, rows, cols) and ``valid`` bool, rendered in the blocks
    :func:`write_ortho` renders, so the pixels equal ``ortho.tif``'s image bands and ``valid`` its alpha (or
    nodata) mask. No GDAL. Memory is the whole scene: for small scenes (validation sets), not mosaics."""
    image = np.zeros((scene.n_bands, scene.height_px, scene.width_px), np.uint8)
    valid = np.zeros((scene.height_px, scene.width_px), bool)
    blocks = scene_blocks(scene, cfg.block_px)
    with _block_renderer(scene, cfg, workers) as render:
        for (r0, c0, h, w), (im, va) in zip(blocks, render(blocks), strict=True):
            image[:, r0 : r0 + h, c0 : c0 + w] = im
            valid[r0 : r0 + h, c0 : c0 + w] = va
    return image, valid


_WORKER_SCENE: Scene | None = None


def _init_worker(cfg_json: str | None) -> None:
    global _WORKER_SCENE
    if cfg_json is not None:  # spawned worker: rebuild the (deterministic) scene from its config
        _WORKER_SCENE = build_scene(SynthConfig.model_validate_json(cfg_json))


def _render_block(block: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    assert _WORKER_SCENE is not None
    out = render_window(_WORKER_SCENE, *block)
    return out.image, out.valid


@contextlib.contextmanager
def _block_renderer(
    scene: Scene, cfg: SynthConfig, workers: int
) -> Iterator[Callable[[list[tuple[int, int, int, int]]], Iterator[tuple[np.ndarray, np.ndarray]]]]:
    """A function mapping blocks to rendered (image, valid), in order, in this process or in a pool."""
    global _WORKER_SCENE
    if workers <= 1:
        yield lambda blocks: ((o.image, o.valid) for o in (render_window(scene, *bl) for bl in blocks))
        return
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    _WORKER_SCENE = scene  # inherited by forked workers
    cfg_json = None if ctx.get_start_method() == "fork" else cfg.model_dump_json()
    try:
        with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg_json,)) as pool:
            yield lambda blocks: pool.imap(_render_block, blocks, chunksize=1)
    finally:
        _WORKER_SCENE = None


def _polygon_map(s: Sprite, cfg: SynthConfig) -> Any:
    from shapely.geometry import Polygon

    xy = s.footprint_xy()
    return Polygon(np.stack([cfg.origin_e + xy[:, 0], cfg.origin_n - xy[:, 1]], axis=1))


def write_truth(scene: Scene, cfg: SynthConfig, path: Path, crs: Any) -> None:
    """``truth`` (targets) and ``confusers`` layers, with the scene parameters in ``rams_metadata``."""
    import geopandas as gpd

    from rams.layers import write_gpkg
    from rams.synth.scene import terrain_at

    tx = np.asarray([s.x_m for s in scene.targets])
    ty = np.asarray([s.y_m for s in scene.targets])
    terrains = terrain_at(scene.ground, tx, ty) if len(tx) else []
    truth = gpd.GeoDataFrame(
        {
            "class": [s.cls for s in scene.targets],
            "model": [s.kind for s in scene.targets],
            "length_m": [s.length_m for s in scene.targets],
            "width_m": [s.width_m for s in scene.targets],
            "height_m": [round(s.height_m, 4) for s in scene.targets],
            "rotation_deg": [round(s.rotation_deg, 3) for s in scene.targets],
            "visible_fraction": [round(s.visible_fraction, 4) for s in scene.targets],
            "burial": [round(s.burial, 4) for s in scene.targets],
            "terrain": terrains,
            "size_px": [round(s.length_m / cfg.gsd_m, 2) for s in scene.targets],
            "x_map": [cfg.origin_e + s.x_m for s in scene.targets],
            "y_map": [cfg.origin_n - s.y_m for s in scene.targets],
        },
        geometry=[_polygon_map(s, cfg) for s in scene.targets],
        crs=crs,
    )
    conf = gpd.GeoDataFrame(
        {
            "kind": [s.kind for s in scene.confusers],
            "length_m": [round(s.length_m, 4) for s in scene.confusers],
            "width_m": [round(s.width_m, 4) for s in scene.confusers],
        },
        geometry=[_polygon_map(s, cfg) for s in scene.confusers],
        crs=crs,
    )
    meta = {"generator": f"rams synth {__version__}", "seed": cfg.seed, "config": cfg.model_dump(mode="json")}
    write_gpkg(path, {"truth": truth, "confusers": conf}, metadata=meta)


def scene_record(scene: Scene, cfg: SynthConfig) -> dict[str, Any]:
    """Everything needed to reproduce the scene (the config) plus the derived values worth reading."""
    t = _transform(cfg)
    return {
        "generator": "rams synth",
        "rams_version": __version__,
        "seed": cfg.seed,
        "config": cfg.model_dump(mode="json"),
        "raster": {
            "width_px": scene.width_px,
            "height_px": scene.height_px,
            "gsd_m": cfg.gsd_m,
            "crs": cfg.crs,
            "transform": [t.a, t.b, t.c, t.d, t.e, t.f],
            "bands": cfg.bands,
            "mask": "alpha" if cfg.bands == "rgba" else "nodata=0",
        },
        "derived": {
            "terrain": scene.ground.terrain,
            "terrain_parts": [p.terrain for p in scene.ground.parts],
            "sun_azimuth_deg": round(scene.light.azimuth_deg, 3),
            "sun_elevation_deg": round(scene.light.elevation_deg, 3),
            "ambient": round(scene.light.ambient, 4),
            "thermal_t_min_c": round(scene.thermal.t_min, 3),
            "thermal_t_max_c": round(scene.thermal.t_max, 3),
            "photo_spacing_m": round(scene.layout.across_m, 3),
            "n_targets": len(scene.targets),
            "n_confusers": len(scene.confusers),
            "targets_by_class": _count([s.cls or "" for s in scene.targets]),
            "confusers_by_kind": _count([s.kind for s in scene.confusers]),
        },
    }


def _count(names: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return dict(sorted(out.items()))


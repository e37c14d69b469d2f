"""``rams detect``: tiled inference over a whole orthomosaic into a GeoPackage of georeferenced detections.

The flow (see ``docs/architecture.md``):

1. open and check the mosaic (:mod:`rams.raster`), load the model bundle (hash checked), check the GSD;
2. grid at the model GSD, optional AOI, tiles with cores (:mod:`rams.tiling`); tiles without imagery are found
   when read and skip the model;
3. tiles (1536 px by default: less overlap to recompute than the card's 512 px), row by row down vertical
   stripes whose row of source blocks fits a bounded block cache, are read straight into batch
   arrays; reader threads read batches ahead (one dataset handle per thread; bounded queue, so memory is
   bounded by ``batch_size x (workers + 1)`` tiles) while the main thread runs the model (on 2 cores reads
   run between batches instead, GDAL decoding on all cores: a reader thread beside torch's threads slows both);
4. each tile keeps the detections whose centre lies in its core and inside the AOI (:mod:`rams.merge`),
   and contributes its valid core pixels to the coverage layer (:mod:`rams.coverage`);
5. after every batch the tile results are appended to a checkpoint (``OUT.partial/``; flushed every batch,
   forced to disk every ``CHECKPOINT_SYNC_S``), so that an
   interrupted run (Ctrl-C or kill -9) resumes with ``--resume`` and gives the same result;
6. duplicates across seams are merged, and the GeoPackage is written atomically with provenance;
7. with several models (``extra_models``: ``rams detect --model A --model B``) each runs as above into
   ``OUT.models/`` (every model planned first, so a bad one fails before any runs), then :mod:`rams.combine` joins
   the results into ``OUT``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from rams.combine import JOINT_KEY
from rams.config import ReadConfig, StrictModel, dump_config
from rams.errors import AOIError, GSDError, InputError, ModelError, OutputError, RamsError
from rams.merge import MERGE_DISTANCE_M
from rams.outputs import check_output, output_lock
from rams.raster import (
    Grid,
    OrthoReader,
    cache_cap_mb,
    damaged_reads,
    describe,
    open_raster,
    reading_notes,
    select_bands,
    source_value_range,
    target_grid,
)
from rams.tiling import Tile, make_tiles, stripe_cols_for, stripe_order, stripe_span_px

log = logging.getLogger(__name__)

#: Called after each batch: (tiles done, tiles total, megapixels done at the model GSD).
ProgressFn = Callable[[int, int, float], None]

CHECKPOINT_VERSION = 2  # 2: tiles run down stripes (batch indexes name other tiles than in 1)

#: Default inference tile size (px at the model GSD) unless the card's is larger; see ``DetectConfig``.
DETECT_TILE_PX = 1024
#: The default tile where the mosaic is big enough: it recomputes less overlap than 1024 px ((1536/1440)^2 = 1.14x
#: the owned pixels instead of 1.22x) at the same model speed per pixel (docs/benchmarks.md), for ~150 MB more
#: activation memory.
LARGE_TILE_PX = 1536
#: Tiles run down vertical stripes whose row of source blocks fits this GDAL block cache (``stripe_cols``), so
#: that memory does not grow with the mosaic's width (a row of 1024 px tiles across a 0.5 cm mosaic 63 000 px
#: wide needed 680 MB of cache, capped at 640 MB: 1.53 GB peak RSS).
STRIPE_CACHE_MB = 256
#: Default batch: as many tiles as hold this many pixels (at least one).
BATCH_PIXELS = 4 * 512 * 512


class DetectConfig(StrictModel):
    """Options of ``rams detect`` (YAML preset keys; CLI flags override)."""

    model: str = "default"
    """Model bundle: a name under ``models/`` or a path to a bundle folder."""
    extra_models: list[str] = Field(default_factory=list)
    """More bundles run over the same mosaic into the same result (``rams detect --model A --model B``; e.g. a
    small-item model at 0.5 cm beside the 1 cm default): each runs as ``model`` does, then the results are
    joined by :mod:`rams.combine` (detections of all, coverage where all looked, per class the best recall)."""
    operating_point: str | None = None
    """Named score threshold from the model card (default: the card's default operating point)."""
    companions: list[str] = Field(default_factory=list, exclude=True)
    """The other models of a several-model run (set by ``rams detect`` and ``rams batch`` for each model's own
    run, never read from a preset): where a card holds thresholds set together with them
    (:func:`rams.combine.find_joint`), this model runs at those. Not part of the resolved config (the thresholds
    are: checkpoint key and metadata)."""
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Explicit score threshold; overrides the operating point."""
    batch_size: int | None = Field(default=None, ge=1)
    """Tiles per model batch (default: as many as hold about 1 Mpx: 4 tiles of 512 px, 1 of 1024 px)."""
    workers: int | None = Field(default=None, ge=0, le=16)
    """Reader threads that decode tiles ahead of the model; 0 reads in the model's thread between batches.
    Default (None): 0 on a CPU with <= 2 cores, where a reader thread beside torch's threads oversubscribes
    the cores and slows both (measured: docs/benchmarks.md); else 1 (CPU) or 2 (CUDA)."""
    device: str = "cpu"
    threads: int | None = Field(default=None, ge=1)
    """Torch intra-op threads (default: all cores)."""
    tile_size_px: int | None = Field(default=None, ge=64)
    """Tile size at the model GSD (default: ``LARGE_TILE_PX`` = 1536, or the mosaic's shorter side if smaller,
    never below the model card's tile size; see :func:`default_tile_px`). The
    network is fully convolutional, so any size works; big tiles recompute less overlap: with a 96 px overlap
    a 512 px tile pays for (512/416)^2 = 1.51x the pixels it owns, a 1024 px tile (1024/928)^2 = 1.22x, a
    1536 px tile (1536/1440)^2 = 1.14x."""
    overlap_px: int | None = Field(default=None, ge=0)
    """Tile overlap (default: the model card's; must exceed the largest object)."""
    merge_distance_m: float = Field(default=MERGE_DISTANCE_M, ge=0.0)
    """Same-class detections closer than this are merged (plus footprint containment)."""
    min_target_px: float = 8.0
    """GSD check: the smallest class of the model must span at least this many pixels."""
    force: bool = False
    """Proceed although the GSD is too coarse (a warning is recorded in the output)."""
    full_hash: bool = False
    """Hash the whole input file (slow for large mosaics) instead of the sampled fast hash."""
    read: ReadConfig = Field(default_factory=ReadConfig)


@dataclass
class DetectSummary:
    """What a detect run did, for the end-of-run summary and ``--json``."""

    output: str
    tiles_total: int
    tiles_processed: int
    tiles_resumed: int
    tiles_empty: int
    analysed_ha: float
    detections: int
    detections_by_class: dict[str, int]
    threshold: float
    """Lowest score kept (the per-class thresholds are in ``class_thresholds``)."""
    model: str
    seconds: float
    mpx: float
    warnings: list[str] = field(default_factory=list)
    class_thresholds: dict[str, float] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    """The models of a several-model run (``model`` joins them with '+'); empty for one model."""
    joint: str | None = None
    """For several models run at thresholds set together (:func:`rams.combine.find_joint`): which, in words."""
    hints: list[str] = field(default_factory=list)
    """Advice that is not a caveat of the result (e.g. a shipped model that serves this flight too)."""

    @property
    def mpx_per_s(self) -> float:
        return self.mpx / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["mpx_per_s"] = self.mpx_per_s
        return d


def partial_dir(out: Path) -> Path:
    """Checkpoint folder of an output: ``RESULT.gpkg.partial/``."""
    return out.with_name(out.name + ".partial")


@dataclass
class TileResult:
    """What one tile contributed: owned detections in map coordinates, its coverage, its valid pixels.

    JSON-serialisable (checkpoints) and picklable (Dask tasks).
    """

    tile_id: str
    dets: list[list[float]]  # [x0, y0, x1, y1, score, label index]
    coverage_wkb: list[str]
    valid_px: int
    damaged_px: int = 0  # core pixels GDAL could not read (``read.skip_damaged``): not analysed


@dataclass
class DetectPlan:
    """Everything decided before inference: model, grid, bands, scaling, AOI, tiles and batches.

    Built by :func:`plan_detect`; picklable, so workers of a cluster can process ranges of its batches.
    """

    ortho: Path
    cfg: DetectConfig
    model_ref: str
    card: Any
    info: Any
    grid: Grid
    bands: tuple[int, ...]
    value_range: tuple[float, float]
    aoi_path: Path | None
    aoi_geom: Any
    tile_px: int
    overlap_px: int
    batch_size: int
    tiles: list[Tile]
    """In processing order: row by row down stripes of ``stripe_cols`` tile columns."""
    stripe_cols: int
    class_thresholds: dict[str, float]
    """Score threshold per class (card order): the operating point's, or ``--threshold`` for every class."""
    input_hash: str
    resolved_config: str
    gsd_check: str
    warnings: list[str]
    started_utc: str
    joint: dict[str, Any] | None = None
    """Thresholds set together with the run's other models (:func:`rams.combine.find_joint`), when they apply."""
    recall_withheld: str | None = None
    """Why the card's measured recall does not apply to this run (the mosaic is coarser than the GSD range the
    model serves and was measured at, ``--force``); None when it applies. The result then records no recall, so
    the detector gate cannot let the run's silence cancel ground."""

    @property
    def threshold(self) -> float:
        """Lowest per-class score threshold: no detection below it is kept."""
        return min(self.class_thresholds.values())

    @property
    def batches(self) -> list[list[Tile]]:
        """Tiles in fixed groups of ``batch_size``: the unit of inference and of checkpointing, so a resumed
        or distributed run feeds the model exactly the same batches as an uninterrupted one."""
        b = self.batch_size
        return [self.tiles[i : i + b] for i in range(0, len(self.tiles), b)]

    def checkpoint_key(self) -> dict[str, Any]:
        from rams.provenance import layer_hash, text_hash

        return {
            "version": CHECKPOINT_VERSION,
            "input_hash": self.input_hash,
            "weights_sha256": self.card.weights_sha256,
            # a run stopped by a damaged block continues with --resume --skip-damaged: the tiles it finished were
            # read whole either way, so that switch is not part of the key
            "config_sha256": text_hash(dump_config(self.cfg.model_copy(
                update={"read": self.cfg.read.model_copy(update={"skip_damaged": False})}))),
            "aoi_hash": "sha256:" + layer_hash(self.aoi_path) if self.aoi_path is not None else None,
            "tiles": len(self.tiles),
            # the card's thresholds can be re-calibrated without touching the weights: tiles kept at other
            # thresholds must not be mixed into this run
            "class_thresholds": dict(self.class_thresholds),
        }


def plan_detect(
    ortho: Path,
    cfg: DetectConfig | None = None,
    aoi: Path | None = None,
    aoi_layer: str | None = None,
) -> DetectPlan:
    """Open and check the inputs and decide the tiling; raises the specific RamsError for each bad input."""
    from rams.detector.bundle import load_bundle
    from rams.provenance import now_utc

    cfg = cfg or DetectConfig()
    started = now_utc()
    warnings: list[str] = []
    card = load_bundle(cfg.model).card
    if card.untrained_classes:
        raise ModelError(
            f"model {cfg.model}: classes {', '.join(card.untrained_classes)} were never trained (a training start "
            f"made by scripts/grow_bundle.py); train it first (init_weights: {cfg.model} in a training config)"
        )
    src = open_raster(ortho)
    try:
        with damaged_reads(ortho):
            return _plan_open(ortho, src, cfg, card, aoi, aoi_layer, started, warnings)
    finally:
        src.close()


def _plan_open(ortho: Path, src: Any, cfg: DetectConfig, card: Any, aoi: Path | None, aoi_layer: str | None,
               started: str, warnings: list[str]) -> DetectPlan:
    """:func:`plan_detect` on the open mosaic."""
    from rams.provenance import dataset_hash

    info = describe(src, footprint=False)
    gsd_ok_text = _check_model_gsd(info.gsd_m, card, cfg, warnings, info.pixel_sides_m)
    lo, hi = card.gsd_range_m
    withheld = (
        f"model {card.name} ran on {info.gsd_m * 100:.2f} cm/px imagery, coarser than the {lo * 100:.2f}-"
        f"{hi * 100:.2f} cm/px it serves and was measured at (--force)"
        if _too_coarse(info.gsd_m, card) else None
    )
    grid = target_grid(src, card.gsd_m)
    bands = select_bands(src, card.bands, cfg.read.bands)
    vr = cfg.read.value_range or _card_value_range(card, info.dtype)
    value_range = source_value_range(src, bands[0], vr)
    warnings.extend(reading_notes(src, bands, value_range, range_given=vr is not None))
    aoi_geom = _load_aoi(aoi, aoi_layer, grid, warnings) if aoi is not None else None
    overlap_px = cfg.overlap_px if cfg.overlap_px is not None else card.overlap_px
    tile_px = cfg.tile_size_px or default_tile_px(grid, card.tile_size_px, overlap_px, LARGE_TILE_PX)
    batch_size = cfg.batch_size or max(1, BATCH_PIXELS // (tile_px * tile_px))
    if overlap_px >= tile_px // 2:
        raise InputError(f"overlap {overlap_px} px must be < half the tile size {tile_px} px; lower --overlap")
    # No validity-mask pass before the run: it decoded the whole mosaic once more (10 % of a 1 Gpx run) to
    # skip unimaged tiles, which cost less to read (their blocks decode fast) than that pass, and are then
    # skipped before the model (process_batches). Unimaged ground never enters the coverage either way.
    thresholds, joint = _thresholds(card, cfg, warnings)
    tiles = make_tiles(grid, tile_px, overlap_px, aoi=aoi_geom)
    stripe_cols = stripe_cols_for(src, card.gsd_m, grid, tile_px, overlap_px, STRIPE_CACHE_MB)
    tiles = stripe_order(tiles, stripe_cols)
    if not tiles:
        raise InputError(f"{ortho}: no tile inside the AOI; check the AOI")
    return DetectPlan(
        ortho=Path(ortho), cfg=cfg, model_ref=cfg.model, card=card, info=info, grid=grid, bands=bands,
        value_range=value_range, aoi_path=Path(aoi) if aoi is not None else None, aoi_geom=aoi_geom,
        tile_px=tile_px, overlap_px=overlap_px, batch_size=batch_size, tiles=tiles, stripe_cols=stripe_cols,
        class_thresholds=thresholds, joint=joint,
        input_hash=dataset_hash(Path(ortho), full=cfg.full_hash), resolved_config=dump_config(cfg),
        gsd_check=gsd_ok_text, warnings=warnings, started_utc=started, recall_withheld=withheld,
    )


def stripe_width_px(plan: DetectPlan) -> int:
    """Grid columns one row of tiles of a stripe spans (for sizing the readers' block cache)."""
    return stripe_span_px(plan.grid, plan.stripe_cols, plan.tile_px, plan.overlap_px)


def default_tile_px(grid: Grid, card_tile_px: int, overlap_px: int, max_tile_px: int = DETECT_TILE_PX) -> int:
    """The default inference tile: ``max_tile_px``, no larger than the grid's shorter side (a small mosaic is
    not padded to a big tile), then shrunk to the smallest size that still covers each axis with the same
    number of tiles and at least ``overlap_px`` of overlap (on a 7071 px side: 8 tiles of 976 px instead of 8
    of 1024 px, 9 % fewer pixels to infer). Multiples of 16; never smaller than the card's tile size."""

    def up16(v: int) -> int:
        return -(-v // 16) * 16

    cap = min(max_tile_px, up16(min(grid.height, grid.width)))
    if cap <= overlap_px:
        return max(card_tile_px, cap)
    need = 0
    for length in (grid.height, grid.width):
        if length <= cap:  # one tile along this axis: it must span it
            need = max(need, length)
            continue
        n = math.ceil((length - overlap_px) / (cap - overlap_px))  # tiles along this axis at size ``cap``
        need = max(need, math.ceil((length + (n - 1) * overlap_px) / n))
    return max(card_tile_px, min(cap, up16(need)))


#: The tile checkpoint is flushed to the kernel after every batch (a killed process loses nothing) and forced to
#: disk at most this often (a power cut loses at most these seconds of work; a line cut short is redone).
#: Syncing every batch cost 0.33 s of a 0.25 Gpx run.
CHECKPOINT_SYNC_S = 5.0

#: Called after each batch with (batch index, that batch's tile results).
BatchDoneFn = Callable[[int, list[TileResult]], None]


#: Hand freed heap memory back to the OS every this many batches (see :func:`_release_freed_memory`).
TRIM_EVERY_BATCHES = 32


def _release_freed_memory() -> None:
    """glibc keeps freed blocks of the per-batch arrays (tens of MB, from several threads) in its arenas, so
    RSS creeps up over thousands of tiles although nothing is retained; ``malloc_trim`` returns them (the same
    remedy Dask workers use). A no-op where glibc is absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        return


def resolve_parallelism(cfg: DetectConfig) -> tuple[int, int]:
    """(torch threads, reader threads) for this machine: the cores are shared, never oversubscribed."""
    n_cpu = os.cpu_count() or 1
    cuda = cfg.device.startswith("cuda")
    if cfg.workers is not None:
        workers = cfg.workers
    elif cuda:
        workers = 2
    else:
        workers = 0 if n_cpu <= 2 else 1
    threads = cfg.threads if cfg.threads is not None else max(1, n_cpu - (0 if cuda else workers))
    return threads, workers


def process_batches(
    plan: DetectPlan,
    batch_indexes: list[int],
    predictor: Any | None = None,
    on_batch: BatchDoneFn | None = None,
) -> dict[int, list[TileResult]]:
    """Run the model over the given batches of ``plan`` (reading ahead in threads); return their results.

    Memory is bounded by ``batch_size x (workers + 1)`` tiles, whatever the mosaic size.
    """
    from shapely import prepared

    if predictor is None:
        predictor = make_predictor(plan)
    cfg = plan.cfg
    _, n_workers = resolve_parallelism(cfg)
    batches = plan.batches
    aoi_prep = prepared.prep(plan.aoi_geom) if plan.aoi_geom is not None else None
    local = threading.local()
    readers: list[OrthoReader] = []
    lock = threading.Lock()
    # Reading in the model's thread (no reader threads): the cores are idle while GDAL decodes, so let it decode
    # the blocks of a window on all of them. Beside reader threads, one decoding thread each.
    gdal_threads = (os.cpu_count() or 1) if n_workers == 0 else None
    # Without reader threads one batch is in flight at a time: its arrays are reused (no page faults per batch).
    reuse: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def read_batch(batch: list[Tile]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        reader = getattr(local, "reader", None)
        if reader is None:
            reader = OrthoReader(open_raster(plan.ortho, num_threads=gdal_threads), plan.grid, plan.bands,
                                 plan.value_range, cfg.read.resampling, cache_cap_mb(cfg.read),
                                 row_cols=stripe_width_px(plan), skip_damaged=cfg.read.skip_damaged)
            local.reader = reader
            with lock:
                readers.append(reader)
        t = plan.tile_px
        if n_workers == 0 and len(batch) in reuse:
            images, valid = reuse[len(batch)]
        else:
            images = np.empty((len(batch), len(plan.bands), t, t), np.float32)
            valid = np.empty((len(batch), t, t), bool)
            if n_workers == 0:
                reuse[len(batch)] = (images, valid)
        damaged = [_core_px(reader.read_into(tile.window, images[j], valid[j]), tile) for j, tile in enumerate(batch)]
        return images, valid, damaged

    out: dict[int, list[TileResult]] = {}
    n_done = 0
    try:
        with ThreadPoolExecutor(max_workers=max(1, n_workers), thread_name_prefix="rams-read") as pool:
            pending: deque[tuple[int, list[Tile], Future[tuple[np.ndarray, np.ndarray, list[int]]]]] = deque()
            it = iter(batch_indexes)

            def fill() -> None:
                while n_workers > 0 and len(pending) < n_workers + 1:
                    bi = next(it, None)
                    if bi is None:
                        return
                    pending.append((bi, batches[bi], pool.submit(read_batch, batches[bi])))

            def next_batch() -> tuple[int, list[Tile], tuple[np.ndarray, np.ndarray, list[int]]] | None:
                if n_workers == 0:  # read in this thread: no oversubscription of the cores torch uses
                    bi = next(it, None)
                    return None if bi is None else (bi, batches[bi], read_batch(batches[bi]))
                if not pending:
                    return None
                bi, batch, fut = pending.popleft()
                data = fut.result()
                fill()
                return bi, batch, data

            fill()
            while (item := next_batch()) is not None:
                bi, batch, (images, valid, damaged) = item
                # only tiles with imaged pixels in their core go through the model (a tile owns nothing else)
                has = np.array([_core_view(valid[j], tile).any() for j, tile in enumerate(batch)], dtype=bool)
                if has.all():  # (boolean indexing would copy the whole batch)
                    preds = predictor.predict(images, valid, plan.class_thresholds)
                else:
                    preds = predictor.predict(images[has], valid[has], plan.class_thresholds) if has.any() else []
                results: list[TileResult] = []
                pi = 0
                for j, tile in enumerate(batch):
                    if not has[j]:
                        results.append(TileResult(tile.tile_id, [], [], 0, damaged[j]))
                        continue
                    results.append(_tile_result(tile, preds[pi], valid[j], plan.grid, aoi_prep, damaged[j]))
                    pi += 1
                out[bi] = results
                if on_batch is not None:
                    on_batch(bi, results)
                n_done += 1
                if n_done % TRIM_EVERY_BATCHES == 0:
                    _release_freed_memory()
    finally:
        for r in readers:
            r.close()
            r.source.close()
    return out


def make_predictor(plan: DetectPlan) -> Any:
    """The model runner for a plan (loads and hash-checks the bundle)."""
    from rams.detector.bundle import load_bundle
    from rams.detector.predict import Predictor

    threads, _ = resolve_parallelism(plan.cfg)
    return Predictor(load_bundle(plan.model_ref), device=plan.cfg.device, threads=threads)


def run_detect(
    ortho: Path,
    out: Path,
    cfg: DetectConfig | None = None,
    aoi: Path | None = None,
    aoi_layer: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    on_model: Callable[[str, int, int], None] | None = None,
) -> DetectSummary:
    """Detect mines/ERW over ``ortho`` and write ``out`` (GeoPackage). See the module docstring.

    ``progress(tiles done, tiles total, model Mpx)`` after every batch; with several models ``on_model(name, i,
    n)`` as model ``i`` of ``n`` starts (the tile counts then run over all models)."""
    out = Path(out)
    if out.suffix.lower() != ".gpkg":
        raise OutputError(f"--out must be a GeoPackage path ending in .gpkg, got {out.name}")
    check_output(out, overwrite)
    t_start = time.perf_counter()
    cfg = cfg or DetectConfig()
    with output_lock(out):
        if cfg.extra_models:
            plan, summary = _run_models(ortho, out, cfg, aoi, aoi_layer, resume, overwrite, progress, t_start,
                                        on_model)
        else:
            plan = plan_detect(ortho, cfg, aoi, aoi_layer)
            summary = _run_plan(plan, out, resume, overwrite, progress, t_start)
    hint = other_models_hint(plan.info.gsd_m, plan.card.bands, summary.models or [summary.model])
    summary.hints = [hint] if hint else []
    return summary


def other_models_hint(gsd_m: float, bands: list[str], used: list[str]) -> str | None:
    """One line naming the shipped models (``models/``) that are not in this run but serve imagery of ``gsd_m``
    with the same bands, and what they look for; None when there are none.

    A flight flown at 0.5 cm and run through the 1 cm default alone misses nearly every PFM-1 and submunition that
    ``models/scatterable-05cm`` finds (``docs/detector.md``): the survey unit should learn that from the run."""
    from rams.detector.bundle import list_model_names, models_dir, read_card

    found = []
    for name in list_model_names():
        if name in used:
            continue
        try:
            card = read_card(models_dir() / name)
        except RamsError:  # a broken bundle is reported where it is used (rams models list), not here
            continue
        if card.name in used or card.untrained_classes or list(card.bands) != list(bands) or _too_coarse(gsd_m, card):
            continue
        found.append((name, f"{name} ({', '.join(card.classes)})"))
    if not found:
        return None
    both = " ".join(f"--model {n}" for n in [*used, *(n for n, _ in found)])
    return (f"shipped models not in this run also serve {gsd_m * 100:.2f} cm/px {'/'.join(bands)} imagery: "
            f"{'; '.join(w for _, w in found)}; to run them beside it: rams detect ... {both} (each adds its "
            "model time)")


def models_dir_of(out: Path) -> Path:
    """Folder of the per-model results of a several-model run: ``RESULT.gpkg.models/`` (removed at the end)."""
    return out.with_name(out.name + ".models")


def _run_models(
    ortho: Path,
    out: Path,
    cfg: DetectConfig,
    aoi: Path | None,
    aoi_layer: str | None,
    resume: bool,
    overwrite: bool,
    progress: ProgressFn | None,
    t_start: float,
    on_model: Callable[[str, int, int], None] | None = None,
) -> tuple[DetectPlan, DetectSummary]:
    """Each model of ``cfg`` over the mosaic into its own result, then one combined result (:mod:`rams.combine`).

    Every model is planned (bundle, bands, GSD, AOI) before any runs, so a bad one fails in seconds, not after
    the first model's hours. Each model's run has its own checkpoint; with ``--resume`` a model whose result is
    already complete (same input, weights, config and thresholds) is not run again.
    """
    from rams.combine import combine_results
    from rams.layers import read_metadata

    names = [cfg.model, *cfg.extra_models]
    if len(set(names)) != len(names):
        raise InputError(f"model {sorted(n for n in names if names.count(n) > 1)[0]!r} is named twice; "
                         "give each model once")
    plans = [plan_detect(ortho, cfg.model_copy(update={"model": m, "extra_models": [],
                                                      "companions": [n for n in names if n != m]}), aoi, aoi_layer)
             for m in names]
    cards = [p.card.name for p in plans]
    if len(set(cards)) != len(cards):
        raise InputError(f"two of the models are both called {sorted(c for c in cards if cards.count(c) > 1)[0]!r} "
                         "in their cards; their detections could not be told apart")
    folder = models_dir_of(out)
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
    total = sum(len(p.tiles) for p in plans)
    offset = [0, 0.0]
    parts: list[Path] = []
    resumed = processed = empty = 0
    mpx = 0.0
    for i, plan in enumerate(plans):
        part = folder / f"{i}-{plan.card.name}.gpkg"
        key = json.dumps(plan.checkpoint_key(), sort_keys=True)
        if on_model:
            on_model(plan.card.name, i + 1, len(plans))
        if resume and part.exists() and _part_current(read_metadata(part), key, plan):
            log.info("model %s: complete result from the interrupted run kept", plan.card.name)
            resumed += len(plan.tiles)
            empty += int(read_metadata(part).get("tiles_empty", 0))
        else:

            def model_progress(done: int, _total: int, mpx_done: float) -> None:
                if progress:
                    progress(int(offset[0]) + done, total, offset[1] + mpx_done)

            s = _run_plan(plan, part, resume, True, model_progress, time.perf_counter(),
                          extra_metadata={"checkpoint_key": key})
            resumed += s.tiles_resumed
            processed += s.tiles_processed
            empty += s.tiles_empty
            mpx += s.mpx
        offset[0] += len(plan.tiles)
        offset[1] = mpx
        parts.append(part)
    combined = combine_results(parts, out, overwrite, cfg.merge_distance_m,
                               extra_metadata={"resolved_config": dump_config(cfg)})
    out.with_name(out.stem + ".config.yaml").write_text(dump_config(cfg))
    shutil.rmtree(folder, ignore_errors=True)
    thresholds = combined["class_thresholds"]
    return plans[0], DetectSummary(
        output=str(out),
        tiles_total=total,
        tiles_processed=processed,
        tiles_resumed=resumed,
        tiles_empty=empty,
        analysed_ha=combined["analysed_ha"],
        detections=combined["detections"],
        detections_by_class=combined["by_class"],
        threshold=min(thresholds.values()),
        class_thresholds=dict(thresholds),
        model="+".join(cards),
        models=cards,
        seconds=time.perf_counter() - t_start,
        mpx=mpx,
        warnings=list(combined["warnings"]),
        joint=_joint_words(combined.get("joint")),
    )


def _part_current(meta: dict[str, str], key: str, plan: DetectPlan) -> bool:
    """Whether a model's complete result from an interrupted several-model run can be kept: same checkpoint key
    (input, weights, config, thresholds), and the same measured recall (its card's, or the pair's) as a run now
    would record: the card's metrics may have been re-measured since, and the detector gate reads them."""
    from rams.gate import model_recall_record

    def loads(text: str | None) -> Any:
        return json.loads(text) if text not in (None, "", "null") else None

    recall = None if plan.recall_withheld else model_recall_record(plan.card.metrics)
    return (meta.get("checkpoint_key") == key and loads(meta.get("model_recall")) == recall
            and loads(meta.get(JOINT_KEY)) == plan.joint)


def _joint_words(joint: dict[str, Any] | None) -> str | None:
    """'balanced, set for default and scatterable-05cm together (<= 10 false alarms per hectare in all)'."""
    if not joint:
        return None
    rate = joint.get("fp_per_ha_limit")
    limit = f" (<= {rate:g} false alarms per hectare in all, on the scenes they were set on)" if rate else ""
    return f"{joint['point']}, set for {' and '.join(joint['models'])} run together{limit}"


def _run_plan(
    plan: DetectPlan,
    out: Path,
    resume: bool,
    overwrite: bool,
    progress: ProgressFn | None,
    t_start: float,
    extra_metadata: dict[str, Any] | None = None,
) -> DetectSummary:
    """One model's run of a plan: checkpointed batches, then the result GeoPackage."""
    done = _open_checkpoint(out, plan.checkpoint_key(), resume)
    batches = plan.batches
    n_done = sum(len(batches[bi]) for bi in done)
    resumed = n_done
    tile_mpx = plan.tile_px * plan.tile_px / 1e6
    counters = {"tiles": n_done, "mpx": 0.0}
    if progress:
        progress(n_done, len(plan.tiles), 0.0)
    ckpt = (partial_dir(out) / "tiles.jsonl").open("a")

    last_sync = [time.monotonic()]

    def on_batch(bi: int, results: list[TileResult]) -> None:
        ckpt.write(json.dumps({"batch": bi, "tiles": [r.__dict__ for r in results]}) + "\n")
        ckpt.flush()  # in the kernel now: survives Ctrl-C and kill -9 of this process
        if time.monotonic() - last_sync[0] >= CHECKPOINT_SYNC_S:  # on disk: survives a power cut too
            os.fsync(ckpt.fileno())
            last_sync[0] = time.monotonic()
        done[bi] = results
        counters["tiles"] += len(results)
        counters["mpx"] += tile_mpx * sum(1 for r in results if r.valid_px)
        if progress:
            progress(int(counters["tiles"]), len(plan.tiles), counters["mpx"])

    try:
        process_batches(plan, [bi for bi in range(len(batches)) if bi not in done], on_batch=on_batch)
    finally:
        ckpt.close()
    all_results = [r for bi in sorted(done) for r in done[bi]]
    n_empty = sum(1 for r in all_results if r.valid_px == 0)
    try:
        summary = write_detections(plan, out, all_results, overwrite,
                                   extra_metadata={**(extra_metadata or {}), "tiles_empty": n_empty})
    except OutputError as err:
        if not partial_dir(out).exists():
            raise
        raise OutputError(f"{err}; every tile is done and kept in {partial_dir(out)}: rerun with --resume to write "
                          "the result without running the model again") from err
    shutil.rmtree(partial_dir(out), ignore_errors=True)
    return DetectSummary(
        output=str(out),
        tiles_total=len(plan.tiles),
        tiles_processed=len(plan.tiles) - resumed,
        tiles_resumed=resumed,
        tiles_empty=n_empty,
        analysed_ha=summary["analysed_ha"],
        detections=summary["detections"],
        detections_by_class=summary["by_class"],
        threshold=plan.threshold,
        class_thresholds=dict(plan.class_thresholds),
        model=plan.card.name,
        seconds=time.perf_counter() - t_start,
        mpx=float(counters["mpx"]),
        warnings=summary["warnings"],
    )


def write_detections(plan: DetectPlan, out: Path, results: list[TileResult], overwrite: bool,
                     extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge tile results and write the result GeoPackage (and the resolved config beside it) atomically."""
    from rams.gate import model_recall_record
    from rams.provenance import dataset_bytes, now_utc, run_record

    card, cfg = plan.card, plan.cfg
    if not any(r.valid_px for r in results):
        raise InputError(
            f"{plan.ortho} has no imaged pixels{' inside the AOI' if plan.aoi_path is not None else ''}; "
            "check the alpha/nodata footprint and the AOI"
        )
    input_hash = plan.input_hash
    warnings = list(plan.warnings)
    damaged_px = sum(r.damaged_px for r in results)
    damaged_m2 = damaged_px * plan.grid.gsd_m**2
    if damaged_px:
        n = sum(1 for r in results if r.damaged_px)
        note = (f"{damaged_m2:.1f} m2 in {n} tile(s) could not be read (damaged blocks, --skip-damaged) and were NOT "
                "analysed: they are outside the coverage; copy or export the mosaic again to analyse them")
        warnings.append(note)
        log.warning(note)
    metadata = {
        "rams_product": "detections: candidate mine/ERW locations for human review (not a safety claim)",
        "evidence_note": (
            "Detections are indirect evidence for review. Ground outside the 'coverage' layer was NOT "
            "analysed: absence of detections there means nothing."
        ),
        "input_path": str(plan.ortho.resolve()),
        "input_hash": input_hash,
        "input_hash_method": _hash_method(input_hash),
        "input_size_bytes": dataset_bytes(plan.ortho),
        "input_crs": plan.info.crs,
        "input_gsd_m": plan.info.gsd_m,
        "gsd_check": plan.gsd_check,
        "analysis_crs": plan.grid.crs.to_string(),
        "analysis_gsd_m": plan.grid.gsd_m,
        "model_name": card.name,
        "model_version": card.version,
        "weights_sha256": card.weights_sha256,
        "model_classes": list(card.classes),
        "model_recall": None if plan.recall_withheld else model_recall_record(card.metrics),
        "model_recall_withheld": plan.recall_withheld,
        "score_threshold": plan.threshold,
        "class_thresholds": dict(plan.class_thresholds),
        "operating_point": plan.joint["point"] if plan.joint else cfg.operating_point
        or (None if cfg.threshold is not None else card.default_operating_point),
        **({JOINT_KEY: plan.joint} if plan.joint else {}),
        "aoi_path": str(plan.aoi_path.resolve()) if plan.aoi_path is not None else None,
        "tile_size_px": plan.tile_px,
        "overlap_px": plan.overlap_px,
        "tiles": len(plan.tiles),
        "resolved_config": plan.resolved_config,
        "started_utc": plan.started_utc,
        "finished_utc": now_utc(),
        "warnings": warnings,
        "damaged_m2": round(damaged_m2, 3),
        **run_record(),
        **(extra_metadata or {}),
    }
    summary = _write_result(
        out, results, plan.grid, card, plan.aoi_geom, overwrite, metadata=metadata, src_crs=plan.info.crs,
        merge_distance_m=cfg.merge_distance_m,
    )
    out.with_name(out.stem + ".config.yaml").write_text(plan.resolved_config)
    summary["warnings"] = warnings
    return summary


def _hash_method(input_hash: str) -> str:
    """How ``input_hash`` was made (for the metadata table)."""
    if input_hash.startswith("sha256-dataset"):
        return ("sha256 over the file's hash and those of the files it is read from (a VRT's sources, a mask, "
                "the .aux.xml without statistics), each sampled (rams.provenance.dataset_hash)")
    if input_hash.startswith("sha256-sampled"):
        return "sha256 of size + 16 x 4 MiB samples (rams.provenance.fast_file_hash)"
    return "sha256 of the whole file"


def _core_view(valid: np.ndarray, tile: Tile) -> np.ndarray:
    """The part of a tile's validity mask (tile-local) that lies in the tile's core."""
    c, w = tile.core, tile.window
    r0, c0 = int(c.row_off - w.row_off), int(c.col_off - w.col_off)
    return valid[r0 : r0 + int(c.height), c0 : c0 + int(c.width)]


def _core_px(windows: list[tuple[int, int, int, int]], tile: Tile) -> int:
    """Pixels of grid windows (row0, row1, col0, col1; disjoint) inside the tile's core."""
    c = tile.core
    r0, c0 = int(c.row_off), int(c.col_off)
    r1, c1 = r0 + int(c.height), c0 + int(c.width)
    return sum(max(0, min(b, r1) - max(a, r0)) * max(0, min(d, c1) - max(cc, c0)) for a, b, cc, d in windows)


def _tile_result(tile: Tile, p: Any, valid: np.ndarray, grid: Grid, aoi_prep: Any, damaged_px: int = 0
                 ) -> TileResult:
    from shapely import wkb
    from shapely.geometry import Point

    from rams.coverage import core_coverage
    from rams.merge import owned_detections

    dets = owned_detections(p.boxes_xyxy_px, p.scores, p.labels, tile)
    if aoi_prep is not None:
        dets = [d for d in dets if aoi_prep.contains(Point(d.cx, d.cy))]
    cov = core_coverage(tile, valid, grid)
    return TileResult(
        tile.tile_id,
        [[d.x0, d.y0, d.x1, d.y1, d.score, float(d.label)] for d in dets],
        [wkb.dumps(g, hex=True) for g in cov],
        int(valid.sum()),
        damaged_px,
    )


def _check_model_gsd(gsd_m: float, card: Any, cfg: DetectConfig, warnings: list[str],
                     sides: tuple[float, float] | None = None) -> str:
    """Refuse imagery coarser than the model serves (unless ``--force``); name the classes too small to see.

    Within the model's range, classes whose smallest item spans fewer than ``min_target_px`` pixels at the
    analysis GSD are named in a warning that is recorded in the output: detections of them are unreliable and
    their absence supports nothing. The coverage-quality step judges adequacy per threat for land release.
    """
    from rams.classes import get_class

    lo, hi = card.gsd_range_m
    analysis = max(gsd_m, card.gsd_m)
    if _too_coarse(gsd_m, card):
        msg = (f"{gsd_m * 100:.2f} cm/px is too coarse for model {card.name}, which serves "
               f"{lo * 100:.2f}-{hi * 100:.2f} cm/px imagery")
        if sides is not None and abs(sides[0] - sides[1]) > 0.01 * max(sides):
            msg += (f" (its pixels are {sides[0] * 100:.2f} cm across x {sides[1] * 100:.2f} cm down, and the coarser "
                    "side counts; a warp to a geographic CRS makes them so: export the mosaic again from its source "
                    "(the photogrammetry project, or the file before that warp) in its UTM zone with square pixels; "
                    "warping this file to square pixels would not bring back the lost detail)")
        if not cfg.force:
            raise GSDError(msg + "; fly lower or use a model trained for this GSD, or pass --force "
                           "(absence of detections then supports nothing)")
        warnings.append(msg + " (--force)")
        log.warning(msg)
    small = [c for c in card.classes if get_class(c).min_length_m / analysis < cfg.min_target_px]
    text = f"{gsd_m * 100:.2f} cm/px imagery analysed at {analysis * 100:.2f} cm/px"
    if small:
        note = (f"{', '.join(small)} span under {cfg.min_target_px:g} px at {analysis * 100:.2f} cm/px: "
                "their detections are unreliable and their absence supports nothing")
        warnings.append(note)
        log.warning(note)
        return f"{text}; {note}"
    return f"{text}; every model class spans >= {cfg.min_target_px:g} px"


def _too_coarse(gsd_m: float, card: Any) -> bool:
    """Whether imagery of ``gsd_m`` is coarser than the model serves (5 % tolerance for GSD estimates)."""
    return bool(gsd_m > card.gsd_range_m[1] * 1.05)


def _card_value_range(card: Any, dtype: str) -> tuple[float, float] | None:
    vr = getattr(card.normalisation, "value_range", None) if hasattr(card, "normalisation") else None
    if isinstance(vr, dict):
        v = vr.get(dtype)
        return (float(v[0]), float(v[1])) if v is not None else None
    if vr is not None and dtype.startswith("float"):
        return (float(vr[0]), float(vr[1]))
    return None


def _thresholds(card: Any, cfg: DetectConfig, warnings: list[str] | None = None
                ) -> tuple[dict[str, float], dict[str, Any] | None]:  # fmt: skip
    """(score threshold per class, the joint record when thresholds set together with ``cfg.companions`` apply):
    ``--threshold`` for all classes; else the thresholds set for this model beside the run's other model at the
    operating point (:func:`rams.combine.find_joint`); else the card's operating point (per class if measured).
    Why a pair's record does not apply goes to ``warnings``."""
    if cfg.threshold is not None:
        return {c: float(cfg.threshold) for c in card.classes}, None
    if cfg.companions:
        from rams.combine import find_joint
        from rams.detector.bundle import read_card, resolve_bundle_path

        others = [read_card(resolve_bundle_path(m)) for m in cfg.companions]
        joint, note = find_joint([card, *others], cfg.operating_point)
        if note and warnings is not None:
            warnings.append(note)
            log.warning(note)
        if joint is not None:
            own, point = joint["thresholds"][card.name], joint["point"]
            base = card.thresholds(point if point in card.operating_points else None)
            return {c: float(own.get(c, base[c])) for c in card.classes}, joint
    name = cfg.operating_point or card.default_operating_point
    if name not in card.operating_points:
        raise InputError(
            f"model {card.name} has no operating point {name!r}; choose one of "
            f"{sorted(card.operating_points)} or give --threshold"
        )
    return dict(card.thresholds(name)), None


def _load_aoi(path: Path, layer: str | None, grid: Grid, warnings: list[str] | None = None) -> Any:
    from shapely import make_valid, union_all
    from shapely.geometry import box

    from rams.layers import read_layer

    try:
        gdf = read_layer(path, layer, what="area-of-interest layer")
    except InputError as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise AOIError(str(err)) from err
    if gdf.empty:
        raise AOIError(f"area-of-interest layer in {path} has no features; give the SHA polygons to analyse")
    geoms = [g for g in gdf.to_crs(grid.crs).geometry if g is not None and not g.is_empty]
    # repaired, never truncated: buffer(0) keeps one lobe of a self-intersecting (bow-tie) SHA outline, make_valid
    # keeps all of it, as rams quality and rams reduce read the same polygons
    n_bad = sum(1 for g in geoms if not g.is_valid)
    from rams.sha import polygonal

    geom = polygonal(union_all([make_valid(g) for g in geoms]))  # (make_valid may leave lines of collapsed parts)
    if n_bad:
        note = (f"{n_bad} area-of-interest polygon(s) in {path} were invalid (e.g. self-intersecting) and were "
                "repaired (shapely make_valid); check the SHA outline in QGIS (Vector > Geometry Tools > Check "
                "Validity)")
        log.warning(note)
        if warnings is not None:
            warnings.append(note)
    if geom.is_empty or not geom.intersects(box(*grid.bounds_map)):
        raise AOIError(
            f"area of interest {path} does not overlap the orthomosaic; check that both show the same place "
            "(and that the AOI's CRS is set correctly)"
        )
    return geom


def _open_checkpoint(out: Path, key: dict[str, Any], resume: bool) -> dict[int, list[TileResult]]:
    pdir = partial_dir(out)
    done: dict[int, list[TileResult]] = {}
    state_path = pdir / "state.json"
    if resume and state_path.exists():
        state = json.loads(state_path.read_text())
        if state.get("key") != key:
            changed = [k for k in key if state.get("key", {}).get(k) != key[k]]
            raise InputError(
                f"cannot resume: {', '.join(changed)} changed since the interrupted run; "
                f"rerun without --resume (or delete {pdir})"
            )
        lines = (pdir / "tiles.jsonl").read_text().splitlines() if (pdir / "tiles.jsonl").exists() else []
        good = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by kill -9: everything after it is redone
            done[int(rec["batch"])] = [TileResult(**t) for t in rec["tiles"]]
            good.append(line)
        (pdir / "tiles.jsonl").write_text("".join(g + "\n" for g in good))
        log.info("resuming: %d batches already done", len(done))
        return done
    if resume:
        log.warning("no checkpoint at %s: starting from the beginning", pdir)
    elif pdir.exists():
        log.info("discarding an old checkpoint at %s (use --resume to continue it)", pdir)
    shutil.rmtree(pdir, ignore_errors=True)
    pdir.mkdir(parents=True)
    state_path.write_text(json.dumps({"key": key}, indent=1))
    (pdir / "tiles.jsonl").touch()
    return done


def _write_result(
    out: Path,
    results: list[TileResult],
    grid: Grid,
    card: Any,
    aoi_geom: Any,
    overwrite: bool,
    metadata: dict[str, Any],
    src_crs: str,
    merge_distance_m: float,
) -> dict[str, Any]:
    import geopandas as gpd
    from pyproj import Transformer
    from shapely import box, wkb

    from rams.coverage import dissolve
    from rams.layers import write_gpkg
    from rams.merge import MapDetection, merge_duplicates
    from rams.styles import default_styles

    dets = [
        MapDetection(d[0], d[1], d[2], d[3], d[4], int(d[5]), r.tile_id) for r in results for d in r.dets
    ]
    merged = merge_duplicates(dets, merge_distance_m)
    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    rows = []
    for i, d in enumerate(merged, start=1):
        lon, lat = to_ll.transform(d.cx, d.cy)
        w, h = d.x1 - d.x0, d.y1 - d.y0
        rows.append({
            "det_id": i,
            "label": card.classes[d.label],
            "score": round(float(d.score), 6),
            "model": card.name,
            "tile_id": d.tile_id,
            "length_m": round(max(w, h), 4),
            "width_m": round(min(w, h), 4),
            "lon": round(lon, 8),
            "lat": round(lat, 8),
            "status": "candidate: needs human review",
            "geometry": box(d.x0, d.y0, d.x1, d.y1),
        })
    det_gdf = gpd.GeoDataFrame(
        rows, columns=["det_id", "label", "score", "model", "tile_id", "length_m", "width_m", "lon", "lat",
                       "status", "geometry"],
        geometry="geometry", crs=grid.crs,
    )
    cov_geom = dissolve([wkb.loads(h, hex=True) for r in results for h in r.coverage_wkb], aoi_geom,
                        grid_size=grid.gsd_m * 1e-4)
    area_m2 = float(cov_geom.area)
    cov_gdf = gpd.GeoDataFrame(
        [{"area_m2": round(area_m2, 3), "area_ha": round(area_m2 / 1e4, 6), "gsd_m": grid.gsd_m,
          "meaning": "ground analysed by the detector at the model GSD; outside it nothing was analysed",
          "geometry": cov_geom}],
        geometry="geometry", crs=grid.crs,
    )
    if str(grid.crs) != str(src_crs):  # e.g. EPSG:4326 input: areas were computed in UTM, output in input CRS
        det_gdf = det_gdf.to_crs(src_crs)
        cov_gdf = cov_gdf.to_crs(src_crs)
    by_class = dict(sorted(Counter(det_gdf["label"]).items()))
    metadata = {**metadata, "detections": len(det_gdf), "detections_by_class": by_class,
                "analysed_area_m2": area_m2}
    write_gpkg(out, {"detections": det_gdf, "coverage": cov_gdf}, metadata=metadata, overwrite=overwrite,
               styles=default_styles(["detections", "coverage"]))
    return {"detections": len(det_gdf), "by_class": by_class, "analysed_ha": area_m2 / 1e4}

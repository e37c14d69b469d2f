"""``rams batch``: many flights through detection, coverage quality, polygons (and SHA reduction) into one survey.

For each flight of the batch (:mod:`rams.batch.manifest`):

1. its **key** (orthomosaic hash, model weights hash, per-flight config hash, SHA file hash) is compared with
   the batch status (:mod:`rams.batch.status`): done flights with the same key are skipped, changed ones
   redone, failed and interrupted ones retried;
2. a worker **plans** it (:func:`rams.detect.plan_detect`); the plan's fixed batches of tiles are split into
   tile-range **tasks** of about ``tiles_per_task`` tiles, so one large mosaic spreads over every worker, and
   **coverage quality** runs as its own task at the same time;
3. every finished task's tile results are appended to the flight's checkpoint (``OUT/.work/FLIGHT/``), so a
   killed batch resumes a half-done mosaic where it stopped;
4. when all its tasks are in, the client writes the flight's GeoPackage ``OUT/flights/FLIGHT.gpkg``
   atomically: ``detections`` and ``coverage`` (exactly as ``rams detect`` writes them), ``coverage_quality``,
   ``hazard_polygons`` and, with ``--sha``, the SHA proposal layers for the SHAs the flight touches; then the
   status says ``done``.

A flight that fails (unreadable mosaic, GSD too coarse, a worker dying...) is recorded with its error and the
batch goes on. At the end, the finished flights are merged into ``OUT/survey.gpkg`` (:mod:`rams.batch.fuse`):
detections fused where flights overlap, with every sighting's provenance; hazard polygons and (with
``--sha``) SHA proposals over the whole survey. The survey is rebuilt only when a flight or a setting changed.

Only the client writes files; workers only read the mosaics. See ``docs/batch.md``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field

from rams.batch.fuse import FuseConfig
from rams.batch.manifest import Flight, load_flights
from rams.batch.status import LOCK_FILE, STATUS_FILE, BatchStatus, FlightKey, batch_lock
from rams.config import StrictModel, dump_config
from rams.detect import DetectConfig
from rams.errors import BatchPartialFailure, InputError, ModelError, OutputError, RamsError
from rams.sha import DecisionsConfig

if TYPE_CHECKING:
    import geopandas as gpd

    from rams.batch.distributed import Cluster
    from rams.detect import DetectPlan, TileResult
    from rams.quality import QualityConfig, QualityResult

log = logging.getLogger(__name__)

FLIGHTS_DIR = "flights"
WORK_DIR = ".work"
SURVEY_NAME = "survey.gpkg"
CONFIG_NAME = "batch.config.yaml"


class BatchConfig(StrictModel):
    """Options of ``rams batch`` (YAML preset keys; CLI flags override)."""

    detect: DetectConfig = Field(default_factory=DetectConfig)
    """Detection, as for ``rams detect``."""
    decisions: DecisionsConfig = Field(default_factory=DecisionsConfig)
    """Coverage quality, hazard polygons and SHA reduction, as for ``rams quality / polygons / reduce``.
    ``quality.analysis_gsd_m`` defaults to the model's GSD (imagery is judged as the detector sees it)."""
    fuse: FuseConfig = Field(default_factory=FuseConfig)
    """How detections of overlapping flights are fused in the survey."""
    tiles_per_task: int = Field(default=64, ge=1)
    """Tiles per Dask task: a mosaic with more tiles is spread over several workers."""
    max_active_flights: int | None = Field(default=None, ge=1)
    """Flights in progress at once (default: 2 x workers + 1); bounds the client's memory."""


FlightState = Literal["done", "skipped", "failed"]


@dataclass
class FlightOutcome:
    """What happened to one flight in this run."""

    flight_id: str
    ortho: str
    state: FlightState
    reason: str
    output: str | None = None
    detections: int = 0
    analysed_ha: float = 0.0
    tiles: int = 0
    mpx: float = 0.0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class BatchSummary:
    """What a batch run did, for the summary table and ``--json``."""

    out_dir: str
    flights: list[FlightOutcome]
    survey: str | None
    survey_summary: dict[str, Any]
    survey_rebuilt: bool
    seconds: float
    cluster: str
    workers: int
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[FlightOutcome]:
        return [f for f in self.flights if f.state == "failed"]

    @property
    def mpx(self) -> float:
        return sum(f.mpx for f in self.flights if f.state == "done")

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["flights"] = [dict(f.__dict__) for f in self.flights]
        d["failed"] = len(self.failed)
        d["mpx"] = self.mpx
        return d

    def raise_for_failures(self) -> None:
        """Raise :class:`BatchPartialFailure` when any flight failed (after the summary has been shown)."""
        failed = self.failed
        if not failed:
            return
        shown = "; ".join(f"{f.flight_id}: {f.error}" for f in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise BatchPartialFailure(
            f"{len(failed)} of {len(self.flights)} flights failed - {shown}{more}; errors are recorded in "
            f"{Path(self.out_dir) / STATUS_FILE}: fix them and rerun the same command (finished flights are skipped)"
        )


@dataclass
class BatchProgress:
    """A snapshot for progress displays."""

    flights_total: int
    flights_finished: int
    flights_failed: int
    tiles_total: int
    tiles_done: int
    mpx: float
    message: str = ""


ProgressFn = Callable[[BatchProgress], None]


def flight_output(out_dir: Path, flight_id: str) -> Path:
    """Path of a flight's GeoPackage in a batch folder."""
    return Path(out_dir) / FLIGHTS_DIR / f"{flight_id}.gpkg"


def run_batch(
    flights_source: Path,
    out_dir: Path,
    cfg: BatchConfig | None = None,
    sha: Path | None = None,
    sha_layer: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    connect_timeout_s: float = 30.0,
) -> BatchSummary:
    """Process every flight of ``flights_source`` into ``out_dir`` (see the module docstring).

    Args:
        flights_source: a folder of orthomosaics or a manifest (CSV/YAML).
        out_dir: batch folder (created; a rerun on the same folder resumes).
        cfg: batch configuration.
        sha: optional SHA polygons: each flight and the survey get SHA reduction proposals.
        sha_layer: layer of ``sha`` holding the SHAs.
        scheduler: address of a running Dask scheduler (None: a local cluster of ``workers`` processes).
        workers: local worker processes (default: half the cores).
        progress: called with a :class:`BatchProgress` whenever something finishes.
        connect_timeout_s: how long to try reaching ``scheduler``.

    Returns:
        The :class:`BatchSummary`; failed flights are in it (call :meth:`BatchSummary.raise_for_failures`).
    """
    from rams.detector.bundle import load_bundle
    from rams.provenance import dataset_hash, text_hash

    t0 = time.perf_counter()
    cfg = cfg or BatchConfig()
    out_dir = Path(out_dir).absolute()
    _check_out_dir(out_dir)
    flights = load_flights(Path(flights_source), exclude=[out_dir])
    cfg = _absolute_model(cfg)
    names = model_names(cfg.detect)
    cards = [load_bundle(m).card for m in names]
    if len({c.name for c in cards}) != len(cards):
        dup = sorted(c.name for c in cards if [d.name for d in cards].count(c.name) > 1)[0]
        raise InputError(f"two of the models are both called {dup!r} in their cards; their detections could not be "
                         "told apart")
    card = cards[0]
    sha_gdf, sha_hash = _load_sha(sha, sha_layer)
    qcfg = cfg.decisions.quality
    if qcfg.analysis_gsd_m is None:
        qcfg = qcfg.model_copy(update={"analysis_gsd_m": card.gsd_m})
    # The keys that say whether a finished flight must be redone. --skip-damaged is not in them: a finished flight
    # was read whole (or already skipped its damage), so adding it to a rerun redoes no finished flight.
    detect_text = dump_config(cfg.detect.model_copy(
        update={"read": cfg.detect.read.model_copy(update={"skip_damaged": False})}))
    qkey = qcfg.model_copy(update={"read": qcfg.read.model_copy(update={"skip_damaged": False})})
    decisions_text = yaml.safe_dump(  # the decision steps a flight runs (export settings do not change a flight)
        {"quality": qkey.model_dump(mode="json"), "polygons": cfg.decisions.polygons.model_dump(mode="json"),
         "reduce": cfg.decisions.reduce.model_dump(mode="json")}, sort_keys=False,
    )
    detect_hash, decisions_hash = text_hash(detect_text), text_hash(decisions_text)
    # one model: its weights and card, as batches before several models were possible (their keys stay valid)
    card_hash = text_hash(json.dumps(card.model_dump(mode="json") if len(cards) == 1
                                     else [c.model_dump(mode="json") for c in cards], sort_keys=True))
    weights = ",".join(c.weights_sha256 for c in cards)  # as the combined result's metadata writes it
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FLIGHTS_DIR).mkdir(exist_ok=True)
    with batch_lock(out_dir):
        _remove_stale_temporaries(out_dir)
        (out_dir / CONFIG_NAME).write_text(dump_config(cfg))
        status = BatchStatus.load(out_dir / STATUS_FILE)
        status.configs.update({detect_hash: detect_text, decisions_hash: decisions_text})
        outcomes: dict[str, FlightOutcome] = {}
        todo: list[_Job] = []
        for index, flight in enumerate(flights):
            rec = status.record(flight.flight_id, str(flight.ortho))
            try:
                input_hash = dataset_hash(flight.ortho, full=cfg.detect.full_hash)
            except OSError as err:
                status.start(flight.flight_id, str(flight.ortho), None, "new")
                msg = (f"orthomosaic not found: {flight.ortho} (check the path in the manifest)"
                       if isinstance(err, FileNotFoundError) else f"cannot read {flight.ortho}: {err}")
                status.fail(flight.flight_id, msg, 0.0)
                outcomes[flight.flight_id] = FlightOutcome(flight.flight_id, str(flight.ortho), "failed", "unreadable",
                                                           error=msg)
                continue
            key = FlightKey(input_hash, weights, detect_hash, decisions_hash, sha_hash, card_hash)
            out = flight_output(out_dir, flight.flight_id)
            action, reason = status.decide(flight.flight_id, key, out.exists())
            if action == "run" and rec.state == "running" and _output_has_key(out, key):
                # killed after the GeoPackage was renamed into place but before the status said so
                status.finish(flight.flight_id, str(out), rec.summary or _summary_from_output(out), 0.0,
                              recovered=True)
                action, reason = "skip", "recovered"
            if action == "skip":
                s = status.flights[flight.flight_id].summary
                outcomes[flight.flight_id] = FlightOutcome(
                    flight.flight_id, str(flight.ortho), "skipped", reason, str(out), int(s.get("detections", 0)),
                    float(s.get("analysed_ha", 0.0)), int(s.get("tiles", 0)), 0.0, 0.0,
                )
                continue
            todo.append(_Job(flight, key, reason, index))
        status.save()
        n_skipped = sum(1 for o in outcomes.values() if o.state == "skipped")
        log.info("%d flight(s): %d to process, %d already done", len(flights), len(todo), n_skipped)
        cluster_name, n_workers = "none (nothing to process)", 0
        hints: dict[str, list[str]] = {}
        if todo:
            from rams.batch.distributed import open_cluster

            with open_cluster(scheduler, workers, cfg.detect.threads, connect_timeout_s) as cluster:
                cluster_name = "local" if cluster.local else cluster.address
                n_workers = cluster.workers
                runner = _Runner(cluster, cfg, qcfg, status, out_dir, flights, outcomes, sha_gdf, sha_hash, progress)
                runner.run(todo)
                hints = runner.hints
            with contextlib.suppress(OSError):
                (out_dir / WORK_DIR).rmdir()  # only when empty: checkpoints of failed flights stay
        survey_path, survey_summary, rebuilt, notes = _write_survey(
            out_dir, flights, status, cfg, sha_gdf, sha, sha_hash
        )
    ordered = [outcomes[f.flight_id] for f in flights]
    for hint, fids in hints.items():  # e.g. 0.5 cm flights run through the 1 cm default alone
        shown = ", ".join(fids[:10]) + (f" and {len(fids) - 10} more" if len(fids) > 10 else "")
        notes.append(f"{hint.replace('rams detect ...', 'rams batch ...')} (flights processed now: {shown})")
    return BatchSummary(
        out_dir=str(out_dir), flights=ordered, survey=str(survey_path) if survey_path else None,
        survey_summary=survey_summary, survey_rebuilt=rebuilt, seconds=time.perf_counter() - t0,
        cluster=cluster_name, workers=n_workers, notes=notes,
    )


# ---------------------------------------------------------------------------------------------------------
# Checks before anything runs


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder for the batch outputs")
    foreign = [p for p in out_dir.iterdir() if p.name != LOCK_FILE] if out_dir.is_dir() else []
    if foreign and not (out_dir / STATUS_FILE).exists():
        raise OutputError(
            f"--out {out_dir} is a non-empty folder that holds no rams batch; choose a new or empty folder "
            "(rerunning a batch uses its own folder)"
        )
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK):
        raise OutputError(f"cannot write to {out_dir}; choose a writable --out folder")


def _absolute_model(cfg: BatchConfig) -> BatchConfig:
    """Make model *paths* absolute, so that workers started elsewhere find the same bundles."""

    def absolute(ref: str) -> str:
        p = Path(ref)
        return str(p.resolve()) if ("/" in ref or os.sep in ref or p.is_dir()) and p.exists() else ref

    detect = cfg.detect.model_copy(update={"model": absolute(cfg.detect.model),
                                           "extra_models": [absolute(m) for m in cfg.detect.extra_models]})
    return cfg.model_copy(update={"detect": detect})


def model_names(detect: DetectConfig) -> list[str]:
    """The models a flight runs: ``detect.model`` and ``detect.extra_models`` (``--model A --model B``), each
    once; several give one combined result per flight, as ``rams detect`` does (:mod:`rams.combine`)."""
    names = [detect.model, *detect.extra_models]
    if len(set(names)) != len(names):
        raise InputError(f"model {sorted(n for n in names if names.count(n) > 1)[0]!r} is named twice; "
                         "give each model once")
    return names


def model_config(detect: DetectConfig, i: int) -> DetectConfig:
    """The detect config of model ``i`` of a run alone (what ``rams detect`` plans each model with)."""
    names = model_names(detect)
    return detect.model_copy(update={"model": names[i], "extra_models": [],
                                     "companions": [n for j, n in enumerate(names) if j != i]})


def _load_sha(sha: Path | None, sha_layer: str | None) -> tuple[gpd.GeoDataFrame | None, str | None]:
    if sha is None:
        return None, None
    from rams.layers import read_layer
    from rams.sha import sha256_of

    gdf = read_layer(sha, sha_layer, what="SHA layer")
    if gdf.empty:
        raise InputError(f"the SHA layer in {sha} holds no polygons; give the layer with the SHAs to assess")
    return gdf, "sha256:" + sha256_of(sha)


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary files of a killed run (``.NAME.tmp-<8 hex digits>``): never valid outputs, safe to delete."""
    for folder in (out_dir, out_dir / FLIGHTS_DIR):
        for p in folder.glob(".*.tmp-*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _key_text(key: FlightKey) -> str:
    return json.dumps(key.to_dict(), sort_keys=True)


def _output_has_key(out: Path, key: FlightKey) -> bool:
    from rams.layers import read_metadata

    if not out.exists():
        return False
    try:
        return read_metadata(out).get("batch.key") == _key_text(key)
    except Exception:  # an unreadable file is simply not a finished output
        return False


def _summary_from_output(out: Path) -> dict[str, Any]:
    from rams.layers import read_metadata

    meta = read_metadata(out)
    try:
        return dict(json.loads(meta.get("batch.flight_summary", "{}")))
    except json.JSONDecodeError:
        return {}


# ---------------------------------------------------------------------------------------------------------
# Execution


@dataclass
class _Job:
    """One flight in progress; per model ``i`` (``detect.model`` is 0, then ``extra_models``): its plan, its
    tile results by batch index, its plan's future (its detect tasks take it) and its checkpoint file."""

    flight: Flight
    key: FlightKey
    reason: str
    index: int
    n_models: int = 1
    t0: float = 0.0
    plans: dict[int, DetectPlan] = field(default_factory=dict)
    quality: QualityResult | None = None
    results: dict[int, dict[int, list[TileResult]]] = field(default_factory=dict)
    plan_futures: dict[int, Any] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)
    futures: list[Any] = field(default_factory=list)
    ckpts: dict[int, Any] = field(default_factory=dict)
    tiles_resumed: int = 0
    mpx: float = 0.0

    @property
    def complete(self) -> bool:
        return len(self.plans) == self.n_models and self.quality is not None and not self.pending

    def close_checkpoints(self) -> None:
        for f in self.ckpts.values():
            f.close()
        self.ckpts.clear()


class _Runner:
    """Submits flights to the cluster, collects their results, and finalises each flight on the client."""

    def __init__(
        self,
        cluster: Cluster,
        cfg: BatchConfig,
        qcfg: QualityConfig,
        status: BatchStatus,
        out_dir: Path,
        flights: list[Flight],
        outcomes: dict[str, FlightOutcome],
        sha_gdf: gpd.GeoDataFrame | None,
        sha_hash: str | None,
        progress: ProgressFn | None,
    ) -> None:
        self.cluster = cluster
        self.client = cluster.client
        self.cfg = cfg
        self.qcfg = qcfg
        self.status = status
        self.out_dir = out_dir
        self.n_flights = len(flights)
        self.outcomes = outcomes
        self.sha_gdf = sha_gdf
        self.sha_hash = sha_hash
        self.progress = progress
        self.active: dict[str, _Job] = {}
        self.owner: dict[str, tuple[str, str, int]] = {}
        self.tiles_total = 0
        self.tiles_done = 0
        self.mpx = 0.0
        self.max_active = cfg.max_active_flights or 2 * cluster.workers + 1
        self.hints: dict[str, list[str]] = {}
        """:func:`rams.detect.other_models_hint` of each flight processed (hint -> flight IDs)."""

    # -- bookkeeping

    def _report(self, message: str = "") -> None:
        if self.progress is None:
            return
        self.progress(BatchProgress(
            flights_total=self.n_flights,
            flights_finished=len(self.outcomes),
            flights_failed=sum(1 for o in self.outcomes.values() if o.state == "failed"),
            tiles_total=self.tiles_total,
            tiles_done=self.tiles_done,
            mpx=self.mpx,
            message=message,
        ))

    def _submit(self, job: _Job, kind: str, fn: Callable[..., Any], *args: Any, model: int = 0) -> Any:
        key = f"rams-{kind}-{job.flight.flight_id}-{uuid.uuid4().hex[:8]}"
        fut = self.client.submit(fn, *args, key=key, pure=False, priority=self.n_flights - job.index)
        self.owner[key] = (job.flight.flight_id, kind, model)
        job.pending.add(key)
        job.futures.append(fut)
        self.ac.add(fut)
        return fut

    # -- the loop

    def run(self, todo: list[_Job]) -> None:
        from distributed import as_completed

        from rams.batch.distributed import plan_task, quality_task

        self.ac = as_completed()
        queue = deque(todo)

        def launch() -> None:
            while queue and len(self.active) < self.max_active:
                job = queue.popleft()
                fid = job.flight.flight_id
                self.status.start(fid, str(job.flight.ortho), job.key, job.reason)
                log.info("flight %s: %s", fid, job.reason)
                job.t0 = time.perf_counter()
                job.n_models = len(model_names(self.cfg.detect))
                self.active[fid] = job
                for mi in range(job.n_models):
                    job.plan_futures[mi] = self._submit(job, "plan", plan_task, str(job.flight.ortho),
                                                        model_config(self.cfg.detect, mi), model=mi)
                self._submit(job, "quality", quality_task, str(job.flight.ortho), self.qcfg,
                             self.cluster.torch_threads)

        launch()
        self._report("started")
        try:
            for fut in self.ac:
                fid, kind, mi = self.owner.pop(str(fut.key), ("", "", 0))
                job = self.active.get(fid)
                if job is None:  # the flight already failed; its stragglers are dropped
                    continue
                job.pending.discard(str(fut.key))
                try:
                    value = fut.result()
                except Exception as err:
                    self._fail(job, err)
                    launch()
                    continue
                if kind != "plan":  # the plan stays on the cluster for the flight's tasks; the rest can go
                    job.futures = [f for f in job.futures if f.key != fut.key]
                del fut
                try:
                    self._handle(job, kind, value, mi)
                    if job.complete:
                        self._finish(job)
                except Exception as err:
                    self._fail(job, err)
                if fid not in self.active or job.complete:
                    launch()
        finally:
            for job in self.active.values():
                job.close_checkpoints()

    def _handle(self, job: _Job, kind: str, value: Any, mi: int = 0) -> None:
        from rams.batch.distributed import chunk_indexes, detect_task

        fid = job.flight.flight_id
        if kind == "plan":
            plan: DetectPlan = value
            if plan.card.weights_sha256 != job.key.weights_sha256.split(",")[mi]:
                raise ModelError(
                    f"the worker loaded model {plan.card.name} with weights {plan.card.weights_sha256[:12]}..., not "
                    f"the client's {job.key.weights_sha256.split(',')[mi][:12]}...: give every machine the same model "
                    "bundle"
                )
            if plan.input_hash != job.key.input_hash:
                raise InputError(
                    f"a worker sees another file at {job.flight.ortho} than this machine (or it changed during the "
                    "batch); workers must see the same files under the same paths"
                )
            job.plans[mi] = plan
            job.results[mi] = self._open_checkpoint(job, mi)
            resumed = sum(len(v) for v in job.results[mi].values())
            job.tiles_resumed += resumed
            self.tiles_total += len(plan.tiles)
            self.tiles_done += resumed
            remaining = [bi for bi in range(len(plan.batches)) if bi not in job.results[mi]]
            per_task = max(1, self.cfg.tiles_per_task // plan.batch_size)
            for chunk in chunk_indexes(remaining, per_task):
                self._submit(job, "detect", detect_task, job.plan_futures[mi], chunk, self.cluster.torch_threads,
                             model=mi)
            log.info("flight %s%s: %d tiles in %d task(s)%s", fid,
                     f", model {plan.card.name}" if job.n_models > 1 else "", len(plan.tiles),
                     len(chunk_indexes(remaining, per_task)),
                     f", {resumed} tiles from its checkpoint" if resumed else "")
        elif kind == "detect":
            plan = job.plans[mi]
            ckpt = job.ckpts[mi]
            tile_mpx = plan.tile_px * plan.tile_px / 1e6
            for bi, results in sorted(value.items()):
                ckpt.write(json.dumps({"batch": bi, "tiles": [r.__dict__ for r in results]}) + "\n")
                job.results[mi][bi] = results
                n = len(results)
                self.tiles_done += n
                m = tile_mpx * sum(1 for r in results if r.valid_px)
                job.mpx += m
                self.mpx += m
            ckpt.flush()
            os.fsync(ckpt.fileno())
            self._report(f"{fid}: tiles")
        elif kind == "quality":
            job.quality = value

    def _open_checkpoint(self, job: _Job, mi: int = 0) -> dict[int, list[TileResult]]:
        """Model ``mi``'s tile checkpoint of the flight: batches already done by an interrupted run with the same
        key (``state.json`` + ``tiles.jsonl`` for the first model, ``-N`` added for model N)."""
        from rams.detect import TileResult

        plan = job.plans[mi]
        work = self.out_dir / WORK_DIR / job.flight.flight_id
        key = {"flight": job.key.to_dict(), "plan": plan.checkpoint_key()}
        suffix = f"-{mi}" if mi else ""
        state = work / f"state{suffix}.json"
        tiles = work / f"tiles{suffix}.jsonl"
        done: dict[int, list[TileResult]] = {}
        if state.exists() and tiles.exists():
            try:
                same = json.loads(state.read_text()).get("key") == key
            except json.JSONDecodeError:
                same = False
            if same:
                good = []
                for line in tiles.read_text().splitlines():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        break  # a line cut by kill -9: it and anything after it is redone
                    done[int(rec["batch"])] = [TileResult(**t) for t in rec["tiles"]]
                    good.append(line)
                tiles.write_text("".join(g + "\n" for g in good))
                job.ckpts[mi] = tiles.open("a")
                return done
        # another key (or none): start this model's checkpoint afresh (the other models' files are theirs)
        work.mkdir(parents=True, exist_ok=True)
        tiles.unlink(missing_ok=True)
        state.write_text(json.dumps({"key": key}, indent=1))
        job.ckpts[mi] = tiles.open("a")
        return done

    def _fail(self, job: _Job, err: BaseException) -> None:
        fid = job.flight.flight_id
        msg = _error_text(err)
        log.error("flight %s failed: %s", fid, msg)
        live = [f for f in job.futures if str(f.key) in job.pending]
        if live:
            self.client.cancel(live)
        for f in live:
            self.owner.pop(str(f.key), None)
        job.close_checkpoints()
        self.active.pop(fid, None)
        job.futures.clear()  # releases the flight's data on the cluster
        job.plan_futures.clear()
        seconds = time.perf_counter() - job.t0
        self.status.fail(fid, msg, seconds)
        self.outcomes[fid] = FlightOutcome(fid, str(job.flight.ortho), "failed", job.reason, seconds=seconds,
                                           error=msg)
        self._report(f"{fid}: failed")

    def _finish(self, job: _Job) -> None:
        fid = job.flight.flight_id
        assert job.quality is not None
        job.close_checkpoints()
        out = flight_output(self.out_dir, fid)
        plans = [job.plans[mi] for mi in range(job.n_models)]
        results = [[r for bi in sorted(job.results[mi]) for r in job.results[mi][bi]] for mi in range(job.n_models)]
        t_detect = time.perf_counter() - job.t0
        summary = write_flight(
            plans, results, job.quality, job.flight, job.key, out, self.out_dir / WORK_DIR / fid, self.cfg,
            self.qcfg, self.sha_gdf, self.sha_hash, {"tiles_resumed": job.tiles_resumed, "mpx": job.mpx,
                                                      "seconds_to_results": t_detect},
        )
        shutil.rmtree(self.out_dir / WORK_DIR / fid, ignore_errors=True)
        from rams.detect import other_models_hint

        hint = other_models_hint(plans[0].info.gsd_m, plans[0].card.bands, [p.card.name for p in plans])
        if hint:
            self.hints.setdefault(hint, []).append(fid)
        seconds = time.perf_counter() - job.t0
        summary["seconds"] = round(seconds, 3)
        self.status.finish(fid, str(out), summary, seconds)
        self.active.pop(fid, None)
        job.futures.clear()
        job.plan_futures.clear()
        job.results.clear()
        self.outcomes[fid] = FlightOutcome(
            fid, str(job.flight.ortho), "done", job.reason, str(out), summary["detections"], summary["analysed_ha"],
            summary["tiles"], job.mpx, seconds,
        )
        log.info("flight %s done: %d detections, %.3f ha analysed, %.1f s", fid, summary["detections"],
                 summary["analysed_ha"], seconds)
        self._report(f"{fid}: done")


def _error_text(err: BaseException) -> str:
    if isinstance(err, RamsError):
        return str(err)
    name = type(err).__name__
    if name == "KilledWorker":
        return ("a worker died while processing this flight (out of memory or killed); lower detect.batch_size "
                "or give workers more memory, then rerun")
    if name == "CancelledError":
        return "its tasks were cancelled (the cluster lost them); rerun to retry"
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"internal error: {name}: {first} (rerun with --debug for details and report it)"


# ---------------------------------------------------------------------------------------------------------
# Per-flight GeoPackage


def write_flight(
    plans: list[DetectPlan],
    results: list[list[TileResult]],
    quality: QualityResult,
    flight: Flight,
    key: FlightKey,
    out: Path,
    work: Path,
    cfg: BatchConfig,
    qcfg: QualityConfig,
    sha_gdf: gpd.GeoDataFrame | None,
    sha_hash: str | None,
    stats: dict[str, Any],
) -> dict[str, Any]:
    """Write one flight's GeoPackage atomically: detections and coverage (as ``rams detect``; with several models,
    each model's result joined as ``rams detect --model A --model B`` joins them), coverage quality, hazard
    polygons, and SHA proposals for the SHAs the flight touches. Returns the flight's summary."""
    import geopandas as gpd
    from shapely.geometry import box

    from rams.detect import write_detections
    from rams.export import derive_gpkg
    from rams.layers import read_layer
    from rams.polygons import build_hazard_polygons, summarise
    from rams.sha import CANCELLATION_LAYER, REMAINING_LAYER, TABLE_LAYER, reduce_sha
    from rams.styles import default_styles

    work.mkdir(parents=True, exist_ok=True)
    det_path = work / "detections.gpkg"
    if len(plans) == 1:
        det = write_detections(plans[0], det_path, results[0], overwrite=True, extra_metadata=flight.metadata())
    else:
        from rams.combine import combine_results

        parts = []
        for i, (plan, tile_results) in enumerate(zip(plans, results, strict=True)):
            parts.append(work / f"model-{i}.gpkg")
            write_detections(plan, parts[-1], tile_results, overwrite=True)
        det = combine_results(parts, det_path, True, cfg.detect.merge_distance_m, extra_metadata=flight.metadata())
    dets = read_layer(det_path, "detections", what="detections layer")
    cov = read_layer(det_path, "coverage", what="coverage layer")
    hazard = build_hazard_polygons(dets, cfg.decisions.polygons)
    qlayer = quality.require_layer()  # assess_ortho without a sink holds the layer
    layers: dict[str, gpd.GeoDataFrame] = {"coverage_quality": qlayer, "hazard_polygons": hazard}
    summary: dict[str, Any] = {
        "detections": int(det["detections"]),
        "detections_by_class": det["by_class"],
        "analysed_ha": float(det["analysed_ha"]),
        "tiles": sum(len(p.tiles) for p in plans),
        "tiles_resumed": int(stats.get("tiles_resumed", 0)),
        "mpx": round(float(stats.get("mpx", 0.0)), 4),
        "hazard_polygons": len(hazard),
        "quality_m2": {k: round(v, 3) for k, v in quality.area_by_class_m2().items()},
        "warnings": list(dict.fromkeys([*det.get("warnings", []), *quality.warnings])),
    }
    meta: dict[str, Any] = {
        "batch.key": _key_text(key),
        "batch.flight_summary": summary,
        "quality.config": dump_config(qcfg),
        "quality.summary": quality.summary(),
        "polygons.config": dump_config(cfg.decisions.polygons),
        "polygons.summary": summarise(hazard),
    }
    if sha_gdf is not None:
        frame = gpd.GeoSeries([box(*qlayer.total_bounds)], crs=qlayer.crs).to_crs(sha_gdf.crs).iloc[0]
        touched = sha_gdf[sha_gdf.intersects(frame)]
        if len(touched):
            from rams.gate import run_detector_gate, threat_classes_of
            from rams.layers import read_metadata

            gate = run_detector_gate(read_metadata(det_path), threat_classes_of({}, qcfg.classes),
                                     cfg.decisions.reduce.min_model_recall)  # fmt: skip
            res = reduce_sha(touched, hazard, qlayer, cov, dets, cfg.decisions.reduce, cfg.decisions.polygons,
                             detector_unproven=gate, threat_classes=threat_classes_of({}, qcfg.classes))  # fmt: skip
            layers[TABLE_LAYER] = res.table
            layers[REMAINING_LAYER] = res.remaining
            layers[CANCELLATION_LAYER] = res.cancellation
            meta["reduce.sha_sha256"] = sha_hash
            meta["reduce.config"] = dump_config(cfg.decisions.reduce)
            meta["reduce.notes"] = "; ".join(res.notes)
            summary["shas"] = len(touched)
        else:
            meta["reduce.notes"] = "no SHA overlaps this flight"
            summary["shas"] = 0
        meta["batch.flight_summary"] = summary
    derive_gpkg(det_path, out, layers, metadata=meta, styles=default_styles(layers), overwrite=True)
    return summary


# ---------------------------------------------------------------------------------------------------------
# Survey


def _write_survey(
    out_dir: Path,
    flights: list[Flight],
    status: BatchStatus,
    cfg: BatchConfig,
    sha_gdf: gpd.GeoDataFrame | None,
    sha: Path | None,
    sha_hash: str | None,
) -> tuple[Path | None, dict[str, Any], bool, list[str]]:
    """Merge the finished flights into ``survey.gpkg`` unless it is already up to date."""
    from rams.batch.fuse import FlightLayers, build_survey
    from rams.layers import list_layers, read_layer, write_gpkg
    from rams.provenance import now_utc, run_record, text_hash
    from rams.styles import default_styles

    path = out_dir / SURVEY_NAME
    done = [f for f in flights if status.flights[f.flight_id].state == "done"
            and flight_output(out_dir, f.flight_id).exists()]
    missing = [f.flight_id for f in flights if f not in done]
    notes = [f"{f.flight_id}: {w}" for f in done for w in status.flights[f.flight_id].summary.get("warnings", [])
             if "could not be read" in w]  # damaged blocks left unanalysed (--skip-damaged): said at the end
    if missing:
        notes.append(
            f"{len(missing)} flight(s) not in the survey (failed): {', '.join(missing[:20])}; their ground counts as "
            "not imaged"
        )
    if not done:
        if path.exists():
            path.unlink()
        status.survey = {}
        status.save()
        return None, {}, False, notes + ["no finished flight: no survey written"]
    survey_key = text_hash(json.dumps({
        "flights": [[f.flight_id, status.flights[f.flight_id].key, status.flights[f.flight_id].runs[-1]]
                    for f in done],
        "fuse": cfg.fuse.model_dump(mode="json"),
        "decisions": cfg.decisions.model_dump(mode="json"),
        "sha": sha_hash,
    }, sort_keys=True, default=str))
    if status.survey.get("key") == survey_key and path.exists():
        log.info("survey %s is up to date", path)
        return path, dict(status.survey.get("summary", {})), False, notes
    parts = []
    for f in done:
        gpkg = flight_output(out_dir, f.flight_id)
        names = list_layers(gpkg)
        rec = status.flights[f.flight_id]
        parts.append(FlightLayers(
            flight=f,
            detections=read_layer(gpkg, "detections", what="detections layer"),
            coverage=read_layer(gpkg, "coverage", what="coverage layer"),
            quality=read_layer(gpkg, "coverage_quality", what="coverage quality layer")
            if "coverage_quality" in names else None,
            info={"input_hash": (rec.key or {}).get("input_hash", ""),
                  "weights_sha256": (rec.key or {}).get("weights_sha256", ""),
                  "output": str(gpkg)},
        ))
    from rams.gate import run_detector_gate, threat_classes_of
    from rams.layers import read_metadata

    gate = None
    for f in done:  # any flight whose detector is not validated keeps the whole survey from proposing cancellation
        gpkg = flight_output(out_dir, f.flight_id)
        meta = read_metadata(gpkg)
        why = run_detector_gate(meta, threat_classes_of(meta, cfg.decisions.quality.classes),
                                cfg.decisions.reduce.min_model_recall)  # fmt: skip
        if why:
            gate = f"flight {f.flight_id}: {why}"
            break
    res = build_survey(parts, cfg.fuse, cfg.decisions.polygons, sha_gdf, cfg.decisions.reduce, detector_unproven=gate,
                       threat_classes=threat_classes_of({}, cfg.decisions.quality.classes))
    notes.extend(res.notes)
    metadata = {
        "rams_product": "survey: detections of several flights fused, for human review (not a safety claim)",
        "evidence_note": (
            "Ground outside the 'coverage' layer was NOT analysed: absence of detections there means nothing. "
            "Flights that failed are not included."
        ),
        "survey.flights": [f.flight_id for f in done],
        "survey.flights_missing": missing,
        "survey.flight_keys": {f.flight_id: status.flights[f.flight_id].key for f in done},
        "survey.summary": res.summary,
        "survey.notes": notes,
        "fuse.config": dump_config(cfg.fuse),
        "batch.config": dump_config(cfg),
        "sha_file": str(sha) if sha is not None else "",
        "sha_sha256": sha_hash or "",
        "finished_utc": now_utc(),
        **run_record(),
    }
    write_gpkg(path, res.layers, metadata=metadata, overwrite=True, styles=default_styles(res.layers))
    status.survey = {"key": survey_key, "path": str(path), "written_utc": now_utc(), "summary": res.summary}
    status.save()
    return path, res.summary, True, notes

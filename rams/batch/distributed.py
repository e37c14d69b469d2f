"""Dask execution: the cluster a batch runs on, and the functions its workers run.

A batch runs on a ``distributed`` cluster: a :class:`distributed.LocalCluster` of worker *processes* on this
machine by default (one Dask thread each; torch gets ``cores / workers`` threads), or an existing cluster
given by its scheduler address (``--scheduler tcp://HOST:8786``). The client (the ``rams batch`` process)
plans nothing heavy itself: it submits per-flight tasks and writes every output.

Tasks (module-level functions, so that workers import them from the installed ``rams``):

* :func:`plan_task`: open and check a mosaic and decide its tiles (:func:`rams.detect.plan_detect`);
* :func:`detect_task`: run the model over a range of the plan's fixed batches of tiles
  (:func:`rams.detect.process_batches`). Batches are fixed groups of tiles, so splitting a mosaic into ranges
  of batches over many workers feeds the model exactly what a single process would: results are identical;
* :func:`quality_task`: coverage quality of a whole mosaic (:func:`rams.quality.assess_ortho`).

Each worker process loads the model once and keeps it (:func:`worker_predictor`), so the cost of loading
weights is paid per worker, not per task.

Workers open the orthomosaics by the same paths as the client: a shared filesystem (NFS, SMB, a mounted
bucket) must show the same files under the same paths on every machine (see ``docs/batch.md``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rams.errors import DeviceError, RamsError

if TYPE_CHECKING:
    from distributed import Client

    from rams.detect import DetectConfig, DetectPlan, TileResult
    from rams.quality import QualityConfig, QualityResult

log = logging.getLogger(__name__)

_PREDICTORS: dict[tuple[Any, ...], Any] = {}
_PREDICTOR_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------------------------
# Task functions (run on workers)

F = TypeVar("F", bound=Callable[..., Any])


def portable_errors(fn: F) -> F:
    """Re-raise rams errors without their chained causes, so that they reach the client as themselves.

    A rams error raised ``from`` a GDAL error carries that error as its cause; rasterio's exceptions do not
    survive pickling, and Dask would then send back a bare ``Exception`` holding only the text.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RamsError as err:
            clean = type(err)(*err.args)
        raise clean  # outside the except block: no __context__ either

    return wrapper  # type: ignore[return-value]


@portable_errors
def plan_task(ortho: str, cfg: DetectConfig) -> DetectPlan:
    """Plan detection over one mosaic (runs on a worker: the mosaic is read there)."""
    from rams.detect import plan_detect

    return plan_detect(Path(ortho), cfg)


@portable_errors
def detect_task(plan: DetectPlan, batch_indexes: Sequence[int], threads: int | None) -> dict[int, list[TileResult]]:
    """Run the model over some of ``plan``'s batches; returns their tile results by batch index."""
    from rams.detect import process_batches

    predictor = worker_predictor(plan, threads if threads is not None else _worker_nthreads())
    return process_batches(plan, list(batch_indexes), predictor=predictor)


@portable_errors
def quality_task(ortho: str, cfg: QualityConfig, threads: int | None = None) -> QualityResult:
    """Coverage quality of one mosaic, filtering tiles on ``threads`` threads (default: the worker's Dask threads,
    as for the model: a local cluster shares the cores between its workers)."""
    from rams.quality import assess_ortho

    return assess_ortho(Path(ortho), cfg, workers=threads if threads is not None else _worker_nthreads())


def worker_predictor(plan: DetectPlan, threads: int | None) -> Any:
    """The model of ``plan``, loaded once per worker process and reused by every later task.

    Only one model is kept: a task for another model (or device/threads) replaces it, which bounds memory.
    """
    from rams.detector.bundle import load_bundle, resolve_bundle_path
    from rams.detector.predict import Predictor

    key = (str(resolve_bundle_path(plan.model_ref).resolve()), plan.card.weights_sha256, plan.cfg.device, threads)
    with _PREDICTOR_LOCK:
        predictor = _PREDICTORS.get(key)
        if predictor is None:
            _PREDICTORS.clear()
            bundle = load_bundle(plan.model_ref)
            predictor = Predictor(bundle, device=plan.cfg.device, threads=threads)
            _PREDICTORS[key] = predictor
            log.debug("worker %d loaded model %s", os.getpid(), bundle.card.name)
    return predictor


def _worker_nthreads() -> int | None:
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def warm_up() -> None:
    """Import the heavy libraries (torch, torchvision, GDAL bindings) once, on every worker at the same time."""
    import rams.detect  # noqa: F401
    import rams.detector.predict  # noqa: F401
    import rams.quality  # noqa: F401


def worker_info() -> dict[str, Any]:
    """What a worker runs (checked against the client before a batch starts)."""
    import platform
    import socket

    import rams

    return {"rams": rams.__version__, "python": platform.python_version(), "host": socket.gethostname(),
            "pid": os.getpid()}


def chunk_indexes(indexes: Sequence[int], per_task: int) -> list[list[int]]:
    """Consecutive runs of at most ``per_task`` indexes (tasks of neighbouring tiles read neighbouring blocks)."""
    per_task = max(1, int(per_task))
    items = list(indexes)
    return [items[i : i + per_task] for i in range(0, len(items), per_task)]


# ---------------------------------------------------------------------------------------------------------
# The cluster (client side)


@dataclass
class Cluster:
    """A connected client and what it runs on."""

    client: Client
    address: str
    workers: int
    local: bool
    torch_threads: int | None
    """Torch threads per task: cores / workers on a local cluster; None lets remote workers use their own
    Dask thread count (``dask worker --nthreads``)."""


@contextlib.contextmanager
def open_cluster(
    scheduler: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    connect_timeout_s: float = 30.0,
    worker_timeout_s: float = 60.0,
) -> Iterator[Cluster]:
    """Start a local cluster, or connect to ``scheduler``; closes what it opened on exit.

    Args:
        scheduler: ``tcp://HOST:PORT`` of a running ``dask scheduler`` (None: a LocalCluster here).
        workers: local worker processes (default: :func:`default_workers`); ignored with ``scheduler``.
        threads: torch threads per task (default: cores / workers locally, the workers' ``--nthreads`` remotely).
        connect_timeout_s: how long to try reaching the scheduler.
        worker_timeout_s: how long to wait for the first worker of a remote cluster.

    Raises:
        DeviceError: the scheduler cannot be reached, has no workers, or its workers run another rams.
    """
    import warnings

    from distributed import Client, LocalCluster

    _quiet_dask_logs()
    if scheduler is None:
        n = workers or default_workers()
        if n < 1:
            raise DeviceError("--workers must be at least 1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Port 8787 is already in use"
            cluster = LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=logging.CRITICAL,  # failed tasks are reported by rams, with their flight
            )
        try:
            with Client(cluster) as client:
                client.run(warm_up)
                tt = threads or max(1, (os.cpu_count() or 1) // n)
                log.info("local Dask cluster: %d worker process(es), %d torch thread(s) each", n, tt)
                yield Cluster(client, str(cluster.scheduler_address), n, True, tt)
        finally:
            cluster.close()
        return
    try:
        client = Client(scheduler, timeout=f"{connect_timeout_s}s")
    except (OSError, TimeoutError, ValueError) as err:
        raise DeviceError(
            f"cannot reach the Dask scheduler at {scheduler} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "start one with `dask scheduler` and check the address, port and firewall"
        ) from err
    try:
        try:
            client.wait_for_workers(1, timeout=worker_timeout_s)
        except TimeoutError as err:
            raise DeviceError(
                f"the Dask scheduler at {scheduler} has no workers after {worker_timeout_s:.0f} s; start some with "
                f"`dask worker {scheduler} --nthreads 1`"
            ) from err
        check_workers(client)
        client.run(warm_up)
        n = len(client.scheduler_info()["workers"])
        log.info("Dask cluster %s: %d worker(s)", scheduler, n)
        yield Cluster(client, scheduler, n, False, threads)
    finally:
        client.close()


def _quiet_dask_logs() -> None:
    """Dask logs every connection at INFO; keep its warnings only, unless rams itself logs at DEBUG (-vv)."""
    if logging.getLogger("rams").getEffectiveLevel() <= logging.DEBUG:
        return
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.WARNING)
    # Closing a worker that imported torch takes longer than the nanny's 4 s grace period, after which it is
    # killed as intended (it holds no state by then); that is not worth a warning on every batch.
    logging.getLogger("distributed.nanny").setLevel(logging.ERROR)


def check_workers(client: Client) -> dict[str, dict[str, Any]]:
    """Ask every worker what it runs; refuse workers without rams or with another rams version."""
    import rams

    try:
        infos: dict[str, dict[str, Any]] = client.run(worker_info)
    except ImportError as err:
        raise DeviceError(
            f"Dask workers cannot import rams ({err}); install the same rams in the workers' environment"
        ) from err
    wrong = {addr: info["rams"] for addr, info in infos.items() if info["rams"] != rams.__version__}
    if wrong:
        raise DeviceError(
            f"Dask workers run another rams version ({wrong}) than this client ({rams.__version__}); install the "
            "same version everywhere"
        )
    return infos


def default_workers() -> int:
    """Local worker processes by default: half the cores (torch uses the rest), at least 1, at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 2))

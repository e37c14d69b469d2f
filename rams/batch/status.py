"""Per-flight batch status: what is done, with which inputs, model and config; the basis of resume.

The status lives in ``OUT/batch_status.json`` and is rewritten atomically (temporary file, fsync, rename) after
every change, so a crash or ``kill -9`` leaves either the previous or the next version, never a torn file.

Each flight has a **key**: the orthomosaic's content hash (:func:`rams.provenance.dataset_hash`: the file and
those it is read from, such as a VRT's blocks), the model
weights' SHA-256, the hashes of the resolved ``detect`` config and of the resolved decision configs (quality,
polygons, reduce), and the SHA file's hash when ``--sha`` is given. The config texts are kept in the status by
hash, so that a redo can name the settings that changed.
On a rerun a flight is

* **skipped** when it is ``done`` with the same key and its GeoPackage is still there;
* **redone** when its key changed (new mosaic export, other model or config: the changed parts are named),
  when its output is gone, or when its last run was interrupted (state ``running`` found at start);
* **retried** when it ``failed``.

Every attempt is appended to the flight's ``runs`` list (start, end, state, error, seconds), so the record
shows how often a flight was processed and why: the audit trail of the batch itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rams.errors import InputError, OutputError
from rams.provenance import now_utc

STATUS_FILE = "batch_status.json"
LOCK_FILE = ".batch.lock"
STATUS_VERSION = 1

State = Literal["pending", "running", "done", "failed"]
Action = Literal["skip", "run"]


@dataclass(frozen=True)
class FlightKey:
    """What a flight's result depends on; a change in any part means the flight is redone."""

    input_hash: str
    weights_sha256: str
    detect_config_sha256: str
    """Hash of the resolved ``detect`` config."""
    decisions_config_sha256: str
    """Hash of the resolved coverage-quality, polygons and reduce configs."""
    sha_sha256: str | None = None
    card_sha256: str = ""
    """Hash of the model card: re-calibrated thresholds or a new measured recall (which the detector gate reads)
    change the result although the weights do not."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self, other: dict[str, Any] | None) -> list[str]:
        """Names of the parts that differ from a stored key (all when none is stored)."""
        mine = self.to_dict()
        if not other:
            return list(mine)
        return [k for k in mine if other.get(k) != mine[k]]


@dataclass
class FlightRecord:
    """Status of one flight (JSON-serialisable)."""

    flight_id: str
    ortho: str
    state: State = "pending"
    key: dict[str, Any] | None = None
    output: str | None = None
    error: str | None = None
    attempts: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def done_runs(self) -> int:
        """How many attempts finished successfully (a resumed batch never raises this for a done flight)."""
        return sum(1 for r in self.runs if r.get("state") == "done")


@dataclass
class BatchStatus:
    """The status file of one batch folder. Only the process holding :func:`batch_lock` writes it."""

    path: Path
    flights: dict[str, FlightRecord] = field(default_factory=dict)
    survey: dict[str, Any] = field(default_factory=dict)
    created_utc: str = field(default_factory=now_utc)
    configs: dict[str, str] = field(default_factory=dict)
    """Resolved config texts by hash (few: one per distinct config used), to name what changed."""

    @classmethod
    def load(cls, path: Path) -> BatchStatus:
        """Read ``path`` (a new, empty status when it does not exist)."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            if data.get("version") != STATUS_VERSION:
                raise ValueError(f"status version {data.get('version')!r}, expected {STATUS_VERSION}")
            flights = {fid: FlightRecord(**rec) for fid, rec in data["flights"].items()}
            return cls(path, flights, dict(data.get("survey") or {}), str(data.get("created_utc") or now_utc()),
                       {str(k): str(v) for k, v in (data.get("configs") or {}).items()})
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(
                f"batch status {path} is unreadable ({err}); move it away to start the batch afresh "
                "(finished flights will then be processed again)"
            ) from err

    def save(self) -> None:
        """Write the status atomically."""
        data = {
            "version": STATUS_VERSION,
            "created_utc": self.created_utc,
            "updated_utc": now_utc(),
            "survey": self.survey,
            "configs": self.configs,
            "flights": {fid: asdict(rec) for fid, rec in sorted(self.flights.items())},
        }
        write_json_atomic(self.path, data)

    def record(self, flight_id: str, ortho: str) -> FlightRecord:
        rec = self.flights.get(flight_id)
        if rec is None:
            rec = self.flights[flight_id] = FlightRecord(flight_id, ortho)
        rec.ortho = ortho
        return rec

    def decide(self, flight_id: str, key: FlightKey, output_exists: bool) -> tuple[Action, str]:
        """Whether a flight must run, and why (see the module docstring)."""
        rec = self.flights.get(flight_id)
        if rec is None or rec.state == "pending":
            return "run", "new"
        if rec.state == "failed":
            return "run", "retry after failure"
        if rec.state == "running":
            return "run", "resume interrupted run"
        changed = key.changed(rec.key)
        if changed:
            return "run", "changed: " + ", ".join(self._describe(c, rec.key or {}, key) for c in changed)
        if not output_exists:
            return "run", "output missing"
        return "skip", "done"

    def _describe(self, part: str, old: dict[str, Any], new: FlightKey) -> str:
        """A changed key part, with the changed settings when both config texts are known."""
        if not part.endswith("config_sha256"):
            return part
        before = self.configs.get(str(old.get(part)))
        after = self.configs.get(str(getattr(new, part)))
        if before is None or after is None:
            return part
        keys = config_diff(before, after)
        shown = ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")
        return f"{part.removesuffix('_sha256')} ({shown})" if keys else part

    def start(self, flight_id: str, ortho: str, key: FlightKey | None, reason: str) -> None:
        """A new attempt; a run left ``running`` by a killed batch is closed as ``interrupted`` first."""
        rec = self.record(flight_id, ortho)
        if rec.runs and rec.runs[-1].get("state") == "running":
            rec.runs[-1]["state"] = "interrupted"
        rec.state = "running"
        rec.key = key.to_dict() if key is not None else None
        rec.error = None
        rec.attempts += 1
        rec.runs.append({"attempt": rec.attempts, "started_utc": now_utc(), "state": "running", "reason": reason})
        self.save()

    def finish(self, flight_id: str, output: str, summary: dict[str, Any], seconds: float,
               recovered: bool = False) -> None:
        rec = self.flights[flight_id]
        rec.state = "done"
        rec.output = output
        rec.summary = summary
        rec.error = None
        run = rec.runs[-1] if rec.runs else {}
        run.update({"state": "done", "finished_utc": now_utc(), "seconds": round(seconds, 3)})
        if recovered:
            run["note"] = "output of the interrupted run was complete; recovered, not redone"
        self.save()

    def fail(self, flight_id: str, error: str, seconds: float) -> None:
        rec = self.flights[flight_id]
        rec.state = "failed"
        rec.error = error
        if rec.runs:
            rec.runs[-1].update({"state": "failed", "finished_utc": now_utc(), "seconds": round(seconds, 3),
                                 "error": error})
        self.save()


def config_diff(before: str, after: str) -> list[str]:
    """Dotted keys whose values differ between two resolved-config YAML texts."""
    import yaml

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix.rstrip("."): d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out

    a, b = (flat(yaml.safe_load(t) or {}) for t in (before, after))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file, fsync and rename (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def batch_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a batch folder, so two batches never write the same status.

    The kernel drops the lock when the process dies (even on ``kill -9``), so a crashed batch never blocks
    its rerun.
    """
    import fcntl

    path = Path(out_dir) / LOCK_FILE
    f = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise OutputError(
                f"another rams batch ({holder}) is writing to {out_dir}; wait for it to finish or choose "
                "another --out"
            ) from err
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        f.close()

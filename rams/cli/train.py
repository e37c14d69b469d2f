"""``rams train``: train a detector from a config and export a model bundle."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer


def train(
    config: Path | None = typer.Option(None, "--config", "-c", help="Training config YAML (configs/train-*.yaml)."),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Wall-clock budget; stops cleanly (checkpoint, validation, bundle) when spent."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue a run: its folder or a checkpoint (RUN/checkpoints/last.safetensors)."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda (default: the config's, cpu)."),
    out: Path | None = typer.Option(None, "--out", help="Run folder (default runs/<name>, or the resumed run's)."),
    workers: int | None = typer.Option(None, "--workers", help="DataLoader worker processes (sample rendering)."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads in the main process."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over in an --out folder that holds a run."),
    max_epochs: int | None = typer.Option(
        None, "--max-epochs", help="Override the config's max_epochs; with --resume, continue a finished run for "
        "longer (the cosine learning-rate schedule becomes the longer run's)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
) -> None:
    """Train a detector: sample and augment chips, validate each epoch on held-out chips (recall at a fixed
    FP/ha), keep the best checkpoint, stop early or on --max-minutes, and write RUN/bundle (weights + card).

    Copy RUN/bundle to models/NAME to ship it (`rams models show NAME`).
    """
    from rams.detector.train import run_training, summary

    command = (
        "rams train " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("train") + 1 :])
        if ("train" in sys.argv)
        else None
    )
    result = run_training(config, out, resume, max_minutes, device, workers, threads, overwrite, command=command,
                          max_epochs=max_epochs)  # fmt: skip
    s = summary(result)
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    h = s["held_out"]
    rec = h["recall_class_aware"]
    typer.echo(
        f"trained {s['steps']} steps ({s['epochs']} epochs) in {s['elapsed']}, stopped: {s['stopped']}\n"
        f"best step {s['best_step']}: held-out recall {rec if rec is None else f'{rec:.3f}'} "
        f"(class-aware) at <= {h['fp_per_ha_limit']} FP/ha on {h['n_items']} items\n"
        f"run folder {s['out_dir']}; model bundle {s['bundle'] or '(none)'}"
    )


def mine(
    config: Path = typer.Option(..., "--config", "-c", help="Training config whose synthetic source is mined."),
    model: str = typer.Option("default", "--model", "-m", help="Model bundle (name in models/ or a folder)."),
    out: Path = typer.Option(..., "--out", help="JSON list of hard chips, for the source's hard_examples key."),
    source: int = typer.Option(0, "--source", help="Which source of the config (0-based; must be synthetic)."),
    keep: float = typer.Option(0.15, "--keep", help="Share kept of each list (missed objects, false alarms)."),
    candidates: int | None = typer.Option(None, "--candidates", help="Chips to score (default: the pool_size)."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Mine hard training chips: score every chip of a synthetic source with a model and keep those it gets most
    wrong (missed objects, false alarms). Name the file as `hard_examples` of a synthetic source to train on them.
    """
    from rams.detector.mining import mine as run_mine

    command = "rams mine " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("mine") + 1 :]) if (
        "mine" in sys.argv
    ) else ""
    doc = run_mine(config, model, out, source, keep, candidates, threads, command=command, overwrite=overwrite)
    typer.echo(
        f"{len(doc['indices'])} hard chips of {doc['candidates']} written to {out} "
        f"({doc['missed_positives']['chips']} by missed objects, {doc['false_alarms']['chips']} by false alarms; "
        f"{doc['seconds']} s)"
    )

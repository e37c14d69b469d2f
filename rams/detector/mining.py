"""Hard-example mining: the chips of a synthetic source that a trained model gets most wrong.

A model that has seen a chip pool many times learns little more from its easy chips (plain ground, big
high-contrast mines); what it still misses and what it still fires on are a small share of the pool. This
module scores every chip of one synthetic training source with a model bundle (no augmentation, the model in
eval mode) and keeps two lists:

* **missed positives**: the chips with the largest focal loss on their object centres (items the model scores
  low: in practice the small and low-contrast classes),
* **false alarms**: the chips with the largest focal loss on background cells (confusers and ground the model
  scores high).

Their union is written as a JSON file that a ``synthetic`` source of a training config names as
``hard_examples``: that source then draws only the mined chips (same cache, fresh augmentation each time), and
is mixed with the whole pool by ``weight``. The file records the sampler the chips come from (seed, chip size,
GSD, classes, sampler options), which the source checks, and the model and numbers of the mining.

Command: ``python -m rams.detector.mining --config configs/train-X.yaml --model default --out
runs/mined/X.json [--source 0] [--keep 0.15] [--threads 2]``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from rams.detector.datasets import SourceContext, SyntheticSource, SyntheticSourceConfig
from rams.detector.loss import encode_targets
from rams.detector.predict import normalise
from rams.errors import ConfigError, OutputError

log = logging.getLogger(__name__)


@dataclass
class ChipLosses:
    """Per-chip focal heatmap loss of a model, split into object centres and background."""

    indices: np.ndarray  # int64 (N,) chip indices of the sampler
    pos_loss: np.ndarray  # float64 (N,) summed focal loss on object-centre cells
    neg_loss: np.ndarray  # float64 (N,) summed focal loss on background cells (ignored cells excluded)
    n_objects: np.ndarray  # int64 (N,) objects taught in the chip


def chip_losses(
    model: torch.nn.Module,
    source: SyntheticSource,
    indices: list[int] | np.ndarray,
    num_classes: int,
    mean: list[float],
    std: list[float],
    batch_size: int = 32,
    stride: int = 4,
    progress: Any = None,
) -> ChipLosses:
    """Focal heatmap loss of ``model`` on each chip of ``source`` (no augmentation), in batches."""
    idx = np.asarray(indices, np.int64)
    pos = np.zeros(len(idx))
    neg = np.zeros(len(idx))
    nobj = np.zeros(len(idx), np.int64)
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        for b0 in range(0, len(idx), batch_size):
            chunk = idx[b0 : b0 + batch_size]
            samples = [source.sample_chip(int(j)) for j in chunk]
            targets = [encode_targets(smp, num_classes, stride) for smp in samples]
            x = torch.from_numpy(np.stack([smp.image for smp in samples]).astype(np.float32))
            v = torch.from_numpy(np.stack([smp.valid for smp in samples]))
            logits = model(normalise(x, v, m, s))["heatmap"].float()
            hm = torch.from_numpy(np.stack([t["heatmap"] for t in targets]))
            keep = torch.from_numpy(np.stack([t["ignore"] for t in targets])).unsqueeze(1)
            p = torch.sigmoid(logits)
            is_pos = hm.eq(1.0).float()
            pos_l = -(F.logsigmoid(logits) * (1 - p) ** 2 * is_pos * keep).sum(dim=(1, 2, 3))
            neg_l = -(F.logsigmoid(-logits) * p**2 * (1 - hm) ** 4 * (1 - is_pos) * keep).sum(dim=(1, 2, 3))
            pos[b0 : b0 + len(chunk)] = pos_l.double().numpy()
            neg[b0 : b0 + len(chunk)] = neg_l.double().numpy()
            nobj[b0 : b0 + len(chunk)] = [int(t["reg_mask"].sum()) for t in targets]
            if progress is not None:
                progress(len(chunk))
    return ChipLosses(idx, pos, neg, nobj)


def select_hard(losses: ChipLosses, keep: float) -> dict[str, Any]:
    """The ``keep`` share of chips with objects by centre loss, and of all chips by background loss."""
    if not 0 < keep <= 1:
        raise ConfigError(f"--keep {keep} must be a share in (0, 1], e.g. 0.15")
    with_obj = np.flatnonzero(losses.n_objects > 0)
    n_pos = max(1, int(round(keep * len(with_obj)))) if len(with_obj) else 0
    n_neg = max(1, int(round(keep * len(losses.indices))))
    # stable order: highest loss first, ties by chip index
    by_pos = with_obj[np.lexsort((losses.indices[with_obj], -losses.pos_loss[with_obj]))][:n_pos]
    by_neg = np.lexsort((losses.indices, -losses.neg_loss))[:n_neg]
    chosen = np.union1d(losses.indices[by_pos], losses.indices[by_neg])
    return {
        "indices": [int(i) for i in chosen],
        "missed_positives": {
            "chips": int(len(by_pos)),
            "of_chips_with_objects": int(len(with_obj)),
            "min_loss": float(losses.pos_loss[by_pos].min()) if len(by_pos) else None,
            "median_loss_all": float(np.median(losses.pos_loss[with_obj])) if len(with_obj) else None,
        },
        "false_alarms": {
            "chips": int(len(by_neg)),
            "of_chips": int(len(losses.indices)),
            "min_loss": float(losses.neg_loss[by_neg].min()),
            "median_loss_all": float(np.median(losses.neg_loss)),
        },
    }


def mine(
    config: Path,
    model_name: str,
    out: Path,
    source_index: int = 0,
    keep: float = 0.15,
    candidates: int | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    command: str = "",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Mine the hard chips of ``config``'s synthetic source ``source_index`` with ``model_name``; write ``out``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from rams.detector.bundle import load_bundle
    from rams.detector.train import load_train_config

    if not 0 < keep <= 1:
        raise ConfigError(f"--keep {keep} must be a share in (0, 1], e.g. 0.15")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists; choose another --out or pass --overwrite")
    cfg = load_train_config(config)
    if not 0 <= source_index < len(cfg.sources):
        raise ConfigError(f"--source {source_index}: the config has {len(cfg.sources)} source(s), numbered from 0")
    scfg = cfg.sources[source_index]
    if not isinstance(scfg, SyntheticSourceConfig):
        raise ConfigError(f"--source {source_index} is a {scfg.kind} source; mining works on synthetic sources")
    scfg = scfg.model_copy(update={"hard_examples": None})
    n = candidates if candidates is not None else scfg.pool_size
    if not n:
        raise ConfigError("the source has no pool_size; say how many chips to score with --candidates N")
    if scfg.pool_size and n > scfg.pool_size:
        raise ConfigError(f"--candidates {n} is more than the source's pool of {scfg.pool_size} chips")
    bundle = load_bundle(model_name)
    card = bundle.card
    differ = [
        what
        for what, a, b in (
            ("classes", list(card.classes), list(cfg.class_names)),
            ("bands", list(card.bands), list(cfg.bands)),
            ("normalisation", [card.normalisation.mean, card.normalisation.std], [cfg.norm_mean, cfg.norm_std]),
        )
        if [list(x) if isinstance(x, (list, tuple)) else x for x in a] != b
    ]
    if differ:
        raise ConfigError(
            f"model {card.name} differs from the config in {', '.join(differ)}; mine with a matching model"
        )
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    ctx = SourceContext(cfg.class_names, tuple(cfg.bands), cfg.gsd_m, cfg.chip_size_px)
    source = SyntheticSource(scfg, ctx)
    model = bundle.build_model()
    log.info("scoring %d chips of %s with %s %s", n, source.describe(), card.name, card.version)
    t0 = time.monotonic()
    with Progress(
        TextColumn("mining"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task("chips", total=n)
        losses = chip_losses(
            model, source, list(range(n)), len(cfg.class_names), cfg.norm_mean, cfg.norm_std, batch_size,
            card.output_stride, progress=lambda k: bar.advance(task, k),
        )  # fmt: skip
    chosen = select_hard(losses, keep)
    doc = {
        "rams_hard_examples": 1,
        "sampler": source.sampler_key(),
        "config": str(config),
        "source_index": source_index,
        "model": {"name": card.name, "version": card.version, "weights_sha256": card.weights_sha256},
        "candidates": n,
        "keep": keep,
        **chosen,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "command": command,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return doc


def main(argv: list[str] | None = None) -> int:
    """``python -m rams.detector.mining``."""
    import argparse


    ap = argparse.ArgumentParser(prog="python -m rams.detector.mining", description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True, help="training config whose source is mined")
    ap.add_argument("--model", default="default", help="model bundle name or folder (default: default)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the source's hard_examples key")
    ap.add_argument("--source", type=int, default=0, help="which source of the config (0-based; synthetic)")
    ap.add_argument("--keep", type=float, default=0.15, help="share kept of each list (default 0.15)")
    ap.add_argument("--candidates", type=int, help="chips to score (default: the source's pool_size)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)

    def body(command: str) -> None:
        doc = mine(
            args.config, args.model, args.out, args.source, args.keep, args.candidates, args.threads,
            args.batch_size, command, args.overwrite,
        )  # fmt: skip
        print(
            f"{len(doc['indices'])} hard chips of {doc['candidates']} -> {args.out} "
            f"({doc['missed_positives']['chips']} by missed objects, {doc['false_alarms']['chips']} by false "
            f"alarms; {doc['seconds']} s)"
        )

    from rams.detector.train import run_module_command

    return run_module_command("rams.detector.mining", argv, body)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Benchmark detector inference on CPU: Mpx/s of model-GSD imagery, peak RSS and parameters, as a table.

Two modes:

* ``--candidates``: forward pass of randomly initialised candidate architectures (width/depth/block
  choices, with and without channels_last), to choose the default design;
* ``--bundle NAME_OR_PATH`` (default ``default``): the full :class:`rams.detector.predict.Predictor`
  (normalisation, forward, peak decoding, NMS) of a shipped model, as ``rams detect`` runs it.

Each row runs in a fresh subprocess so that peak RSS is that configuration's alone. Threads default to 2
(the survey-laptop budget). Example::

    .venv/bin/python scripts/bench_model.py --threads 2 --batch 4 --repeats 5
    .venv/bin/python scripts/bench_model.py --candidates
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

CANDIDATES: dict[str, dict[str, object]] = {
    "A basic 16-24-48-64 d0-2-2 n48 h24": {
        "widths": [16, 24, 48, 64],
        "depths": [0, 2, 2],
        "neck_width": 48,
        "head_width": 24,
    },
    "B basic 16-24-48-64 d0-1-1 n48 h24": {
        "widths": [16, 24, 48, 64],
        "depths": [0, 1, 1],
        "neck_width": 48,
        "head_width": 24,
    },
    "C basic 16-32-48-64 d1-2-2 n48 h32": {
        "widths": [16, 32, 48, 64],
        "depths": [1, 2, 2],
        "neck_width": 48,
        "head_width": 32,
    },
    "D basic 16-24-64-96 d0-2-2 n64 h24": {
        "widths": [16, 24, 64, 96],
        "depths": [0, 2, 2],
        "neck_width": 64,
        "head_width": 24,
    },
    "E basic 12-16-32-64 d0-2-2 n32 h16": {
        "widths": [12, 16, 32, 64],
        "depths": [0, 2, 2],
        "neck_width": 32,
        "head_width": 16,
    },
    "F dw 16-24-48-64 d0-2-2 n48 h24": {
        "widths": [16, 24, 48, 64],
        "depths": [0, 2, 2],
        "neck_width": 48,
        "head_width": 24,
        "block": "dw",
    },
    "G dw 16-32-64-128 d1-3-3 n64 h32": {
        "widths": [16, 32, 64, 128],
        "depths": [1, 3, 3],
        "neck_width": 64,
        "head_width": 32,
        "block": "dw",
    },
}


def _gflop_per_mpx(model: object, bands: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, bands, 256, 256)
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(x)  # type: ignore[operator]
    return fc.get_total_flops() / 1e9 / (256 * 256 / 1e6)


def _run_one(spec: dict[str, object]) -> dict[str, object]:
    """Measure one configuration in this process (called in a child)."""
    import resource

    import numpy as np
    import torch
    import torchvision  # noqa: F401  (imported by the detector anyway: counted in the baseline RSS)

    rss_import_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    threads = int(spec["threads"])  # type: ignore[call-overload]
    torch.set_num_threads(threads)
    batch, tile, repeats = int(spec["batch"]), int(spec["tile"]), int(spec["repeats"])  # type: ignore[call-overload]
    rng = np.random.default_rng(0)
    if spec.get("bundle"):
        from rams.detector.bundle import load_bundle
        from rams.detector.predict import Predictor

        bundle = load_bundle(str(spec["bundle"]))
        pred = Predictor(bundle, device="cpu", threads=threads)
        bands = len(bundle.card.bands)
        imgs = rng.random((batch, bands, tile, tile), dtype=np.float32)
        valid = np.ones((batch, tile, tile), bool)
        thr = bundle.card.operating_points[bundle.card.default_operating_point]

        def step() -> None:
            pred.predict(imgs, valid, thr)

        params = sum(p.numel() for p in pred.model.parameters())
        gflop = _gflop_per_mpx(pred.model, bands)
    else:
        from rams.detector.model import build_model, fuse_batchnorm

        model = build_model(3, 9, spec["params"])  # type: ignore[arg-type]
        params = sum(p.numel() for p in model.parameters())
        model.eval()
        fuse_batchnorm(model)
        gflop = _gflop_per_mpx(model, 3)
        x = torch.from_numpy(rng.random((batch, 3, tile, tile), dtype=np.float32))
        if spec.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def step() -> None:
            with torch.inference_mode():
                model(x)

    step()  # warm-up (oneDNN kernel selection)
    times = []
    cpu0 = time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    cpu_s = time.process_time() - cpu0
    mpx = batch * tile * tile / 1e6
    best, median = min(times), sorted(times)[len(times) // 2]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mpx_per_cpu_s": mpx * repeats / cpu_s,
        "mpx_s_median": mpx / median,
        "mpx_s_best": mpx / best,
        "rss_mb": rss_mb,
        "rss_import_mb": rss_import_mb,
        "params": params,
        "gflop_mpx": gflop,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=None, help="model name or bundle folder (default: 'default')")
    ap.add_argument("--candidates", action="store_true", help="benchmark candidate architectures instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=None, help="substring filter on candidate names")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_run_one(json.loads(args.child))))
        return
    base = {"threads": args.threads, "batch": args.batch, "tile": args.tile, "repeats": args.repeats}
    rows: list[tuple[str, dict[str, object]]] = []
    if args.candidates:
        for name, params in CANDIDATES.items():
            if args.only and args.only not in name:
                continue
            for cl in (False, True):
                rows.append((f"{name}{' cl' if cl else ''}", {**base, "params": params, "channels_last": cl}))
    else:
        name = args.bundle or "default"
        rows.append((f"bundle {name} (full Predictor)", {**base, "bundle": name}))
    load = os.getloadavg()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, torch threads "
        f"{args.threads}, batch {args.batch} x {args.tile}x{args.tile} px, {args.repeats} repeats, "
        f"load average at start {load[0]:.2f}"
    )
    cols = ["Mpx/s median", "Mpx/s best", "Mpx/CPU-s", "peak RSS MB", "RSS after imports MB", "params", "GFLOP/Mpx"]
    print(f"| {'configuration':<40} | " + " | ".join(cols) + " |")
    print(f"|{'-' * 42}|" + "|".join("-" * (len(c) + 1) + ":" for c in cols) + "|")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    for name, spec in rows:
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env
        )
        if out.returncode != 0:
            print(f"| {name:<40} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr else '?'} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        vals = [
            f"{r['mpx_s_median']:.1f}",
            f"{r['mpx_s_best']:.1f}",
            f"{r['mpx_per_cpu_s']:.1f}",
            f"{r['rss_mb']:.0f}",
            f"{r['rss_import_mb']:.0f}",
            f"{r['params']}",
            f"{r['gflop_mpx']:.1f}",
        ]
        print(f"| {name:<40} | " + " | ".join(v.rjust(len(c)) for v, c in zip(vals, cols, strict=True)) + " |")
    load = os.getloadavg()
    print(f"# load average at end {load[0]:.2f}")


if __name__ == "__main__":
    main()

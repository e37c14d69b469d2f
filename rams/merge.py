"""Seam-free merging of tile detections into one set in map coordinates.

Two rules make every object appear exactly once:

1. *Core ownership*: a detection is kept only by the tile whose core holds its centre. Cores partition the
   grid (:mod:`rams.tiling`) and overlaps exceed the largest object, so each object lies whole in the tile
   that owns its centre.
2. *Duplicate merging*: an object whose centre sits near a core border can be seen whole by two tiles that
   each place its centre on their own side. Same-class detections whose centres fall inside each other's
   footprint (or closer than ``min_distance_m``) are merged, the highest score kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rams.tiling import Tile

#: Same-class detections whose centres are closer than this (metres) are one object (``rams detect``'s default,
#: also used by training validation on whole scenes).
MERGE_DISTANCE_M = 0.03


@dataclass(frozen=True)
class MapDetection:
    """One detection in map coordinates (metres in the grid CRS)."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    label: int
    tile_id: str

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


def owned_detections(
    boxes_xyxy_px: np.ndarray, scores: np.ndarray, labels: np.ndarray, tile: Tile
) -> list[MapDetection]:
    """Detections of one tile whose centre lies in the tile's core, converted to map coordinates."""
    out: list[MapDetection] = []
    t = tile.transform
    for (c0, r0, c1, r1), s, lab in zip(boxes_xyxy_px.tolist(), scores.tolist(), labels.tolist(), strict=True):
        cc, rc = (c0 + c1) / 2, (r0 + r1) / 2
        if not tile.core_contains(rc, cc):
            continue
        x0, y0 = t.c + c0 * t.a, t.f + r1 * t.e
        x1, y1 = t.c + c1 * t.a, t.f + r0 * t.e
        out.append(MapDetection(x0, y0, x1, y1, float(s), int(lab), tile.tile_id))
    return out


def merge_duplicates(dets: Sequence[MapDetection], min_distance_m: float = MERGE_DISTANCE_M) -> list[MapDetection]:
    """Greedy same-class merge by descending score (ties: input order, so results are deterministic).

    A detection is dropped when a kept one of the same class has its centre inside the detection's box,
    the detection's centre inside the kept box, or the centres closer than ``min_distance_m``.
    """
    kept = [dets[i] for i in merge_groups(dets, min_distance_m)]
    kept.sort(key=lambda d: (d.tile_id, -d.score, d.cx, d.cy))
    return kept


def merge_groups(dets: Sequence[MapDetection], min_distance_m: float = MERGE_DISTANCE_M,
                 cell: float = 1.0) -> dict[int, list[int]]:
    """The merge of :func:`merge_duplicates` as groups: index of each kept detection -> the indexes of the
    detections merged into it, itself first (kept in descending score order). ``cell``: side of the spatial hash
    used for neighbour look-ups, in the detections' units (1 m; pixel coordinates pass 1 m in pixels)."""
    order = sorted(range(len(dets)), key=lambda i: (-dets[i].score, i))
    groups: dict[int, list[int]] = {}
    index: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i in order:
        d = dets[i]
        gx, gy = int(np.floor(d.cx / cell)), int(np.floor(d.cy / cell))
        reach = max(d.x1 - d.x0, d.y1 - d.y0, min_distance_m)
        n = int(np.ceil(reach / cell))
        owner = -1
        for dx in range(-n, n + 1):
            for dy in range(-n, n + 1):
                for k in index.get((d.label, gx + dx, gy + dy), ()):
                    if _same_object(d, dets[k], min_distance_m):
                        owner = k
                        break
                if owner >= 0:
                    break
            if owner >= 0:
                break
        if owner >= 0:
            groups[owner].append(i)
        else:
            groups[i] = [i]
            index[(d.label, gx, gy)].append(i)
    return groups


def _same_object(a: MapDetection, b: MapDetection, min_distance_m: float) -> bool:
    if (a.cx - b.cx) ** 2 + (a.cy - b.cy) ** 2 < min_distance_m**2:
        return True
    in_b = b.x0 <= a.cx <= b.x1 and b.y0 <= a.cy <= b.y1
    in_a = a.x0 <= b.cx <= a.x1 and a.y0 <= b.cy <= a.y1
    return in_a or in_b

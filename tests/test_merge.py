"""Seam handling: core ownership and duplicate merging in map coordinates, with exact expectations."""

from __future__ import annotations

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from rams.coverage import core_coverage, dissolve
from rams.merge import MapDetection, merge_duplicates, owned_detections
from rams.raster import Grid
from rams.tiling import make_tiles

GRID = Grid(CRS.from_epsg(32638), Affine(0.01, 0, 500000.0, 0, -0.01, 4400000.0), 1000, 700)


def test_each_object_owned_by_exactly_one_tile() -> None:
    tiles = make_tiles(GRID, 256, 64)
    rng = np.random.default_rng(0)
    # objects of 12 px everywhere, many straddling core borders: every tile that sees one whole reports it
    centres = rng.uniform([10, 10], [990, 690], size=(300, 2))  # (row, col) in grid px
    owners = np.zeros(len(centres), int)
    for t in tiles:
        r0, c0 = t.window.row_off, t.window.col_off
        boxes, keep = [], []
        for i, (r, c) in enumerate(centres):
            lr, lc = r - r0, c - c0
            if 6 <= lr <= 250 and 6 <= lc <= 250:  # whole object inside the window
                boxes.append([lc - 6, lr - 6, lc + 6, lr + 6])
                keep.append(i)
        if not boxes:
            continue
        b = np.array(boxes, np.float32)
        dets = owned_detections(b, np.ones(len(b), np.float32), np.zeros(len(b), np.int64), t)
        for d in dets:
            # map back to the object
            col = (d.cx - GRID.transform.c) / 0.01
            row = (GRID.transform.f - d.cy) / 0.01
            j = int(np.argmin(np.hypot(centres[:, 0] - row, centres[:, 1] - col)))
            owners[j] += 1
    assert (owners == 1).all()


def test_owned_detection_map_coordinates() -> None:
    tiles = make_tiles(GRID, 256, 64)
    t = tiles[0]
    dets = owned_detections(np.array([[10, 20, 22, 26]], np.float32), np.array([0.9], np.float32),
                            np.array([2]), t)
    (d,) = dets
    assert (d.x0, d.x1) == (500000.10, 500000.22)
    assert d.y1 == 4400000.0 - 0.20 and abs(d.y0 - (4400000.0 - 0.26)) < 1e-9
    assert d.label == 2 and d.tile_id == "r0000c0000"


def test_merge_duplicates_across_seam() -> None:
    a = MapDetection(0.0, 0.0, 0.12, 0.12, 0.8, 1, "r0000c0000")
    b = MapDetection(0.02, 0.01, 0.14, 0.13, 0.9, 1, "r0000c0001")  # same object seen by the neighbour
    c = MapDetection(0.02, 0.01, 0.14, 0.13, 0.7, 2, "r0000c0001")  # other class at the same place: kept
    d = MapDetection(1.0, 1.0, 1.1, 1.1, 0.5, 1, "r0000c0001")  # far away: kept
    kept = merge_duplicates([a, b, c, d])
    assert sorted((k.score, k.label) for k in kept) == [(0.5, 1), (0.7, 2), (0.9, 1)]


def test_merge_is_deterministic_on_ties() -> None:
    a = MapDetection(0.0, 0.0, 0.1, 0.1, 0.8, 0, "r0000c0000")
    b = MapDetection(0.01, 0.0, 0.11, 0.1, 0.8, 0, "r0000c0001")
    assert merge_duplicates([a, b]) == [a]
    assert merge_duplicates([b, a]) == [b]


def test_core_coverage_exact_area() -> None:
    tiles = make_tiles(GRID, 256, 64)
    total = 0.0
    polys = []
    for t in tiles:
        valid = np.ones((256, 256), bool)
        valid[:, 128:] = False  # right half of every window unimaged
        p = core_coverage(t, valid, GRID)
        polys += p
        total += sum(g.area for g in p)
    merged = dissolve(polys)
    assert abs(merged.area - total) < 1e-6  # cores do not overlap
    # full-valid tile -> exactly its core box
    p = core_coverage(tiles[0], np.ones((256, 256), bool), GRID)
    c = tiles[0].core
    assert len(p) == 1 and abs(p[0].area - c.width * c.height * 1e-4) < 1e-9


def test_dissolve_closes_float_seams_between_pieces() -> None:
    """Pieces of neighbouring tiles share corners computed through different affine products; a last-bit
    difference must not leave a hairline gap that splits the analysed ground into touching parts."""
    from shapely.geometry import box

    x = 500010.0
    left = box(500000.0, 4400000.0, x, 4400010.0)
    right = box(x + 3e-9, 4400000.0, 500020.0, 4400010.0)  # the same edge, 3 nm off
    assert dissolve([left, right]).geom_type == "MultiPolygon"  # what an exact union gives
    merged = dissolve([left, right], grid_size=0.01 * 1e-4)
    assert merged.geom_type == "Polygon" and abs(merged.area - 200.0) < 1e-6

"""One survey from many flights: detections fused where flights overlap, every sighting kept as provenance.

Flights of one survey overlap (neighbouring blocks, re-flights of a blurred block, a second day). An item in
an overlap is then detected once per flight that saw it; the survey must count it once, and must still show
which flights saw it and with what score, because two independent sightings are stronger evidence than one.

**Fusion rule.** Two detections are *sightings of one object* when they come from **different** flights, have
the same label (``same_label``; off: any labels) and their footprint centres lie within ``match_distance_m``
in a metric CRS. Candidate pairs are linked closest first, and a link is refused when it would put two
detections of the *same* flight into one object (within a flight, ``rams detect`` already merged duplicates, so
two detections of one flight are two objects). Chains across three or more flights are followed (A-B, B-C:
one object seen three times).

``match_distance_m`` must exceed the *relative* registration error between overlapping mosaics and stay below
the spacing of distinct items: the default 0.5 m suits mosaics with RTK/PPK or ground control (a few cm to a
few dm apart) and keeps laid AP mines 0.8-1.5 m apart separate. For mosaics without ground control (metres
apart) raise it only knowingly: a large value merges distinct neighbouring items into one.

**Representative.** A fused object takes the footprint, label, score and attributes of its highest-scoring
sighting; ``n_views``, ``flights`` and ``sightings`` (``FLIGHT:det_id`` of every sighting) keep the rest, and
the ``sightings`` layer holds every per-flight detection with the survey ``det_id`` it was fused into.

Everything here is a pure function of GeoDataFrames; :mod:`rams.batch.run` reads and writes the files.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from rams.config import StrictModel

if TYPE_CHECKING:
    import geopandas as gpd

    from rams.batch.manifest import Flight
    from rams.polygons import PolygonsConfig
    from rams.sha import ReduceConfig

log = logging.getLogger(__name__)

#: Columns of the fused ``detections`` layer (the per-flight layer's columns plus provenance).
OBJECT_COLUMNS = [
    "det_id", "label", "score", "n_views", "flights", "sightings", "flight_id", "flight_det_id", "model",
    "tile_id", "length_m", "width_m", "lon", "lat", "status",
]
SIGHTING_COLUMNS = [
    "flight_id", "flight_det_id", "det_id", "label", "score", "model", "tile_id", "length_m", "width_m", "lon",
    "lat",
]


class FuseConfig(StrictModel):
    """How detections of overlapping flights are fused (see the module docstring)."""

    match_distance_m: float = Field(default=0.5, ge=0.0)
    """Sightings of different flights whose centres are closer than this are one object (metres)."""
    same_label: bool = True
    """Fuse only sightings with the same label (off: any labels; the representative's label wins)."""


@dataclass
class FuseResult:
    """Fused objects, every sighting, and how many cross-flight links were made."""

    objects: gpd.GeoDataFrame
    sightings: gpd.GeoDataFrame
    links: int

    @property
    def seen_more_than_once(self) -> int:
        return int((self.objects["n_views"] > 1).sum()) if len(self.objects) else 0


def survey_crs(layers: Sequence[gpd.GeoDataFrame]) -> Any:
    """The CRS most layers use (ties: the first); the survey is written in it."""
    crss = [g.crs for g in layers if g is not None and g.crs is not None]
    if not crss:
        return None
    counts = Counter(c.to_string() for c in crss)
    best = max(counts.values())
    return next(c for c in crss if counts[c.to_string()] == best)


def fuse_detections(
    per_flight: Mapping[str, gpd.GeoDataFrame], cfg: FuseConfig | None = None, crs: Any = None
) -> FuseResult:
    """Fuse the ``detections`` layers of several flights into one object layer (see the module docstring).

    Args:
        per_flight: flight ID -> that flight's ``detections`` layer (``det_id``, ``label``, ``score``, footprint
            geometry; any CRS). Order matters only for ties: earlier flights win.
        cfg: matching distance and label rule.
        crs: CRS of the output (default: :func:`survey_crs` of the inputs).

    Returns:
        :class:`FuseResult`: ``objects`` (columns :data:`OBJECT_COLUMNS`, ``det_id`` numbered 1.. in order of each
        object's first sighting: flight order, then det_id) and ``sightings`` (columns :data:`SIGHTING_COLUMNS`).
    """
    import geopandas as gpd
    import pandas as pd
    from scipy.spatial import cKDTree

    from rams.polygons import metric_crs

    cfg = cfg or FuseConfig()
    crs = crs if crs is not None else survey_crs(list(per_flight.values()))
    parts = []
    for fid, gdf in per_flight.items():
        if gdf is None or gdf.empty:
            continue
        g = gdf.to_crs(crs) if gdf.crs is not None and crs is not None and gdf.crs != crs else gdf
        g = g.reset_index(drop=True).copy()
        g["flight_id"] = fid
        g["flight_det_id"] = g["det_id"].astype(int)
        parts.append(g)
    if not parts:
        return FuseResult(_empty(OBJECT_COLUMNS, crs), _empty(SIGHTING_COLUMNS, crs), 0)
    allg = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=crs)
    n = len(allg)
    mcrs = metric_crs(crs, allg.geometry)
    centres_g = allg.geometry.to_crs(mcrs).centroid if mcrs != crs else allg.geometry.centroid
    xy = np.column_stack([centres_g.x.to_numpy(), centres_g.y.to_numpy()])
    flight_codes = pd.factorize(allg["flight_id"])[0]
    labels = allg["label"].astype(str).to_numpy()
    pairs = cKDTree(xy).query_pairs(r=cfg.match_distance_m, output_type="ndarray") if n > 1 else np.zeros((0, 2))
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs):
        keep = flight_codes[pairs[:, 0]] != flight_codes[pairs[:, 1]]
        if cfg.same_label:
            keep &= labels[pairs[:, 0]] == labels[pairs[:, 1]]
        pairs = pairs[keep]
    dist = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T) if len(pairs) else np.zeros(0)
    order = np.lexsort((pairs[:, 1], pairs[:, 0], dist)) if len(pairs) else np.zeros(0, np.int64)
    parent = np.arange(n)
    members_flights: dict[int, set[int]] = {i: {int(flight_codes[i])} for i in range(n)}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    links = 0
    for k in order:
        a, b = find(int(pairs[k, 0])), find(int(pairs[k, 1]))
        if a == b or members_flights[a] & members_flights[b]:
            continue  # already one object, or the link would join two detections of one flight
        lo, hi = min(a, b), max(a, b)
        parent[hi] = lo
        members_flights[lo] |= members_flights.pop(hi)
        links += 1
    roots = np.array([find(i) for i in range(n)])
    scores = allg["score"].astype(float).to_numpy()
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(roots):
        groups.setdefault(int(r), []).append(i)
    reps = []
    for members in groups.values():
        # highest score; ties: the earliest row (flight order, then that flight's det_id order)
        reps.append((min(members, key=lambda i: (-scores[i], i)), members))
    reps.sort(key=lambda t: min(t[1]))  # numbered by first sighting: flight order, then that flight's det_id
    rows = []
    geoms = []
    survey_id = np.zeros(n, np.int64)
    for new_id, (rep, members) in enumerate(reps, start=1):
        src = allg.iloc[rep]
        ordered = sorted(members)
        survey_id[ordered] = new_id
        seen = [f"{allg['flight_id'].iat[i]}:{int(allg['flight_det_id'].iat[i])}" for i in ordered]
        row = {c: src[c] if c in allg.columns else None for c in OBJECT_COLUMNS}
        row.update({
            "det_id": new_id,
            "n_views": len(members),
            "flights": ",".join(dict.fromkeys(str(allg["flight_id"].iat[i]) for i in ordered)),
            "sightings": ",".join(seen),
            "flight_det_id": int(src["flight_det_id"]),
        })
        rows.append(row)
        geoms.append(src.geometry)
    objects = gpd.GeoDataFrame(rows, columns=OBJECT_COLUMNS, geometry=geoms, crs=crs)
    sight = allg.copy()
    sight["det_id"] = survey_id
    for c in SIGHTING_COLUMNS:
        if c not in sight.columns:
            sight[c] = None
    sightings = gpd.GeoDataFrame(sight[[*SIGHTING_COLUMNS, "geometry"]], geometry="geometry", crs=crs)
    log.info("fused %d sightings from %d flights into %d objects (%d cross-flight links)",
             n, len(parts), len(objects), links)
    return FuseResult(objects, sightings, links)


def _empty(columns: list[str], crs: Any) -> gpd.GeoDataFrame:
    import geopandas as gpd

    return gpd.GeoDataFrame({c: [] for c in columns}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


@dataclass
class FlightLayers:
    """What the survey takes from one finished flight's GeoPackage."""

    flight: Flight
    detections: gpd.GeoDataFrame
    coverage: gpd.GeoDataFrame
    quality: gpd.GeoDataFrame | None
    info: dict[str, Any] = field(default_factory=dict)
    """Flight-level attributes for the ``flights`` layer (input hash, model, output path...)."""


@dataclass
class SurveyResult:
    """The survey's layers (in one CRS) and what they add up to."""

    layers: dict[str, gpd.GeoDataFrame]
    summary: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def build_survey(
    flights: Sequence[FlightLayers],
    fuse_cfg: FuseConfig | None = None,
    polygons_cfg: PolygonsConfig | None = None,
    sha: gpd.GeoDataFrame | None = None,
    reduce_cfg: ReduceConfig | None = None,
    detector_unproven: str | None = None,
    threat_classes: Sequence[str] | None = None,
) -> SurveyResult:
    """Merge finished flights into one survey: fused detections, sightings, coverage, coverage quality,
    hazard polygons rebuilt from the fused objects, a ``flights`` layer, and SHA proposals when ``sha`` is given.

    Ground counts as analysed or adequately imaged when *any* flight analysed it or imaged it adequately;
    hazard polygons come from the fused objects, so an item seen twice is not counted twice.
    """
    import geopandas as gpd
    import pandas as pd
    from shapely import union_all
    from shapely.geometry import MultiPolygon, Polygon

    from rams.polygons import build_hazard_polygons, metric_crs, summarise

    if not flights:
        raise ValueError("build_survey needs at least one finished flight")
    crs = survey_crs([f.detections for f in flights if not f.detections.empty] or [f.coverage for f in flights])
    fused = fuse_detections({f.flight.flight_id: f.detections for f in flights}, fuse_cfg, crs)

    def stack(frames: list[tuple[str, gpd.GeoDataFrame]]) -> gpd.GeoDataFrame:
        out = []
        for fid, g in frames:
            if g is None or g.empty:
                continue
            g = (g.to_crs(crs) if g.crs != crs else g).copy()
            g.insert(0, "flight_id", fid)
            out.append(g)
        if not out:
            return gpd.GeoDataFrame({"flight_id": []}, geometry=gpd.GeoSeries([], crs=crs), crs=crs)
        return gpd.GeoDataFrame(pd.concat(out, ignore_index=True), geometry="geometry", crs=crs)

    coverage = stack([(f.flight.flight_id, f.coverage) for f in flights])
    quality_frames = [(f.flight.flight_id, f.quality) for f in flights if f.quality is not None]
    quality = stack(quality_frames) if quality_frames else None
    if quality is not None and "cell_id" in quality.columns:
        quality["cell_id"] = quality["flight_id"].astype(str) + "/" + quality["cell_id"].astype(str)
    hazard = build_hazard_polygons(fused.objects, polygons_cfg)
    mcrs = metric_crs(crs, coverage.geometry if len(coverage) else None)
    rows, geoms = [], []
    for f in flights:
        cov = coverage[coverage["flight_id"] == f.flight.flight_id]
        geom = union_all(cov.geometry.values) if len(cov) else Polygon()
        area = float(gpd.GeoSeries([geom], crs=crs).to_crs(mcrs).area.iloc[0]) if not geom.is_empty else 0.0
        rows.append({
            "flight_id": f.flight.flight_id,
            "date": f.flight.date or "",
            "operator": f.flight.operator or "",
            "sensor": f.flight.sensor or "",
            "orthomosaic": str(f.flight.ortho),
            "detections": len(f.detections),
            "analysed_ha": area / 1e4,
            **{k: str(v) for k, v in f.info.items()},
        })
        geoms.append(MultiPolygon([geom]) if isinstance(geom, Polygon) and not geom.is_empty else geom)
    flights_layer = gpd.GeoDataFrame(rows, geometry=geoms, crs=crs)
    layers: dict[str, gpd.GeoDataFrame] = {
        "detections": fused.objects,
        "sightings": fused.sightings,
        "coverage": coverage,
        "hazard_polygons": hazard,
        "flights": flights_layer,
    }
    if quality is not None:
        layers["coverage_quality"] = quality
    union = union_all(coverage.geometry.values) if len(coverage) else Polygon()
    union_m2 = float(gpd.GeoSeries([union], crs=crs).to_crs(mcrs).area.iloc[0]) if not union.is_empty else 0.0
    notes: list[str] = []
    summary: dict[str, Any] = {
        "flights": len(flights),
        "crs": crs.to_string() if crs is not None else None,
        "sightings": len(fused.sightings),
        "detections": len(fused.objects),
        "seen_more_than_once": fused.seen_more_than_once,
        "cross_flight_links": fused.links,
        "analysed_ha": union_m2 / 1e4,
        "hazard_polygons": summarise(hazard),
    }
    if sha is not None:
        from rams.sha import CANCELLATION_LAYER, REMAINING_LAYER, TABLE_LAYER, reduce_sha

        res = reduce_sha(sha, hazard, quality, coverage, fused.objects, reduce_cfg, polygons_cfg,
                         detector_unproven=detector_unproven, threat_classes=threat_classes)  # fmt: skip
        layers[TABLE_LAYER] = res.table
        layers[REMAINING_LAYER] = res.remaining
        layers[CANCELLATION_LAYER] = res.cancellation
        red = res.summary()
        summary["reduce"] = {k: red[k] for k in ("shas", "sha_m2", "cancel_m2", "remain_m2")}
        notes.extend(res.notes)
    return SurveyResult(layers, summary, notes)

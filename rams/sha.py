"""SHA reduction proposals: which part of each Suspected Hazardous Area the drone evidence says to keep.

For each SHA polygon (its ID and attributes kept):

* ``adequate`` = ground the imagery shows well enough (``coverage_quality`` class ``adequate``) **and** that
  the detector analysed (the result's ``coverage`` layer);
* ``evidence`` = candidate hazard polygons (``hazard_polygons``: detections clustered and buffered);
* ``edge margin`` = adequate ground within ``edge_margin_m`` (default: the longest threat item) of ground that is
  not adequate: an item across that edge is only partly imaged;
* proposed **cancellation** = (SHA ∩ adequate − edge margin) − evidence, without pieces narrower than
  ``min_cancellation_width_m`` or smaller than ``min_cancellation_area_m2``;
* proposed **remaining** = SHA − cancellation = SHA ∩ (evidence ∪ inadequately imaged ∪ not imaged ∪ not
  analysed ∪ edge margin ∪ pieces too small to release), split into pieces by that reason.

Ground is never assumed adequate: without a ``coverage_quality`` layer nothing is, without a detector
``coverage`` layer nothing is either (unless configured otherwise), so a SHA that was partly not imaged never
gets a cancellation proposal over the unimaged part. Drone imagery is non-technical-survey evidence of
surface-visible items only: every output is a *recommendation* for the national mine action authority, which
the ``status`` fields say, never a statement that land is safe or "cleared".

Areas are computed in a metric CRS (the SHA's CRS when it is a metric projection, else its UTM zone); output
geometries are in the SHA's CRS, valid (``make_valid``) and free of slivers below ``sliver_area_m2``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from rams import __version__
from rams.config import StrictModel, dump_config
from rams.errors import OutputError, VectorInputError
from rams.export import ExportConfig, derive_gpkg
from rams.gate import run_detector_gate, threat_classes_of
from rams.polygons import (
    LAYER as HAZARD_LAYER,
)
from rams.polygons import (
    REQUIRED_COLUMNS,
    PolygonsConfig,
    build_hazard_polygons,
    metric_crs,
    review_state,
)
from rams.quality import ADEQUATE, QualityConfig
from rams.styles import default_styles

if TYPE_CHECKING:
    import geopandas as gpd

log = logging.getLogger(__name__)

TABLE_LAYER = "sha_reduction"
REMAINING_LAYER = "sha_proposed_remaining"
CANCELLATION_LAYER = "sha_proposed_cancellation"
QUALITY_LAYER = "coverage_quality"
COVERAGE_LAYER = "coverage"
DETECTIONS_LAYER = "detections"

#: Columns rams adds to each SHA in the per-SHA table (shapefile-safe: at most 10 characters).
STAT_COLUMNS = (
    "sha_id", "sha_m2", "sha_ha", "adeq_m2", "adeq_pct", "inadeq_m2", "noimg_m2", "evid_m2", "cancel_m2",
    "cancel_ha", "cancel_pct", "remain_m2", "remain_ha", "remain_pct", "n_items", "n_confirm", "n_hazpoly",
    "evidence", "status", "note", "basis",
)
ID_CANDIDATES = ("sha_id", "PolyID", "polyid", "POLYID", "hazard_id", "HazardID", "id", "ID", "name", "Name")
BASIS = "drone imagery: non-technical survey, surface-visible items only; not clearance"


class ReduceConfig(StrictModel):
    """Rules of the SHA reduction proposal."""

    sha_id_column: str | None = None
    """SHA attribute holding its ID (None: the first of sha_id, PolyID, hazard_id, id, name present)."""
    min_cancellation_width_m: float = 1.0
    """Cancellation pieces narrower than this (morphological opening) stay in the remaining area."""
    min_cancellation_area_m2: float = 25.0
    """Cancellation pieces smaller than this stay in the remaining area (not worth a separate release)."""
    sliver_area_m2: float = 0.01
    """Pieces of any output layer smaller than this are numerical slivers and dropped."""
    simplify_cancellation_m: float = 0.0
    """Fewer turning points for field marking: the cancellation outline is eroded by this distance and then
    simplified with it as tolerance, so it only ever shrinks (0: exact outline, following cell and pixel edges).
    In the worked example of docs/decisions.md, 0.5 m took the outline from 1019 to 66 turning points and the
    proposed cancellation from 4464 to 4196 m2."""
    edge_margin_m: float | None = None
    """Ground within this distance of anything that cannot support cancellation (not imaged, inadequately imaged,
    not analysed) is not proposed for cancellation either (reason ``edge margin``). An item lying across such an
    edge is only partly seen, and a detector cannot be trusted to find half an item; any part of an item is within
    its length of the edge, so None (default) uses the longest item of the threat classes (the quality step's
    ``classes``; all classes when unset: 0.70 m, a 152 mm shell; 0.12 m for PFM-1 and PMN). 0 switches it off."""
    require_detector_coverage: bool = True
    """Cancel only where the detector's ``coverage`` layer says it analysed the ground (keep True)."""
    min_model_recall: float = Field(default=0.9, ge=0.0, le=1.0)
    """Cancel only if the detector's recall, measured on held-out data at a threshold no stricter than the run's
    (its card: ``metrics.held_out_flights`` if present, else ``metrics.synthetic_scenes``), reaches this for every
    threat class (the quality step's ``classes``; all classes when unset); the lower end of the recall's 95 %
    (Wilson) interval must reach it, so a recall measured on a few items does not pass. A detector that cannot
    find a threat cannot support releasing land where that threat is suspected: absence of its detections is not
    evidence. 0 switches the check off."""
    authority: str = "NMAA"
    """Who decides, as named in the status fields (e.g. ANAMA in Azerbaijan)."""

    @field_validator("min_cancellation_width_m", "min_cancellation_area_m2", "sliver_area_m2",
                     "simplify_cancellation_m", "edge_margin_m")
    @classmethod
    def _nonneg(cls, v: float | None) -> float | None:
        if v is not None and not v >= 0:
            raise ValueError("must be >= 0")
        return v

    def margin_m(self, threat_classes: Sequence[str] | None) -> float:
        """:attr:`edge_margin_m`, or the longest item of ``threat_classes`` (all classes when None)."""
        if self.edge_margin_m is not None:
            return float(self.edge_margin_m)
        from rams.classes import CLASS_NAMES, get_class

        return max(get_class(c).max_length_m for c in (threat_classes or CLASS_NAMES))


class DecisionsConfig(StrictModel):
    """The one configuration of the decision steps (``configs/decisions-default.yaml``)."""

    quality: QualityConfig = Field(default_factory=QualityConfig)
    polygons: PolygonsConfig = Field(default_factory=PolygonsConfig)
    reduce: ReduceConfig = Field(default_factory=ReduceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)


@dataclass
class ReductionResult:
    """The proposal layers and the per-SHA table, all in the SHA's CRS."""

    table: gpd.GeoDataFrame
    remaining: gpd.GeoDataFrame
    cancellation: gpd.GeoDataFrame
    evidence_outside_sha: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        t = self.table
        return {
            "shas": len(t),
            "sha_m2": float(t["sha_m2"].sum()) if len(t) else 0.0,
            "cancel_m2": float(t["cancel_m2"].sum()) if len(t) else 0.0,
            "remain_m2": float(t["remain_m2"].sum()) if len(t) else 0.0,
            "evidence_outside_sha": list(self.evidence_outside_sha),
            "notes": list(self.notes),
            "per_sha": [
                {c: _plain(row[c]) for c in STAT_COLUMNS if c not in ("basis",)} for _, row in t.iterrows()
            ],
        }


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def polygonal(geom: Any) -> Any:
    """Valid, polygon-only version of a geometry (drops the lines/points overlays leave on shared edges)."""
    from shapely import make_valid
    from shapely.geometry import GeometryCollection, MultiPolygon, Polygon

    if geom is None or geom.is_empty:
        return Polygon()
    if not geom.is_valid:
        geom = make_valid(geom)
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    polys: list[Polygon] = []
    if isinstance(geom, GeometryCollection):
        for g in geom.geoms:
            p = polygonal(g)
            if isinstance(p, Polygon) and not p.is_empty:
                polys.append(p)
            elif isinstance(p, MultiPolygon):
                polys.extend(p.geoms)
    return MultiPolygon(polys) if polys else Polygon()


def _parts(geom: Any) -> list[Any]:
    from shapely.geometry import MultiPolygon, Polygon

    g = polygonal(geom)
    if isinstance(g, MultiPolygon):
        return list(g.geoms)
    if isinstance(g, Polygon) and not g.is_empty:
        return [g]
    return []


def _clean(geom: Any) -> Any:
    """Snap to a 1 mm grid, drop collinear vertices, repair: removes the near-degenerate spikes that overlays
    leave and that turn into self-intersections after reprojection (GDAL's KML writer rejects those)."""
    import shapely

    if geom.is_empty:
        return geom
    snapped = shapely.set_precision(geom, grid_size=0.001)
    return polygonal(shapely.simplify(snapped, 0.0))


def _drop_small(geom: Any, min_area: float) -> Any:
    from shapely.geometry import MultiPolygon, Polygon

    parts = [p for p in _parts(geom) if p.area >= min_area]
    if not parts:
        return Polygon()
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def _union_clipped(gdf: gpd.GeoDataFrame | None, clip: Any) -> Any:
    """Union of the features of ``gdf`` that meet ``clip``, intersected with ``clip``."""
    from shapely import union_all
    from shapely.geometry import Polygon

    if gdf is None or gdf.empty:
        return Polygon()
    idx = gdf.sindex.query(clip, predicate="intersects")
    if len(idx) == 0:
        return Polygon()
    return polygonal(union_all(gdf.geometry.values[idx]).intersection(clip))


def _opening(geom: Any, width_m: float) -> Any:
    """Morphological opening (erode, then dilate by half the width, mitred so square corners survive)."""
    if width_m <= 0 or geom.is_empty:
        return geom
    r = width_m / 2.0
    opened = geom.buffer(-r, join_style="mitre").buffer(r, join_style="mitre")
    return polygonal(opened.intersection(geom))


def _id_text(value: Any) -> str:
    """An SHA ID as text: '' when missing (None, NaN, blank); whole numbers stored as floats (a shapefile's numeric
    column: 14.0) as '14'."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def resolve_id_column(sha: gpd.GeoDataFrame, wanted: str | None) -> str | None:
    """The SHA ID column: ``wanted`` (must exist), else the first known candidate present, else None."""
    if wanted is not None:
        if wanted not in sha.columns:
            raise VectorInputError(
                f"the SHA layer has no column {wanted!r} (has {[c for c in sha.columns if c != 'geometry']}); "
                "give the SHA ID column with --id-column"
            )
        return wanted
    for c in ID_CANDIDATES:
        if c in sha.columns:
            return c
    return None


def reduce_sha(
    sha: gpd.GeoDataFrame,
    hazard: gpd.GeoDataFrame,
    quality: gpd.GeoDataFrame | None,
    coverage: gpd.GeoDataFrame | None,
    detections: gpd.GeoDataFrame | None = None,
    cfg: ReduceConfig | None = None,
    polygons_cfg: PolygonsConfig | None = None,
    detector_unproven: str | None = None,
    threat_classes: Sequence[str] | None = None,
) -> ReductionResult:
    """SHA reduction proposal (see the module docstring for the rules).

    Args:
        sha: SHA polygons (any CRS); their attributes are kept.
        hazard: candidate hazard polygons (:func:`rams.polygons.build_hazard_polygons`), the evidence.
        quality: ``coverage_quality`` layer, or None (then no ground counts as adequately imaged).
        coverage: the detector's ``coverage`` layer, or None (then, with ``require_detector_coverage``, no
            ground counts as analysed).
        detections: for item counts per SHA (optional); rejected ones (review column) are not counted.
        cfg: reduction rules.
        polygons_cfg: review column and values (for counting confirmed items).
        detector_unproven: why the detector's measured recall cannot support cancellation
            (:func:`detector_gate`); then nothing is proposed for cancellation and the ground that would have
            been is kept with reason "detector not validated".
        threat_classes: the classes the SHA is suspected of (for the edge margin, :meth:`ReduceConfig.margin_m`;
            None: all classes).

    Returns:
        :class:`ReductionResult` with ``table`` (one row per SHA: its attributes, the statistics of
        :data:`STAT_COLUMNS`, its geometry), ``remaining`` (pieces with ``reason``) and ``cancellation``.
    """
    import geopandas as gpd
    from shapely.geometry import MultiPolygon, Polygon

    cfg = cfg or ReduceConfig()
    pcfg = polygons_cfg or PolygonsConfig()
    if sha.crs is None:
        raise VectorInputError("the SHA layer has no CRS; assign one in QGIS and save again")
    if sha.empty:
        raise VectorInputError("the SHA layer holds no polygons; give the layer with the SHAs to assess")
    sha = sha.reset_index(drop=True)
    bad = [i for i, g in enumerate(sha.geometry) if g is None or g.is_empty or g.geom_type not in
           ("Polygon", "MultiPolygon")]
    if bad:
        raise VectorInputError(
            f"SHA feature(s) {[i + 1 for i in bad[:10]]} (counting from 1 in file order) are empty or not polygons; a "
            "SHA must be a polygon: delete or redraw them in QGIS"
        )
    id_col = resolve_id_column(sha, cfg.sha_id_column)
    if id_col is None:
        ids = [f"SHA-{i + 1:04d}" for i in range(len(sha))]
        log.warning("the SHA layer has no ID column (%s); numbering SHAs %s...", ", ".join(ID_CANDIDATES[:5]),
                    ids[0])
    else:
        ids = [_id_text(v) for v in sha[id_col].tolist()]
        missing = [i + 1 for i, v in enumerate(ids) if not v]
        if missing:  # an SHA named "nan" or "None" would reach IMSMA as such, two of them as one ID
            raise VectorInputError(
                f"SHA feature(s) {missing[:10]} (counting from 1 in file order) have no ID in column {id_col!r}; fill "
                "it in QGIS, or give a column that every SHA has with --id-column"
            )
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise VectorInputError(
            f"SHA IDs in column {id_col!r} are not unique ({dup[:5]}); give a unique ID column with --id-column"
        )
    out_crs = sha.crs
    mcrs = metric_crs(out_crs, sha.geometry)

    def to_m(gdf: gpd.GeoDataFrame | None) -> gpd.GeoDataFrame | None:
        if gdf is None:
            return None
        if gdf.crs is None and not gdf.empty:
            raise VectorInputError("an input layer has no CRS; it cannot be placed on the ground")
        if gdf.empty:
            return gdf.set_crs(mcrs, allow_override=True)
        return gdf.to_crs(mcrs)

    sha_m = to_m(sha)
    assert sha_m is not None
    overlaps = overlapping_shas(sha_m, ids, cfg.sliver_area_m2)
    haz_m = to_m(hazard)
    q_m = to_m(quality)
    cov_m = to_m(coverage)
    q_adequate = q_inadequate = None
    notes: list[str] = []
    if overlaps:
        pairs = ", ".join(f"{a} and {b} ({m2:.0f} m2)" for a, b, m2 in overlaps[:10])
        note = (f"SHAs overlap: {pairs}{' ...' if len(overlaps) > 10 else ''}; the overlap is assessed in each SHA and "
                "counted in each SHA's areas (totals count it more than once), and a piece too small to release in "
                "one SHA can be proposed in the other: resolve the overlap in the national database")
        notes.append(note)
        log.warning(note)
    if q_m is None:
        notes.append("no coverage_quality layer: no ground counted as adequately imaged, nothing proposed")
    else:
        if "quality" not in q_m.columns:
            raise VectorInputError("the coverage_quality layer lacks its 'quality' column; rerun rams quality")
        q_adequate = q_m[q_m["quality"] == ADEQUATE]
        q_inadequate = q_m[q_m["quality"].astype(str).str.startswith("inadequate")]
    if cov_m is None and cfg.require_detector_coverage:
        notes.append("no detector coverage layer: no ground counted as analysed, nothing proposed")
    if detector_unproven:
        notes.append(f"no cancellation proposed: {detector_unproven}")
    det_m = None
    det_state = None
    if detections is not None and not detections.empty:
        det_m = to_m(detections)
        det_state = (
            review_state(detections[pcfg.review_column].tolist(), pcfg)
            if pcfg.review_column in detections.columns
            else np.array([""] * len(detections), dtype=object)
        )
        if pcfg.drop_rejected and det_m is not None:
            keep = det_state != "rejected"
            det_m = det_m[keep]
            det_state = det_state[keep]
    authority = cfg.authority
    rec = f"recommendation, requires {authority} decision"

    table_rows: list[dict[str, Any]] = []
    rem_rows: list[dict[str, Any]] = []
    rem_geoms: list[Any] = []
    can_rows: list[dict[str, Any]] = []
    can_geoms: list[Any] = []
    hazard_hit: set[int] = set()
    margin = cfg.margin_m(threat_classes)
    for i, sid in enumerate(ids):
        area_geom = polygonal(sha_m.geometry.iloc[i])
        a_sha = area_geom.area
        evid = _union_clipped(haz_m, area_geom)
        if haz_m is not None and not haz_m.empty:
            hits = haz_m.sindex.query(area_geom, predicate="intersects")
            hazard_hit.update(int(h) for h in hits)
            n_haz = len(hits)
        else:
            n_haz = 0
        qa = _union_clipped(q_adequate, area_geom)
        qi = _union_clipped(q_inadequate, area_geom)
        if cov_m is not None:
            cov = _union_clipped(cov_m, area_geom)
        elif cfg.require_detector_coverage:
            cov = Polygon()
        else:
            cov = area_geom
        adequate_full = polygonal(qa.intersection(cov))
        adequate = adequate_full
        if margin > 0 and not adequate.is_empty:
            # eroded on the ground around the SHA too, so the SHA's own outline is not an edge
            wider = area_geom.buffer(margin, join_style="mitre")
            qa_w = _union_clipped(q_adequate, wider)
            cov_w = _union_clipped(cov_m, wider) if cov_m is not None else wider
            around = polygonal(qa_w.intersection(cov_w))
            adequate = polygonal(around.buffer(-margin, join_style="mitre").intersection(adequate_full))
        cand = polygonal(adequate.difference(evid))
        if detector_unproven:
            cand = Polygon()
        cand = _opening(cand, cfg.min_cancellation_width_m)
        if cfg.simplify_cancellation_m > 0 and not cand.is_empty:
            tol = cfg.simplify_cancellation_m
            shrunk = cand.buffer(-tol, join_style="mitre").simplify(tol, preserve_topology=True)
            cand = polygonal(shrunk.intersection(cand))  # within tol of the eroded outline: inside cand
        cancel = _clean(_drop_small(cand, max(cfg.min_cancellation_area_m2, cfg.sliver_area_m2)))
        remaining = polygonal(area_geom.difference(cancel))
        a_cancel = cancel.area
        a_remain = max(0.0, a_sha - a_cancel)
        # Split the remaining area by reason, first reason first; pieces are disjoint by construction.
        taken: Any = Polygon()
        pieces: list[tuple[str, Any]] = []
        if q_m is None:
            order = [("evidence", evid), ("quality not assessed", area_geom)]
        else:
            order = [
                ("evidence", evid),
                ("inadequate imaging", qi),
                ("not analysed", polygonal(qa.difference(cov))),
                ("detector not validated" if detector_unproven else "edge margin",
                 polygonal(adequate_full.difference(adequate))),
                ("detector not validated" if detector_unproven else "below minimum size", adequate),
                ("not imaged", area_geom),
            ]
        for reason, region in order:
            piece = polygonal(remaining.intersection(region).difference(taken))
            taken = polygonal(taken.union(piece))
            pieces.append((reason, piece))
        for reason, piece in pieces:
            piece = _drop_small(_clean(piece), cfg.sliver_area_m2)
            if piece.is_empty:
                continue
            status = (
                f"evidence: CHA proposed - {rec}" if reason == "evidence" else f"remains SHA - {rec}"
            )
            rem_rows.append({"sha_id": sid, "reason": reason, "area_m2": piece.area, "area_ha": piece.area / 1e4,
                             "status": status})
            rem_geoms.append(piece)
        if not cancel.is_empty:
            can_rows.append({"sha_id": sid, "area_m2": a_cancel, "area_ha": a_cancel / 1e4,
                             "status": f"proposed for cancellation - {rec}", "basis": BASIS})
            can_geoms.append(cancel)
        n_items = n_conf = 0
        if det_m is not None and det_state is not None and not det_m.empty:
            inside = det_m.geometry.centroid.within(area_geom).to_numpy()
            n_items = int(inside.sum())
            n_conf = int((det_state[inside] == "confirmed").sum())
        a_adeq = adequate_full.area
        a_imaged = polygonal(qa.union(qi)).area
        if a_cancel <= 0:
            status = f"no cancellation proposed - {rec}"
        elif a_remain <= cfg.sliver_area_m2:
            status = f"proposed for cancellation - {rec}"
        else:
            status = f"partial cancellation proposed - {rec}"

        def pct(a: float, total: float = a_sha) -> float:
            return 100.0 * a / total if total > 0 else 0.0

        note_parts = []
        no_img = max(0.0, a_sha - a_imaged)
        if no_img > cfg.sliver_area_m2:
            note_parts.append(f"{pct(no_img):.1f} % not imaged")
        if qi.area > cfg.sliver_area_m2:
            note_parts.append(f"{pct(qi.area):.1f} % inadequately imaged")
        if note_parts:
            note_parts.append("such ground cannot support cancellation")
        if detector_unproven and a_adeq > cfg.sliver_area_m2:
            note_parts.append("the detector is not validated for the threat classes (see notes)")
        if evid.area > 0:
            note_parts.insert(0, f"evidence over {pct(evid.area):.1f} %")
        table_rows.append(
            {
                "sha_id": sid,
                "sha_m2": a_sha,
                "sha_ha": a_sha / 1e4,
                "adeq_m2": a_adeq,
                "adeq_pct": pct(a_adeq),
                "inadeq_m2": qi.area,
                "noimg_m2": no_img,
                "evid_m2": evid.area,
                "cancel_m2": a_cancel,
                "cancel_ha": a_cancel / 1e4,
                "cancel_pct": pct(a_cancel),
                "remain_m2": a_remain,
                "remain_ha": a_remain / 1e4,
                "remain_pct": pct(a_remain),
                "n_items": n_items,
                "n_confirm": n_conf,
                "n_hazpoly": n_haz,
                "evidence": f"direct: {n_items} item(s)" if n_items else ("direct" if n_haz else "none seen"),
                "status": status,
                "note": "; ".join(note_parts),
                "basis": BASIS,
            }
        )
    # Per-SHA table: the SHA's own attributes (renamed where they clash) + statistics, SHA geometry.
    attrs = sha.drop(columns=sha.geometry.name)
    attrs = attrs.rename(columns={c: f"sha_{c}" for c in attrs.columns if c in STAT_COLUMNS and c != id_col})
    if id_col == "sha_id":
        attrs = attrs.drop(columns=["sha_id"])
    stats = gpd.GeoDataFrame(table_rows)
    table = gpd.GeoDataFrame(
        pd_concat(attrs.reset_index(drop=True), stats), geometry=sha.geometry.values, crs=out_crs
    )

    def out_layer(rows: list[dict[str, Any]], geoms: list[Any], columns: list[str]) -> gpd.GeoDataFrame:
        gdf = gpd.GeoDataFrame(rows, columns=columns, geometry=geoms, crs=mcrs)
        gdf = gdf.to_crs(out_crs) if len(gdf) and mcrs != out_crs else gdf.set_crs(out_crs, allow_override=True)
        gdf["geometry"] = [
            MultiPolygon([g]) if isinstance(g, Polygon) else g for g in (polygonal(x) for x in gdf.geometry)
        ]
        return gdf

    remaining_gdf = out_layer(rem_rows, rem_geoms, ["sha_id", "reason", "area_m2", "area_ha", "status"])
    remaining_gdf.insert(
        0, "poly_id", [f"{r['sha_id']}-R{k + 1}" for k, r in enumerate(rem_rows)] if rem_rows else []
    )
    cancel_gdf = out_layer(can_rows, can_geoms, ["sha_id", "area_m2", "area_ha", "status", "basis"])
    cancel_gdf.insert(0, "poly_id", [f"{r['sha_id']}-C" for r in can_rows] if can_rows else [])
    outside: list[str] = []
    if haz_m is not None and not haz_m.empty:
        missed = [k for k in range(len(haz_m)) if k not in hazard_hit]
        if missed:
            id_series = haz_m["poly_id"] if "poly_id" in haz_m.columns else None
            outside = [str(id_series.iloc[k]) if id_series is not None else str(k) for k in missed]
            msg = (
                f"{len(outside)} hazard polygon(s) lie outside every SHA ({', '.join(outside[:10])}): "
                f"evidence of a new hazardous area - {rec}"
            )
            log.warning(msg)
            notes.append(msg)
    for n in notes:
        log.info(n)
    return ReductionResult(table, remaining_gdf, cancel_gdf, outside, notes)


def pd_concat(left: Any, right: Any) -> Any:
    import pandas as pd

    return pd.concat([left.reset_index(drop=True), pd.DataFrame(right).reset_index(drop=True)], axis=1)


def sha256_of(path: Path) -> str:
    """SHA-256 of a file (inputs of a decision are recorded by hash); of all its parts for a shapefile
    (:func:`rams.provenance.layer_hash`)."""
    from rams.provenance import layer_hash

    return layer_hash(path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:  # pragma: no cover
        return False


def result_detector_gate(result: Path, quality_path: Path | None, cfg: DecisionsConfig) -> str | None:
    """Whether the result's detector may support cancellation for the threat classes (see :func:`detector_gate`)."""
    from rams.layers import read_metadata

    meta = read_metadata(result)
    qmeta = read_metadata(quality_path) if quality_path is not None else meta
    threats = threat_classes_of(qmeta, cfg.quality.classes)
    gate = run_detector_gate(meta, threats, cfg.reduce.min_model_recall)
    if gate:
        log.warning("no cancellation can be proposed: %s", gate)
    return gate


def overlapping_shas(sha_m: gpd.GeoDataFrame, ids: Sequence[str], min_m2: float) -> list[tuple[str, str, float]]:
    """Pairs of SHAs (metric CRS) whose areas overlap by more than ``min_m2``: (id, id, overlap m2)."""
    out: list[tuple[str, str, float]] = []
    geoms = [polygonal(g) for g in sha_m.geometry]
    left, right = sha_m.sindex.query(sha_m.geometry, predicate="intersects")
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i < j:
            area = geoms[i].intersection(geoms[j]).area
            if area > min_m2:
                out.append((ids[i], ids[j], float(area)))
    return out


def result_threat_classes(result: Path, quality_path: Path | None, cfg: DecisionsConfig) -> list[str] | None:
    """The threat classes of a reduction: those the quality assessment judged for (its recorded config), else the
    decisions config's ``quality.classes``; None: all classes."""
    from rams.layers import read_metadata

    return threat_classes_of(read_metadata(quality_path) if quality_path is not None else read_metadata(result),
                             cfg.quality.classes)


def reduce_files(
    result: Path,
    sha_path: Path,
    out: Path,
    cfg: DecisionsConfig | None = None,
    sha_layer: str | None = None,
    quality_path: Path | None = None,
    overwrite: bool = False,
) -> ReductionResult:
    """``rams reduce``: read a result GeoPackage and SHAs, propose reductions, write a new GeoPackage.

    The output is a copy of ``result`` with the decision layers added (``sha_reduction``,
    ``sha_proposed_remaining``, ``sha_proposed_cancellation``, the ``hazard_polygons`` used as evidence and the
    ``coverage_quality`` used), default styles and provenance; the input is never modified (decisions are
    kept as new versions).
    """
    from rams.layers import list_layers, read_layer

    cfg = cfg or DecisionsConfig()
    for other, what in ((result, "result"), (sha_path, "SHA file"), (quality_path, "quality file")):
        if other is not None and _same_file(out, other):
            raise OutputError(
                f"--out {out} is the {what}; write the decision to a new file (inputs are never overwritten)"
            )
    names = list_layers(result)
    if DETECTIONS_LAYER not in names:
        raise VectorInputError(
            f"{result} has no layer 'detections' (it has {names}); give a result GeoPackage of rams detect"
        )
    detections = read_layer(result, DETECTIONS_LAYER, REQUIRED_COLUMNS, what="detections layer")
    built = HAZARD_LAYER not in names
    if built:
        hazard = build_hazard_polygons(detections, cfg.polygons)
        log.info("built %d hazard polygon(s) from %d detection(s)", len(hazard), len(detections))
    else:
        hazard = read_layer(result, HAZARD_LAYER, ("poly_id",), what="hazard polygon layer")
        log.info("using the %d hazard polygon(s) already in %s", len(hazard), result)
    quality = None
    quality_source = "absent"
    if quality_path is not None:
        quality = read_layer(quality_path, QUALITY_LAYER, ("quality",), what="coverage quality layer")
        quality_source = str(quality_path)
    elif QUALITY_LAYER in names:
        quality = read_layer(result, QUALITY_LAYER, ("quality",), what="coverage quality layer")
        quality_source = f"{result}:{QUALITY_LAYER}"
    else:
        log.warning(
            "no coverage_quality layer in %s and no --quality given: no ground counts as adequately imaged, "
            "so no cancellation can be proposed (run rams quality on the orthomosaic)", result
        )
    if quality is not None:
        from rams.layers import read_metadata
        from rams.provenance import require_same_mosaic

        meta = read_metadata(result)
        qmeta = read_metadata(quality_path) if quality_path is not None else meta
        require_same_mosaic(meta.get("input_hash"), meta.get("input_path"), qmeta.get("quality.input_hash"),
                            qmeta.get("quality.ortho"), f"{quality_source} with {result}",
                            meta.get("input_size_bytes"), qmeta.get("quality.input_size_bytes"))
    coverage = read_layer(result, COVERAGE_LAYER, what="coverage layer") if COVERAGE_LAYER in names else None
    sha = read_layer(sha_path, sha_layer, what="SHA layer")
    gate = result_detector_gate(result, quality_path, cfg)
    res = reduce_sha(sha, hazard, quality, coverage, detections, cfg.reduce, cfg.polygons, detector_unproven=gate,
                     threat_classes=result_threat_classes(result, quality_path, cfg))
    layers: dict[str, gpd.GeoDataFrame] = {}
    if built:
        layers[HAZARD_LAYER] = hazard
    if quality is not None and quality_path is not None:
        layers[QUALITY_LAYER] = quality
    layers[TABLE_LAYER] = res.table
    layers[REMAINING_LAYER] = res.remaining
    layers[CANCELLATION_LAYER] = res.cancellation
    metadata = {
        "reduce.time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "reduce.rams_version": __version__,
        "reduce.result": str(result),
        "reduce.result_sha256": sha256_of(result),
        "reduce.sha_file": str(sha_path),
        "reduce.sha_layer": sha_layer or "",
        "reduce.sha_sha256": sha256_of(sha_path),
        "reduce.quality_source": quality_source,
        "reduce.quality_sha256": sha256_of(quality_path) if quality_path is not None else "",
        "reduce.hazard_polygons": "built from detections" if built else "taken from the result",
        "reduce.config": dump_config(cfg),
        "reduce.notes": "; ".join(res.notes),
        "reduce.disclaimer": "SHA reduction proposals are recommendations based on non-technical survey "
        f"evidence; the {cfg.reduce.authority} decides. Nothing here states that land is cleared or safe.",
    }
    derive_gpkg(result, out, layers, metadata=metadata, styles=default_styles(layers), overwrite=overwrite)
    return res

"""Candidate hazard polygons: detections clustered per class into buffered polygons of evidence.

One mine is evidence, so a single isolated detection makes a polygon too. Per class, detections are linked
(single linkage) when their centres are within that class's ``cluster_distance_m``; each cluster's convex hull
(of the detection footprints) is buffered by the class's ``safety_distance_m`` plus the georeferencing error
of the mosaic. Overlapping polygons of different classes are then merged into one hazard polygon, because
overlapping evidence describes one area. Every polygon carries its item counts by class, its max and mean
score, its evidence status and the IDs of its member detections, so each line of evidence can be traced back.

Distances are in metres: the detections' CRS is used when it is a metric projected CRS (the contract: the
raster grid's UTM zone), otherwise the detections are projected to their UTM zone and the polygons back.

The defaults (``docs/decisions.md`` gives the reasoning) are engineering defaults, not a standard: the
national mine action standards of the country decide, and these values are in the config to be set to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator

from rams.classes import CLASS_NAMES
from rams.config import StrictModel
from rams.errors import VectorInputError

if TYPE_CHECKING:
    import geopandas as gpd
    from pyproj import CRS

log = logging.getLogger(__name__)

#: Linking distance per class (m). Scattered and air-delivered items spread over tens of metres, pattern-laid
#: AP mines sit metres apart in rows, UXO items are mostly isolated.
DEFAULT_CLUSTER_DISTANCE_M: dict[str, float] = {
    "pfm1": 50.0,
    "pom2": 50.0,
    "pmn": 25.0,
    "ozm72": 25.0,
    "mon": 25.0,
    "tm62": 50.0,
    "submunition": 100.0,
    "mortar": 25.0,
    "shell": 25.0,
}

#: Safety distance per class (m) added around each cluster's hull: where further, unseen items of the same
#: emplacement or strike may lie (and, for tripwire-fuzed items, the wire's reach).
DEFAULT_SAFETY_DISTANCE_M: dict[str, float] = {
    "pfm1": 25.0,
    "pom2": 25.0,
    "pmn": 20.0,
    "ozm72": 25.0,
    "mon": 50.0,
    "tm62": 25.0,
    "submunition": 50.0,
    "mortar": 10.0,
    "shell": 10.0,
}

LAYER = "hazard_polygons"
REQUIRED_COLUMNS = ("det_id", "label", "score")


def count_column(class_name: str) -> str:
    """Column holding the item count of a class (at most 10 characters, shapefile-safe)."""
    return f"n_{class_name}"[:10]


class PolygonsConfig(StrictModel):
    """How detections become candidate hazard polygons."""

    cluster_distance_m: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_CLUSTER_DISTANCE_M))
    """Per class: detections closer than this (centre to centre) join one cluster (single linkage)."""
    safety_distance_m: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SAFETY_DISTANCE_M))
    """Per class: buffer around a cluster's hull."""
    default_cluster_distance_m: float = 50.0
    """For labels without an entry above (other models' classes)."""
    default_safety_distance_m: float = 50.0
    """For labels without an entry above: the largest per-class value, to stay on the safe side."""
    georef_error_m: float = 3.0
    """Absolute georeferencing error of the mosaic (m), added to every buffer. 3 m suits a mosaic without
    RTK/PPK or ground control; set it to about twice the check-point RMSE when that is known."""
    merge_overlapping: bool = True
    """Merge overlapping polygons (of any classes) into one hazard polygon."""
    review_column: str = "review"
    """Detection column holding a reviewer's decision, when the layer has one."""
    confirmed_values: list[str] = Field(default_factory=lambda: ["confirmed", "true_positive", "tp"])
    """Review values that confirm a detection (case-insensitive): its polygon becomes ``confirmed``."""
    rejected_values: list[str] = Field(default_factory=lambda: ["rejected", "false_positive", "fp"])
    """Review values that reject a detection as a false alarm (case-insensitive)."""
    drop_rejected: bool = True
    """Leave detections a reviewer rejected out of the evidence (the rejection is the reviewer's record)."""

    @field_validator("cluster_distance_m", "safety_distance_m")
    @classmethod
    def _known_nonneg(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = [k for k in v if k not in CLASS_NAMES]
        if unknown:
            raise ValueError(f"unknown class(es) {unknown}; known: {', '.join(CLASS_NAMES)}")
        bad = [k for k, d in v.items() if not d >= 0]
        if bad:
            raise ValueError(f"distances must be >= 0 (check {bad})")
        return v

    @field_validator("default_cluster_distance_m", "default_safety_distance_m", "georef_error_m")
    @classmethod
    def _nonneg(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError("must be >= 0")
        return v

    def cluster_distance(self, label: str) -> float:
        return self.cluster_distance_m.get(label, self.default_cluster_distance_m)

    def buffer_distance(self, label: str) -> float:
        return self.safety_distance_m.get(label, self.default_safety_distance_m) + self.georef_error_m


def metric_crs(crs: CRS | Any, geoms: gpd.GeoSeries | None = None) -> Any:
    """``crs`` when it is projected in metres and true to scale at ``geoms`` (not Web or World Mercator), else the
    UTM zone of ``geoms``."""
    from pyproj import CRS as ProjCRS

    from rams.crs import true_to_scale

    c = ProjCRS.from_user_input(crs)
    if c.is_projected:
        unit = c.axis_info[0].unit_name if c.axis_info else ""
        metric = unit in ("metre", "meter") and "pseudo-mercator" not in c.name.lower() and c.to_epsg() != 3857
        # and true to scale where the features are (World Mercator is not, away from the equator)
        if metric and (geoms is None or geoms.empty or true_to_scale(c, geoms.total_bounds)):
            return c
    if geoms is None or geoms.empty:
        raise VectorInputError(f"CRS {c.name} is not metric and there are no features to pick a UTM zone from")
    utm = geoms.estimate_utm_crs()
    if utm is None:  # pragma: no cover - polar areas
        raise VectorInputError("no UTM zone fits the features; reproject them to a metric CRS first")
    return utm


def review_state(values: Any, cfg: PolygonsConfig) -> np.ndarray:
    """Per detection: 'confirmed', 'rejected' or '' (not reviewed), from the review column's values."""
    confirmed = {v.lower() for v in cfg.confirmed_values}
    rejected = {v.lower() for v in cfg.rejected_values}
    out = []
    for v in values:
        s = "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip().lower()
        out.append("confirmed" if s in confirmed else "rejected" if s in rejected else "")
    return np.array(out, dtype=object)


def single_linkage(xy: np.ndarray, distance_m: float) -> np.ndarray:
    """Cluster labels (0..k-1) of points linked when within ``distance_m`` (connected components)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    n = len(xy)
    if n == 0:
        return np.zeros(0, dtype=int)
    pairs = cKDTree(xy).query_pairs(r=distance_m, output_type="ndarray") if distance_m > 0 else np.empty((0, 2))
    pairs = np.asarray(pairs, dtype=int).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels, dtype=int)


@dataclass(frozen=True)
class _Cluster:
    label: str
    members: np.ndarray  # row indices into the detections frame
    geometry: Any  # buffered hull, metric CRS
    buffer_m: float


def empty_layer(crs: Any) -> gpd.GeoDataFrame:
    """A hazard-polygon layer with no rows but the full schema."""
    import geopandas as gpd

    return gpd.GeoDataFrame({c: [] for c in _columns()}, geometry=[], crs=crs)


def _columns() -> list[str]:
    return [
        "poly_id", "n_items", *[count_column(c) for c in CLASS_NAMES], "n_other", "classes", "score_max",
        "score_mean", "evidence_status", "n_confirm", "det_ids", "buffer_m", "area_m2", "area_ha",
    ]


def build_hazard_polygons(detections: gpd.GeoDataFrame, cfg: PolygonsConfig | None = None) -> gpd.GeoDataFrame:
    """Candidate hazard polygons from a ``detections`` layer (see the module docstring for the method).

    Args:
        detections: the ``detections`` layer of a result GeoPackage (columns ``det_id``, ``label``, ``score``;
            optional review column); footprints or points, any CRS.
        cfg: clustering and buffer distances.

    Returns:
        Layer ``hazard_polygons`` in the detections' CRS: ``poly_id`` (HP-0001...), ``n_items``, one
        ``n_<class>`` count per class plus ``n_other``, ``classes``, ``score_max``, ``score_mean``,
        ``evidence_status`` (``confirmed`` when a member detection was confirmed by review, else
        ``candidate``), ``n_confirm``, ``det_ids`` (comma-separated), ``buffer_m`` (largest buffer applied),
        ``area_m2``, ``area_ha``. Ordered north to south, then west to east.

    Raises:
        VectorInputError: a required column is missing.
    """
    import geopandas as gpd
    from shapely import make_valid, union_all
    from shapely.geometry import MultiPolygon, Polygon

    cfg = cfg or PolygonsConfig()
    missing = [c for c in REQUIRED_COLUMNS if c not in detections.columns]
    if missing:
        raise VectorInputError(
            f"detections lack column(s) {missing} (have {list(detections.columns)}); give the 'detections' "
            "layer of a rams result GeoPackage"
        )
    out_crs = detections.crs
    if detections.empty:
        return empty_layer(out_crs)
    if out_crs is None:
        raise VectorInputError("the detections layer has no CRS; it cannot be placed on the ground")
    dets = detections.reset_index(drop=True)
    state = (
        review_state(dets[cfg.review_column].tolist(), cfg)
        if cfg.review_column in dets.columns
        else np.array([""] * len(dets), dtype=object)
    )
    keep = state != "rejected" if cfg.drop_rejected else np.ones(len(dets), bool)
    if (~keep).any():
        log.info("%d detection(s) rejected by review left out of the evidence", int((~keep).sum()))
    dets = dets[keep].reset_index(drop=True)
    state = state[keep]
    if dets.empty:
        return empty_layer(out_crs)
    mcrs = metric_crs(out_crs, dets.geometry)
    geoms = dets.geometry.to_crs(mcrs) if mcrs != out_crs else dets.geometry
    if geoms.isna().any() or geoms.is_empty.any():
        raise VectorInputError("some detections have no geometry; repair the detections layer")
    centres = np.column_stack([geoms.centroid.x.to_numpy(), geoms.centroid.y.to_numpy()])
    labels = dets["label"].astype(str).to_numpy()
    unknown = sorted({lab for lab in labels if lab not in CLASS_NAMES})
    if unknown:
        log.warning(
            "labels %s are not rams classes; they get the default distances (%.0f m link, %.0f m buffer)",
            unknown, cfg.default_cluster_distance_m, cfg.default_safety_distance_m,
        )
    clusters: list[_Cluster] = []
    for lab in sorted(set(labels)):
        idx = np.flatnonzero(labels == lab)
        comp = single_linkage(centres[idx], cfg.cluster_distance(lab))
        buf = cfg.buffer_distance(lab)
        for k in range(comp.max() + 1):
            members = idx[comp == k]
            hull = union_all(geoms.iloc[members].values).convex_hull
            clusters.append(_Cluster(lab, members, hull.buffer(buf, quad_segs=16), buf))
    # Merge overlapping cluster polygons (across classes) into hazard polygons.
    groups: list[list[int]]
    if cfg.merge_overlapping and len(clusters) > 1:
        cg = gpd.GeoSeries([c.geometry for c in clusters], crs=mcrs)
        left, right = cg.sindex.query(cg, predicate="intersects")
        n = len(clusters)
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
        _, comp_ids = connected_components(graph, directed=False)
        groups = [list(np.flatnonzero(comp_ids == g)) for g in range(comp_ids.max() + 1)]
    else:
        groups = [[i] for i in range(len(clusters))]
    rows = []
    polys = []
    scores = dets["score"].astype(float).to_numpy()
    det_ids = dets["det_id"].astype(str).to_numpy()
    for grp in groups:
        members = np.unique(np.concatenate([clusters[i].members for i in grp]))
        geom = make_valid(union_all([clusters[i].geometry for i in grp]))
        if not isinstance(geom, Polygon | MultiPolygon):
            geom = union_all([g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon | MultiPolygon)])
        counts = {count_column(c): int((labels[members] == c).sum()) for c in CLASS_NAMES}
        n_other = int(sum(1 for lab in labels[members] if lab not in CLASS_NAMES))
        n_conf = int((state[members] == "confirmed").sum())
        order = np.argsort(det_ids[members], kind="stable")
        rows.append(
            {
                "n_items": len(members),
                **counts,
                "n_other": n_other,
                "classes": ",".join(sorted(set(labels[members]))),
                "score_max": float(scores[members].max()),
                "score_mean": float(scores[members].mean()),
                "evidence_status": "confirmed" if n_conf else "candidate",
                "n_confirm": n_conf,
                "det_ids": ",".join(det_ids[members][order]),
                "buffer_m": max(clusters[i].buffer_m for i in grp),
                "area_m2": float(geom.area),
                "area_ha": float(geom.area) / 1e4,
                "_y": -geom.centroid.y,
                "_x": geom.centroid.x,
            }
        )
        polys.append(geom)
    layer = gpd.GeoDataFrame(rows, geometry=polys, crs=mcrs)
    layer = layer.sort_values(["_y", "_x"], kind="stable").drop(columns=["_y", "_x"]).reset_index(drop=True)
    layer.insert(0, "poly_id", [f"HP-{i + 1:04d}" for i in range(len(layer))])
    if mcrs != out_crs:
        layer = layer.to_crs(out_crs)
    layer["geometry"] = [MultiPolygon([g]) if isinstance(g, Polygon) else g for g in layer.geometry]
    return gpd.GeoDataFrame(layer[[*_columns(), "geometry"]], geometry="geometry", crs=out_crs)


def summarise(layer: gpd.GeoDataFrame) -> dict[str, Any]:
    """Counts and areas of a hazard-polygon layer (for the CLI and metadata)."""
    by_status: Mapping[str, int] = (
        layer["evidence_status"].value_counts().to_dict() if len(layer) else {}
    )
    return {
        "polygons": len(layer),
        "items": int(layer["n_items"].sum()) if len(layer) else 0,
        "by_status": {str(k): int(v) for k, v in by_status.items()},
        "area_m2": float(layer["area_m2"].sum()) if len(layer) else 0.0,
    }


def polygons_file(
    result: Path, out: Path, cfg: PolygonsConfig | None = None, overwrite: bool = False
) -> gpd.GeoDataFrame:
    """``rams polygons``: build hazard polygons from ``result``'s detections into a new GeoPackage ``out``.

    ``out`` is a copy of ``result`` with layer ``hazard_polygons`` (and its default style) added; the input is
    never modified.
    """
    import datetime as dt

    from rams import __version__
    from rams.config import dump_config
    from rams.errors import OutputError
    from rams.export import derive_gpkg
    from rams.layers import list_layers, read_layer
    from rams.styles import default_styles

    cfg = cfg or PolygonsConfig()
    if Path(out).resolve() == Path(result).resolve():
        raise OutputError(f"--out {out} is the input; write to a new file (inputs are never overwritten)")
    names = list_layers(result)
    if "detections" not in names:
        raise VectorInputError(
            f"{result} has no layer 'detections' (it has {names}); give a result GeoPackage of rams detect"
        )
    dets = read_layer(result, "detections", REQUIRED_COLUMNS, what="detections layer")
    layer = build_hazard_polygons(dets, cfg)
    meta = {
        "polygons.time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "polygons.rams_version": __version__,
        "polygons.config": dump_config(cfg),
        "polygons.summary": summarise(layer),
    }
    derive_gpkg(result, out, {LAYER: layer}, metadata=meta, styles=default_styles([LAYER]), overwrite=overwrite)
    return layer

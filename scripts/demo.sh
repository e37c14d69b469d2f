#!/usr/bin/env bash
# `make demo`: the main job end to end on the bundled default, a generated sample flight and the shipped model.
#   sample flight -> info -> detect -> evaluate against the known truth -> coverage quality -> hazard polygons
#   -> SHA reduction proposals -> GeoJSON/KML export. Outputs land in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
RAMS="${RAMS:-.venv/bin/rams}"
OUT="${OUT:-demo-out}"
SHA=data/demo/sha.geojson
# The threats recorded for the demo SHAs: imagery must resolve these for ground to support cancellation.
# (POM-2 and ShOAB-size items, 6 cm, need <= 0.75 cm/px at the model: at 1 cm they would make all ground
# inadequate, which is the honest answer for SHAs where they are suspected.)
THREATS="pfm1,pmn,ozm72,mon,tm62,mortar,shell"
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }

step "1/8 sample flight: 30 x 20 m at 0.5 cm/px, RGBA, known truth (rams synth)"
"$RAMS" synth "$OUT/flight" --config configs/demo-flight.yaml --overwrite

step "2/8 what the orthomosaic is (rams info)"
"$RAMS" info "$OUT/flight/ortho.tif" --gsd 0.01

step "3/8 detections inside the SHAs: the default model and, as the flight is 0.5 cm, the scatterable specialist (rams detect)"
"$RAMS" detect "$OUT/flight/ortho.tif" --out "$OUT/detections.gpkg" --aoi "$SHA" \
    --model default --model scatterable-05cm --overwrite

step "4/8 how good were they: matched against the scene's truth (rams evaluate)"
"$RAMS" evaluate "$OUT/detections.gpkg" "$OUT/flight/truth.gpkg" --aoi "$SHA" --plot "$OUT/evaluation.png" --overwrite

step "5/8 was the ground imaged well enough to see the targets? (rams quality)"
"$RAMS" quality "$OUT/flight/ortho.tif" --gsd 0.01 --aoi "$SHA" --add-to "$OUT/detections.gpkg" \
    --classes "$THREATS" \
    --out "$OUT/quality.gpkg" --overwrite

step "6/8 candidate hazard polygons (rams polygons)"
"$RAMS" polygons "$OUT/quality.gpkg" --out "$OUT/polygons.gpkg" --overwrite

step "7/8 SHA reduction proposals for the national authority (rams reduce)"
"$RAMS" reduce "$OUT/polygons.gpkg" --sha "$SHA" --out "$OUT/survey.gpkg" --overwrite

step "8/8 exports for GIS and field tablets (rams export)"
"$RAMS" export "$OUT/survey.gpkg" --format geojson --layer sha_proposed_remaining --out "$OUT/remaining.geojson" \
    --overwrite
"$RAMS" export "$OUT/survey.gpkg" --format kml --layer hazard_polygons --out "$OUT/hazard_polygons.kml" --overwrite

printf '\nDone. Open %s in QGIS (layers: detections, coverage, coverage_quality, hazard_polygons,\n' "$OUT/survey.gpkg"
printf 'sha_proposed_remaining, sha_proposed_cancellation, sha_reduction). Everything is a recommendation for\n'
printf 'human review and the national authority, never a safety claim.\n'

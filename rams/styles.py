"""Default map symbology for the decision layers: QGIS QML styles and the colours KML exports reuse.

Land-release symbology (the technical note followed in ``shared/DOMAIN.md``): suspected hazardous area (SHA)
orange (244, 167, 24), confirmed hazardous area (CHA) red (255, 0, 0), both at 50 % fill. Colours that the
note does not fix are rams choices, named here once:

* proposed cancellation: green (56, 168, 0) at 50 % fill, the colour land-release maps commonly give to
  released land (a proposal, not a release: the layer name and its ``status`` field say so);
* remaining ground kept for lack of imagery stays SHA orange (it is still only *suspected*); remaining
  ground kept because of evidence is red, the CHA the evidence would justify;
* coverage quality: adequate green outline only, inadequate hatched magenta, not imaged hatched grey, so
  that gaps in the imagery stand out and never look like empty (released-looking) ground.

The QML is written for QGIS 3.x (``<Option>`` maps plus the older ``<prop>`` pairs so that 3.10 - 3.34 read
it) and stored through :func:`rams.layers.write_gpkg` (``styles=``) in the GeoPackage ``layer_styles`` table,
which QGIS applies on opening a layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

RGB = tuple[int, int, int]

SHA_ORANGE: RGB = (244, 167, 24)
CHA_RED: RGB = (255, 0, 0)
CANCEL_GREEN: RGB = (56, 168, 0)
ADEQUATE_GREEN: RGB = (26, 150, 65)
INADEQUATE_MAGENTA: RGB = (200, 40, 160)
NOT_IMAGED_GREY: RGB = (110, 110, 110)
ANALYSED_BLUE: RGB = (0, 112, 192)
FILL_ALPHA = 128
"""50 % fill (of 255), as the land-release convention asks."""

#: Reasons a piece of a SHA stays in the proposed remaining area (values of ``sha_proposed_remaining.reason``).
REMAINING_REASONS: tuple[str, ...] = (
    "evidence",
    "inadequate imaging",
    "not imaged",
    "not analysed",
    "edge margin",
    "below minimum size",
    "quality not assessed",
    "detector not validated",
)

#: Values of ``coverage_quality.quality``.
QUALITY_CLASSES: tuple[str, ...] = (
    "adequate",
    "inadequate:partial",
    "inadequate:gsd",
    "inadequate:exposure",
    "inadequate:blur",
    "inadequate:vegetation",
    "not_imaged",
)


@dataclass(frozen=True)
class FillSymbol:
    """A polygon symbol: fill colour and opacity, outline colour and width, fill pattern."""

    fill: RGB
    fill_alpha: int = FILL_ALPHA
    outline: RGB | None = None
    outline_width_mm: float = 0.5
    pattern: str = "solid"  # QGIS brush style: solid, no, b_diagonal, f_diagonal, cross, ...
    centroid_marker: bool = False  # also draw a marker at each part's centroid (tiny footprints)

    def rgba(self) -> tuple[int, int, int, int]:
        return (*self.fill, self.fill_alpha)


def _opt(name: str, value: str) -> str:
    return f'<Option name={quoteattr(name)} type="QString" value={quoteattr(value)}/>'


def _prop(name: str, value: str) -> str:
    return f"<prop k={quoteattr(name)} v={quoteattr(value)}/>"


def _props(pairs: Sequence[tuple[str, str]]) -> str:
    options = "".join(_opt(k, v) for k, v in pairs)
    props = "".join(_prop(k, v) for k, v in pairs)
    return f'<Option type="Map">{options}</Option>{props}'


def _colour(rgb: RGB, alpha: int = 255) -> str:
    return f"{rgb[0]},{rgb[1]},{rgb[2]},{alpha}"


def _symbol_xml(name: str, sym: FillSymbol) -> str:
    outline = sym.outline if sym.outline is not None else sym.fill
    fill_pairs = [
        ("border_width_map_unit_scale", "3x:0,0,0,0,0,0"),
        ("color", _colour(sym.fill, sym.fill_alpha)),
        ("joinstyle", "bevel"),
        ("offset", "0,0"),
        ("offset_unit", "MM"),
        ("outline_color", _colour(outline)),
        ("outline_style", "solid"),
        ("outline_width", f"{sym.outline_width_mm:g}"),
        ("outline_width_unit", "MM"),
        ("style", sym.pattern),
    ]
    layers = [f'<layer class="SimpleFill" enabled="1" pass="0" locked="0">{_props(fill_pairs)}</layer>']
    if sym.centroid_marker:
        marker_pairs = [
            ("color", _colour(sym.fill)),
            ("name", "circle"),
            ("outline_color", "0,0,0,255"),
            ("outline_width", "0.3"),
            ("size", "2.6"),
            ("size_unit", "MM"),
        ]
        marker = (
            f'<symbol type="marker" name="@{name}@1" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="SimpleMarker" enabled="1" pass="0" locked="0">{_props(marker_pairs)}</layer>'
            "</symbol>"
        )
        centroid_pairs = [("point_on_all_parts", "1"), ("point_on_surface", "0")]
        layers.append(
            f'<layer class="CentroidFill" enabled="1" pass="0" locked="0">{_props(centroid_pairs)}{marker}</layer>'
        )
    return (
        f'<symbol type="fill" name={quoteattr(name)} alpha="1" clip_to_extent="1" force_rhr="0">'
        + "".join(layers)
        + "</symbol>"
    )


_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def _document(renderer: str) -> str:
    return (
        _HEAD
        + '<qgis version="3.28.0" styleCategories="Symbology">'
        + renderer
        + "<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode><layerOpacity>1</layerOpacity>"
        + "</qgis>\n"
    )


def single_symbol_qml(sym: FillSymbol) -> str:
    """QML for a layer drawn with one polygon symbol."""
    renderer = (
        '<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
        f"<symbols>{_symbol_xml('0', sym)}</symbols><rotation/><sizescale/></renderer-v2>"
    )
    return _document(renderer)


def categorized_qml(
    field: str, categories: Iterable[tuple[str, str, FillSymbol]], other: tuple[str, FillSymbol] | None = None
) -> str:
    """QML for a layer coloured by the value of ``field``: ``(value, label, symbol)`` per category, and ``other``
    ``(label, symbol)`` for every value not listed (QGIS's "all other values" category: an empty value). Without
    it QGIS draws nothing for an unlisted value."""
    cats = []
    syms = []
    entries = list(categories) + ([("", other[0], other[1])] if other else [])
    for i, (value, label, sym) in enumerate(entries):
        cats.append(
            f'<category render="true" value={quoteattr(value)} symbol="{i}" label={quoteattr(label)}/>'
        )
        syms.append(_symbol_xml(str(i), sym))
    renderer = (
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" '
        'forceraster="0">'
        f"<categories>{''.join(cats)}</categories><symbols>{''.join(syms)}</symbols>"
        "<rotation/><sizescale/></renderer-v2>"
    )
    return _document(renderer)


SHA_SYMBOL = FillSymbol(SHA_ORANGE)
CHA_SYMBOL = FillSymbol(CHA_RED)
CANCEL_SYMBOL = FillSymbol(CANCEL_GREEN)
COVERAGE_SYMBOL = FillSymbol(ANALYSED_BLUE, fill_alpha=0, outline=ANALYSED_BLUE, outline_width_mm=0.6, pattern="no")

#: Colour of each remaining reason: evidence is the CHA the evidence supports, the rest stays SHA.
REMAINING_SYMBOLS: dict[str, FillSymbol] = {
    "evidence": CHA_SYMBOL,
    "inadequate imaging": FillSymbol(SHA_ORANGE, pattern="solid", outline=INADEQUATE_MAGENTA),
    "not imaged": FillSymbol(SHA_ORANGE, pattern="solid", outline=NOT_IMAGED_GREY),
    "not analysed": FillSymbol(SHA_ORANGE, pattern="solid", outline=NOT_IMAGED_GREY),
    "edge margin": FillSymbol(SHA_ORANGE, pattern="solid", outline=NOT_IMAGED_GREY),
    "below minimum size": SHA_SYMBOL,
    "quality not assessed": FillSymbol(SHA_ORANGE, pattern="solid", outline=NOT_IMAGED_GREY),
    "detector not validated": FillSymbol(SHA_ORANGE, pattern="solid", outline=CHA_RED),
}

QUALITY_SYMBOLS: dict[str, FillSymbol] = {
    "adequate": FillSymbol(ADEQUATE_GREEN, fill_alpha=0, outline=ADEQUATE_GREEN, outline_width_mm=0.2),
    "not_imaged": FillSymbol(NOT_IMAGED_GREY, fill_alpha=255, pattern="b_diagonal", outline_width_mm=0.3),
}
for _c in QUALITY_CLASSES:
    if _c.startswith("inadequate"):
        QUALITY_SYMBOLS[_c] = FillSymbol(INADEQUATE_MAGENTA, fill_alpha=255, pattern="f_diagonal",
                                         outline_width_mm=0.3)

_REMAINING_LABELS = {
    "evidence": "Evidence: proposed CHA (recommendation)",
    "inadequate imaging": "Remains SHA: inadequately imaged",
    "not imaged": "Remains SHA: not imaged",
    "not analysed": "Remains SHA: not analysed by the detector",
    "edge margin": "Remains SHA: too close to unseen ground (an item there is only partly seen)",
    "below minimum size": "Remains SHA: piece below minimum size",
    "quality not assessed": "Remains SHA: imaging quality not assessed",
    "detector not validated": "Remains SHA: detector not validated for the threats",
}


def layer_qml(layer: str) -> str | None:
    """Default QML for a rams layer name, or None when rams has no default style for it."""
    if layer in ("sha", "sha_reduction"):
        return single_symbol_qml(SHA_SYMBOL)
    if layer == "hazard_polygons":
        return single_symbol_qml(CHA_SYMBOL)
    if layer == "sha_proposed_cancellation":
        return single_symbol_qml(CANCEL_SYMBOL)
    if layer == "sha_proposed_remaining":
        return categorized_qml(
            "reason", [(r, _REMAINING_LABELS[r], REMAINING_SYMBOLS[r]) for r in REMAINING_REASONS],
            other=("Remains SHA: other reason", SHA_SYMBOL),
        )
    if layer == "coverage_quality":
        return categorized_qml("quality", [(c, c, QUALITY_SYMBOLS[c]) for c in QUALITY_CLASSES])
    if layer == "detections":
        return single_symbol_qml(FillSymbol(CHA_RED, fill_alpha=255, outline=CHA_RED, centroid_marker=True))
    if layer == "coverage":  # ground the detector analysed: an outline, so that what lies under it stays visible
        return single_symbol_qml(COVERAGE_SYMBOL)
    return None


def default_styles(layers: Iterable[str]) -> dict[str, str]:
    """QML for each of ``layers`` that has a rams default style (for ``write_gpkg(styles=...)``)."""
    out: dict[str, str] = {}
    for name in layers:
        qml = layer_qml(name)
        if qml is not None:
            out[name] = qml
    return out


def feature_symbol(layer: str, attributes: Mapping[str, object]) -> FillSymbol | None:
    """The symbol a feature of ``layer`` is drawn with (for formats with per-feature styles, e.g. KML)."""
    if layer in ("sha", "sha_reduction"):
        return SHA_SYMBOL
    if layer in ("hazard_polygons", "detections"):
        return CHA_SYMBOL
    if layer == "sha_proposed_cancellation":
        return CANCEL_SYMBOL
    if layer == "sha_proposed_remaining":
        return REMAINING_SYMBOLS.get(str(attributes.get("reason", "")), SHA_SYMBOL)
    if layer == "coverage_quality":
        return QUALITY_SYMBOLS.get(str(attributes.get("quality", "")))
    return None


def ogr_style(sym: FillSymbol) -> str:
    """OGR feature style string (``BRUSH``/``PEN``), which GDAL's LIBKML driver turns into a KML Style."""
    r, g, b = sym.fill
    outline = sym.outline if sym.outline is not None else sym.fill
    alpha = sym.fill_alpha if sym.pattern != "no" else 0
    return (
        f"BRUSH(fc:#{r:02X}{g:02X}{b:02X}{alpha:02X});"
        f"PEN(c:#{outline[0]:02X}{outline[1]:02X}{outline[2]:02X}FF,w:2px)"
    )

"""The target taxonomy: detector classes, the real item models they group, and their physical sizes.

Sizes come from ``shared/DOMAIN.md`` (footprints in metres, long side first). They drive synthetic scene
painting, default matching radii in evaluation, GSD adequacy checks and per-class safety buffers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ItemModel:
    """One real ordnance model with its footprint in metres (``length_m`` >= ``width_m``)."""

    name: str
    length_m: float
    width_m: float
    shape: str  # "disc", "butterfly", "cylinder" (side view of a projectile/submunition), "box"


@dataclass(frozen=True)
class ItemClass:
    """A detector class: what a detection's ``label`` means and which real models it covers."""

    name: str
    description: str
    models: tuple[ItemModel, ...]
    category: str  # "AP mine", "AT mine", "submunition", "UXO"

    @property
    def min_length_m(self) -> float:
        """Smallest long side among the class's models."""
        return min(m.length_m for m in self.models)

    @property
    def max_length_m(self) -> float:
        """Largest long side among the class's models."""
        return max(m.length_m for m in self.models)


CLASSES: tuple[ItemClass, ...] = (
    ItemClass(
        "pfm1",
        "PFM-1 scatterable AP mine ('butterfly')",
        (ItemModel("PFM-1", 0.120, 0.061, "butterfly"),),
        "AP mine",
    ),
    ItemClass(
        "pmn",
        "PMN / PMN-2 AP blast mine",
        (ItemModel("PMN", 0.112, 0.112, "disc"), ItemModel("PMN-2", 0.121, 0.121, "disc")),
        "AP mine",
    ),
    ItemClass("pom2", "POM-2 AP fragmentation mine", (ItemModel("POM-2", 0.063, 0.063, "disc"),), "AP mine"),
    ItemClass("ozm72", "OZM-72 bounding mine (top/fuze visible)", (ItemModel("OZM-72", 0.108, 0.108, "disc"),),
              "AP mine"),
    ItemClass(
        "mon",
        "MON-50 / MON-100 directional mine",
        (ItemModel("MON-50", 0.226, 0.066, "box"), ItemModel("MON-100", 0.236, 0.236, "disc")),
        "AP mine",
    ),
    ItemClass("tm62", "TM-62 / TM-57 AT mine",
              (ItemModel("TM-62", 0.320, 0.320, "disc"), ItemModel("TM-57", 0.316, 0.316, "disc")), "AT mine"),
    ItemClass(
        "submunition",
        "Cluster submunition (PTAB-1M, 9N235, ShOAB-0.5, M77)",
        (
            ItemModel("PTAB-1M", 0.261, 0.042, "cylinder"),
            ItemModel("9N235", 0.232, 0.065, "cylinder"),
            ItemModel("ShOAB-0.5", 0.060, 0.060, "disc"),
            ItemModel("M77", 0.083, 0.039, "cylinder"),
        ),
        "submunition",
    ),
    ItemClass(
        "mortar",
        "Mortar bomb (82 mm, 120 mm)",
        (ItemModel("82mm mortar", 0.330, 0.082, "cylinder"), ItemModel("120mm mortar", 0.650, 0.120, "cylinder")),
        "UXO",
    ),
    ItemClass(
        "shell",
        "Artillery projectile (122 mm, 152 mm)",
        (ItemModel("122mm shell", 0.560, 0.122, "cylinder"), ItemModel("152mm shell", 0.700, 0.152, "cylinder")),
        "UXO",
    ),
)

CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
_BY_NAME = {c.name: c for c in CLASSES}
_MODEL_TO_CLASS = {m.name: c.name for c in CLASSES for m in c.models}
#: Names of the real item models ('PMN-2', '120mm mortar', ...), each in one class (:func:`class_of_model`).
MODEL_NAMES: frozenset[str] = frozenset(_MODEL_TO_CLASS)


def get_class(name: str) -> ItemClass:
    """Class by name; raises KeyError listing the known names."""
    try:
        return _BY_NAME[name]
    except KeyError as err:
        raise KeyError(f"unknown class {name!r}; known: {', '.join(CLASS_NAMES)}") from err


def class_of_model(model_name: str) -> str:
    """Detector class that a real item model belongs to (e.g. 'PMN-2' -> 'pmn')."""
    return _MODEL_TO_CLASS[model_name]


def smallest_length_m(class_names: list[str] | tuple[str, ...] | None = None) -> float:
    """Smallest long side (m) among the given classes (all classes when None)."""
    names = class_names or CLASS_NAMES
    return min(get_class(n).min_length_m for n in names)

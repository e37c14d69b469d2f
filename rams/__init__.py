"""rams: Remote Aerial Minefield Survey.

Turns drone orthomosaics into georeferenced evidence of surface mines and explosive remnants of war, and
into proposals for reducing Suspected Hazardous Areas. Every output is a recommendation with its evidence,
never a safety claim.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rams")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

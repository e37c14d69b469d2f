"""One exception hierarchy for rams, and the single table that maps it to process exit codes.

Every error says what is wrong *and what to do*. Library code raises these (always ``raise ... from err``);
the CLI prints one line and exits with the code from :data:`EXIT_CODES`. Never branch on message text.
"""

from __future__ import annotations


class RamsError(Exception):
    """Root of every error rams raises on purpose."""


class InputError(RamsError, ValueError):
    """A user-supplied input cannot be used."""


class InputNotFoundError(InputError, FileNotFoundError):
    """A path given on the command line does not exist."""


class NotARasterError(InputError):
    """The file exists but GDAL cannot open it as a raster."""


class CorruptRasterError(InputError):
    """The raster opens but its data cannot be read (truncated or damaged file)."""


class GeoreferenceError(InputError):
    """The raster has no CRS or no geotransform, so nothing can be placed on the ground."""


class BandError(InputError):
    """Band count, colour interpretation or dtype do not fit what the model needs."""


class AOIError(InputError):
    """The area-of-interest layer is unreadable or does not overlap the raster."""


class GSDError(InputError):
    """The imagery is too coarse for the requested targets."""


class VectorInputError(InputError):
    """A vector layer (predictions, truth, SHAs, annotations) is missing, or lacks a layer or column."""


class ConfigError(RamsError, ValueError):
    """A configuration file or option is invalid."""


class ModelError(RamsError, ValueError):
    """A model bundle is missing, corrupt, fails its hash check, or does not fit the input."""


class OutputError(RamsError, OSError):
    """An output cannot be written (exists without --overwrite, or the folder is not writable)."""


class DeviceError(RamsError, RuntimeError):
    """The requested compute device is not available."""


class BatchPartialFailure(RamsError):
    """A batch finished, but some flights failed; their errors are recorded in the batch status."""


class InterruptedRun(RamsError):
    """The run was interrupted; a checkpoint allows ``--resume``."""


# One table: exception class -> exit code. Checked most-specific first (see exit_code_for).
# 1 is an unexpected internal error, 2 is a command-line usage error (Typer/Click).
EXIT_CODES: dict[type[BaseException], int] = {
    InputNotFoundError: 3,
    NotARasterError: 4,
    CorruptRasterError: 5,
    GeoreferenceError: 6,
    BandError: 7,
    AOIError: 8,
    GSDError: 9,
    ConfigError: 10,
    ModelError: 11,
    OutputError: 12,
    VectorInputError: 13,
    DeviceError: 14,
    BatchPartialFailure: 15,
    InputError: 16,
    InterruptedRun: 130,
    RamsError: 1,
}


def exit_code_for(err: BaseException) -> int:
    """Exit code for an exception: the entry of its most specific class in :data:`EXIT_CODES`."""
    for cls in type(err).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1

"""Entry point of the ``rams`` command: the Typer app, global options, logging and error mapping.

Every command module in this folder defines plain functions; they are registered here. Errors derived from
:class:`rams.errors.RamsError` become one line on stderr and the exit code from ``rams.errors.EXIT_CODES``;
tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import logging
from typing import Any

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.20 vendors its own copy of Click; its exceptions are the ones raised here.
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older Typer on plain Click
    from click.exceptions import ClickException  # type: ignore[assignment]
from rich.console import Console
from rich.logging import RichHandler

from rams import __version__
from rams.errors import RamsError, exit_code_for


class RamsGroup(TyperGroup):
    """Top-level command group that turns rams errors into one stderr line and a documented exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)  # type: ignore[arg-type]
        except RamsError as err:
            if _state["debug"]:
                stderr.print_exception()
            stderr.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
            raise SystemExit(exit_code_for(err)) from err
        except BrokenPipeError as err:  # `rams ... | head`: the reader left; not an error of ours
            import os
            import sys

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from err
        except KeyboardInterrupt as err:
            stderr.print("interrupted", markup=False)
            raise SystemExit(130) from err
        except (ClickException, typer.Exit, typer.Abort):
            raise
        except Exception as err:
            if _state["debug"]:
                raise
            if (known := _damaged_raster(err) or _disk_error(err)) is not None:  # deep in a module, not wrapped there
                stderr.print(f"error: {known}", markup=False, highlight=False, soft_wrap=True)
                raise SystemExit(exit_code_for(known)) from err
            stderr.print(
                f"internal error: {type(err).__name__}: {err} (rerun with --debug and report it)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise SystemExit(1) from err


def _damaged_raster(err: BaseException) -> RamsError | None:
    """A GDAL read failure (rasterio's ``RasterioIOError``: a damaged or truncated block met by any read path) as
    the one-line error rams gives for a damaged file, else None."""
    import sys

    rio_errors = sys.modules.get("rasterio.errors")
    if rio_errors is None or not isinstance(err, rio_errors.RasterioIOError):
        return None
    from rams.errors import CorruptRasterError
    from rams.raster import gdal_error_text

    return CorruptRasterError(
        f"GDAL could not read a raster ({gdal_error_text(err)}); the file is damaged or truncated: copy or export it "
        "again"
    )


def _disk_error(err: BaseException) -> RamsError | None:
    """A full disk (or quota), a file too large for the file system, or a read-only file system met while writing,
    as a one-line output error with the fix, else None. Outputs are written under temporary names and renamed
    when complete, so nothing half-written is left; an interrupted `rams detect` / `rams batch` keeps its
    checkpoint and continues with --resume."""
    import errno

    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    codes = {c.errno for c in chain if isinstance(c, OSError)}
    text = " ".join(str(c) for c in chain)
    from rams.errors import OutputError

    # (SQLite, under GDAL's GeoPackage driver, says "database or disk is full"; the file named by an OSError may be
    # the input being copied, so none is named)
    if codes & {errno.ENOSPC, errno.EDQUOT} or "No space left on device" in text or "disk is full" in text:
        return OutputError(
            "the disk is full: free space on the disk of --out (and of its .partial checkpoint folder) or write --out "
            "to another disk; nothing half-written was kept, and `rams detect`/`rams batch` continue with --resume"
        )
    if errno.EFBIG in codes or "File too large" in text:
        return OutputError(
            "a file grew past the size the disk's file system allows (FAT32 USB sticks stop at 4 GB) or a size limit "
            "of this session: write --out to an NTFS, exFAT or ext4 disk; nothing half-written was kept"
        )
    if errno.EROFS in codes:
        return OutputError("the file system is read-only: write --out to a writable disk")
    return None


app = typer.Typer(
    cls=RamsGroup,
    name="rams",
    help="Remote Aerial Minefield Survey: orthomosaics to georeferenced mine/ERW evidence. "
    "Every output is a recommendation for human review, never a safety claim.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

stderr = Console(stderr=True)
_state = {"debug": False}


def value_range_option(text: str | None) -> list[float] | None:
    """``--value-range LO,HI`` (pixel values mapped to black and white, e.g. ``0,4095``) as a config override."""
    if text is None:
        return None
    from rams.errors import ConfigError

    try:
        lo, hi = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"--value-range {text!r}: give two numbers, LO,HI (e.g. 0,4095 for 12-bit values)") from None
    if not hi > lo:
        raise ConfigError(f"--value-range {text!r} is empty; give LO,HI with HI > LO")
    return [lo, hi]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"rams {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug logs)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on stderr."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Global options."""
    _state["debug"] = debug
    level = logging.WARNING if quiet else (logging.INFO if verbose == 0 else logging.DEBUG)
    if verbose == 0 and not quiet:
        level = logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=stderr, show_path=False, show_time=debug, markup=False)],
        force=True,
    )
    for noisy in ("rasterio", "fiona", "pyogrio", "matplotlib", "PIL", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def is_debug() -> bool:
    """Whether ``--debug`` was given (commands may add detail to their output)."""
    return _state["debug"]


# (module in rams/cli, command name, attribute: a function, or a Typer sub-app for command groups).
# Command modules import heavy libraries (torch, geopandas) inside their functions so `rams --help` stays fast.
COMMANDS: list[tuple[str, str, str]] = [
    ("info", "info", "info"),
    ("detect", "detect", "detect"),
    ("evaluate", "evaluate", "evaluate"),
    ("quality", "quality", "quality"),
    ("polygons", "polygons", "polygons"),
    ("reduce", "reduce", "reduce"),
    ("export", "export", "export"),
    ("synth", "synth", "synth"),
    ("models", "models", "app"),
    ("train", "train", "train"),
    ("train", "mine", "mine"),
    ("batch", "batch", "batch"),
]


def _register() -> None:
    import importlib

    for module_name, command_name, attr in COMMANDS:
        module = importlib.import_module(f"rams.cli.{module_name}")
        obj = getattr(module, attr)
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=command_name)
        else:
            app.command(command_name)(obj)


_register()


def _quiet_broken_pipe(console: Any) -> None:
    """Rich's ``Console.on_broken_pipe`` with exit status 0: ``rams ... --help | head`` is not a failure."""
    import os
    import sys

    if console.quiet:
        return
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
    raise SystemExit(0)


def main() -> None:
    """Console-script entry point."""
    import rich.console

    # Typer prints help through its own rich Console, outside the commands' error handling; rich's hook (made to
    # be overridden) would exit 1 when the reader of a pipe leaves early
    rich.console.Console.on_broken_pipe = _quiet_broken_pipe  # type: ignore[method-assign,assignment]
    app()


if __name__ == "__main__":
    main()

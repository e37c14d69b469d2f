"""`rams info` and global CLI behaviour through CliRunner: output, JSON, and one exit code per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from rams import __version__
from rams.cli.main import app
from rams.errors import EXIT_CODES, BandError, GSDError, InputNotFoundError, exit_code_for

runner = CliRunner()


def test_version_and_help() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "info" in r.output


def test_info_text_and_json(make_geotiff) -> None:
    am = np.zeros((300, 400), np.uint8)
    am[:, :200] = 255
    p = make_geotiff(height=300, width=400, gsd=0.005, alpha=True, alpha_mask=am)
    r = runner.invoke(app, ["info", str(p), "--gsd", "0.01", "--tile-size", "64", "--overlap", "8"])
    assert r.exit_code == 0, r.output
    assert "0.50 cm/px" in r.output and "alpha" in r.output
    # at 1 cm the grid is 150 x 200: 3 x 4 tiles of 64 px with >= 8 px overlap
    assert "12 tiles of 64 px" in r.output
    assert "adequate" in r.output
    r = runner.invoke(app, ["info", str(p), "--json"])
    assert r.exit_code == 0
    d = json.loads(r.output)
    assert d["ortho"]["width"] == 400 and d["ortho"]["mask_kind"] == "alpha"
    assert d["ortho"]["valid_fraction"] == pytest.approx(0.5)
    assert d["gsd_adequate"] is True


def test_info_coarse_gsd_verdict(make_geotiff) -> None:
    p = make_geotiff(gsd=0.03)
    r = runner.invoke(app, ["info", str(p), "--classes", "pfm1"])
    assert r.exit_code == 0
    assert "too coarse for targets under 12 cm" in r.output


def test_non_square_pixels_count_at_their_coarser_side(make_geotiff) -> None:
    """0.6 x 1.4 cm pixels resolve 1.4 cm along one axis: that is the GSD (the mean, 1.0 cm, would pass a 1 cm
    model's check and judge 6 cm items resolvable while they span 4 px down the image); detect refuses it as too
    coarse for the default model, and the grid is square at 1.4 cm."""
    from affine import Affine

    from rams.raster import describe, open_raster, target_grid

    p = make_geotiff(height=200, width=300, transform=Affine(0.006, 0, 500000, 0, -0.014, 4400000))
    with open_raster(p) as src:
        info = describe(src, footprint=False)
        assert info.gsd_m == pytest.approx(0.014) and info.pixel_sides_m == pytest.approx((0.006, 0.014))
        g = target_grid(src)
        assert (g.gsd_m, g.width, g.height) == (pytest.approx(0.014), 129, 200)  # 1.8 m x 2.8 m
    r = runner.invoke(app, ["info", str(p), "--classes", "pmn"])
    assert r.exit_code == 0, r.output
    assert "1.40 cm/px (pixels not square: 0.60 cm across x 1.40 cm down" in r.output
    r = runner.invoke(app, ["detect", str(p), "--out", str(p.with_suffix(".gpkg"))])
    assert r.exit_code == EXIT_CODES[GSDError], r.output
    assert "1.40 cm/px is too coarse for model default" in r.output and not p.with_suffix(".gpkg").exists()
    assert "0.60 cm across x 1.40 cm down" in " ".join(r.output.split())
    assert "export the mosaic again from its source" in " ".join(r.output.split())


@pytest.mark.parametrize(
    "case,code,message",
    [
        ("missing", 3, "not found"),
        ("text", 4, "not a raster"),
        ("truncated", 5, "truncated or"),
        ("damaged", 5, "band 1: IReadBlock failed"),  # a block in the middle: the open-time probe passes
        ("nocrs", 6, "coordinate reference system"),
    ],
)
def test_info_bad_inputs(case: str, code: int, message: str, make_geotiff, tmp_path: Path) -> None:
    if case == "missing":
        p = tmp_path / "missing.tif"
    elif case == "text":
        p = tmp_path / "x.tif"
        p.write_text("hello")
    elif case == "truncated":
        p = make_geotiff(height=512, width=512, seed=1)
        p.write_bytes(p.read_bytes()[:5000])
    elif case == "damaged":
        p = _damaged_in_the_middle(make_geotiff(height=512, width=512, seed=1))
    else:
        p = make_geotiff(crs=None)
    r = runner.invoke(app, ["info", str(p)])
    assert r.exit_code == code, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert len([ln for ln in r.output.strip().splitlines() if ln.startswith("error:")]) == 1


def test_exit_code_table_is_distinct() -> None:
    specific = {k: v for k, v in EXIT_CODES.items()}
    assert len(set(specific.values())) == len(specific)
    assert exit_code_for(InputNotFoundError("x")) == 3
    assert exit_code_for(BandError("x")) == 7
    assert exit_code_for(GSDError("x")) == 9
    # errors also behave as the matching builtins for library users
    assert isinstance(InputNotFoundError("x"), FileNotFoundError)
    assert isinstance(BandError("x"), ValueError)


def test_readme_lists_every_exit_code() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code in set(EXIT_CODES.values()):
        assert f"| {code} |" in readme, f"exit code {code} missing from README table"


def test_usage_error_exit_code_2() -> None:
    r = runner.invoke(app, ["info"])
    assert r.exit_code == 2
    assert "Missing argument" in r.output


def test_help_into_a_pipe_closed_early_exits_0(tmp_path: Path) -> None:
    # `rams evaluate --help | head -1`: the reader leaves while rich still writes the help
    import subprocess
    import sys

    code = "import sys; from rams.cli.main import main; sys.argv = ['rams', 'evaluate', '--help']; main()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_info_names_crs_that_are_read_through_a_warp(make_geotiff) -> None:
    """A compound CRS (UTM + a vertical datum, as drone exports write) is named, not dumped as WKT; feet and Web
    Mercator are said to be read through a warp; an unmasked RGB file says how its collar is treated."""
    from affine import Affine

    comp = make_geotiff(crs="EPSG:32636+5773", origin=(500000.0, 5300000.0))
    r = runner.invoke(app, ["info", str(comp)])
    assert r.exit_code == 0, r.output
    assert "crs         WGS 84 / UTM zone 36N + EGM96 height\n" in r.output
    assert "mask        none declared: 0 in every band = not imaged" in r.output
    ft = 0.01 / 0.3048006096
    feet = make_geotiff(crs="EPSG:2263", transform=Affine(ft, 0, 1e6, 0, -ft, 2e5))
    r = runner.invoke(app, ["info", str(feet)])
    assert "(not in ground metres, e.g. feet or Web Mercator: read through a warp to UTM)" in r.output
    assert "gsd         1.00 cm/px" in r.output


def test_info_names_the_value_range_fix_for_dim_uint16(tmp_path: Path) -> None:
    import rasterio
    from rasterio.transform import from_origin

    p = tmp_path / "u16.tif"
    data = np.random.default_rng(5).integers(50, 1000, (3, 200, 200)).astype(np.uint16)  # 10-bit values
    with rasterio.open(p, "w", driver="GTiff", width=200, height=200, count=3, dtype="uint16", crs="EPSG:32638",
                       transform=from_origin(500000, 4400000, 0.01, 0.01)) as dst:
        dst.write(data)
    r = runner.invoke(app, ["info", str(p)])
    assert r.exit_code == 0, r.output
    assert "values      a run would stop:" in r.output and "pixel values reach only" in r.output
    assert "--value-range 0,1023" in r.output
    d = json.loads(runner.invoke(app, ["info", str(p), "--json"]).output)
    assert "[0, 1023]" in d["value_note"]


def _damaged_in_the_middle(p: Path, block: tuple[int, int] | None = None) -> Path:
    """Overwrite the middle third of one block's compressed bytes (default: the middle block) of a tiled deflate
    GeoTIFF with garbage, as a bad copy does: the first and last blocks, which `open_raster` probes, stay readable;
    that block fails to decode."""
    import rasterio

    with rasterio.open(p) as src:
        bh, bw = src.block_shapes[0]
        bx, by = block or ((src.width // bw) // 2, (src.height // bh) // 2)
        off = int(src.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=1))
        size = int(src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=1))
    raw = bytearray(p.read_bytes())
    raw[off + size // 3 : off + 2 * size // 3] = bytes([0x13]) * (2 * size // 3 - size // 3)
    p.write_bytes(bytes(raw))
    return p

"""scripts/bench_quality.py: both ways of running the quality pass, on a small real mosaic."""

from __future__ import annotations

from pathlib import Path

import pytest

from rams.layers import read_layer
from tests.script_helpers import load_script


def test_streamed_and_held_give_the_same_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("bench_quality")
    mod.main(["--sides", "1200", "--workdir", str(tmp_path)])
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| streamed") or line.startswith("| held")]
    assert len(rows) == 2
    cells = {r.split("|")[1].strip(): r.split("|")[4:6] for r in rows}
    assert cells["streamed"] == cells["held"]  # same cells and layer rows
    streamed = read_layer(tmp_path / "quality_streamed_1200.gpkg", "coverage_quality")
    held = read_layer(tmp_path / "quality_held_1200.gpkg", "coverage_quality")
    assert len(streamed) == len(held) > 1 and set(streamed.quality) == set(held.quality)
    assert {"not_imaged"} < set(held.quality)
    assert list(streamed.cell_id) == list(held.cell_id)
    with pytest.raises(SystemExit):
        mod.main(["--modes", "fast", "--workdir", str(tmp_path)])

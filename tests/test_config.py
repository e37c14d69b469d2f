"""Config loading: defaults, YAML presets, overrides; typos and bad values fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest

from rams.config import ReadConfig, TilingConfig, dump_config, load_config
from rams.errors import ConfigError, InputNotFoundError


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("tile_size_px: 256\noverlap_px: 32\n")
    cfg = load_config(TilingConfig, p, {"overlap_px": 48, "tile_size_px": None})
    assert (cfg.tile_size_px, cfg.overlap_px) == (256, 48)
    assert "tile_size_px: 256" in dump_config(cfg)
    assert load_config(ReadConfig).resampling == "average"


def test_typo_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("tile_sise_px: 256\n")
    with pytest.raises(ConfigError, match="tile_sise_px"):
        load_config(TilingConfig, p)


def test_bad_values_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="overlap_px"):
        load_config(TilingConfig, None, {"tile_size_px": 64, "overlap_px": 40})
    with pytest.raises(InputNotFoundError):
        load_config(TilingConfig, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tile_size_px: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TilingConfig, bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(TilingConfig, lst)


def test_every_training_config_in_configs_parses() -> None:
    """The committed training recipes (shipped, experiments, fine-tuning) load as TrainConfig (no typo waits for a
    GPU session to fail); whole-scene validation configs list their scenes."""
    from pathlib import Path

    from rams.detector.train import load_train_config

    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted([*root.glob("train-*.yaml"), *root.glob("experiment-*.yaml"), *root.glob("finetune-*.yaml")])
    assert len(paths) >= 10
    for p in paths:
        cfg = load_train_config(p)
        assert cfg.sources, p
    gpu = load_train_config(root / "experiment-small-05cm-gpu.yaml")
    assert len(gpu.validation.scenes) == 18 and not gpu.validation.sources
    assert {s.targets for s in gpu.validation.scenes} == {"scatterable"}

from pathlib import Path

import pytest

from spatialvid.config import ConfigError, load_config


def test_defaults_are_the_papers_thresholds() -> None:
    f = load_config(env={}).filters
    assert (f.aesthetic_min, f.luminance_min, f.luminance_max, f.ocr_max, f.motion_min, f.motion_max) == (
        4.0, 20.0, 140.0, 0.3, 2.0, 14.0)


def test_file_then_environment_override(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('data_dir = "/x"\n[filters]\nmotion_min = 1.5\n[kafka]\npartitions = 8\n')
    cfg = load_config(p, env={"SPATIALVID_KAFKA__PARTITIONS": "16", "SPATIALVID_KAFKA__BOOTSTRAP": "h:9092"})
    assert cfg.filters.motion_min == 1.5
    assert cfg.kafka.partitions == 16, "environment must override the file"
    assert cfg.kafka.bootstrap == "h:9092"
    assert cfg.data_dir == "/x"
    # Child processes get the same configuration back from to_env().
    again = load_config(env=cfg.to_env())
    assert again == cfg


def test_unknown_key_and_bad_type_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'motion_minimum'"):
        load_config(env={"SPATIALVID_FILTERS__MOTION_MINIMUM": "1"})
    with pytest.raises(ConfigError, match="cannot read 'many' as int"):
        load_config(env={"SPATIALVID_KAFKA__PARTITIONS": "many"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", env={})

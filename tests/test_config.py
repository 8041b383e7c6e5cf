"""TrainConfig, presets and the generated command line."""

from __future__ import annotations

from dataclasses import fields

import pytest

from sat_core.config import (
    ARCHITECTURE_FIELDS,
    PRESET_DOCS,
    PRESETS,
    RUNTIME_FIELDS,
    ConfigError,
    TrainConfig,
    build_parser,
    config_diff,
    make_config,
    parse_config,
    preset,
)


def test_defaults_without_preset():
    assert parse_config([]) == TrainConfig()


def test_preset_then_overrides_with_types():
    cfg = parse_config(["--preset", "shapes-soft", "--lr", "3e-4", "--attention", "hard",
                        "--no-gate", "--batch-size", "7", "--out-dir", "x/y"])
    base = TrainConfig(**{**TrainConfig().to_dict(), **PRESETS["shapes-soft"]})
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float)
    assert cfg.batch_size == 7 and isinstance(cfg.batch_size, int)
    assert cfg.gate is False and cfg.attention == "hard" and cfg.out_dir == "x/y"
    # everything not given comes from the preset, not from the dataclass defaults
    assert config_diff(cfg, base) == {
        "lr": (3e-4, base.lr), "attention": ("hard", "soft"), "gate": (False, True),
        "batch_size": (7, base.batch_size), "out_dir": ("x/y", base.out_dir),
    }
    assert cfg.embed_dim == PRESETS["shapes-soft"]["embed_dim"] != TrainConfig().embed_dim


def test_bool_flags_both_ways():
    assert parse_config(["--fine-tune"]).fine_tune is True
    assert parse_config(["--fine-tune", "--no-fine-tune"]).fine_tune is False
    assert parse_config(["--no-equal-length"]).equal_length is False


def test_unknown_preset_lists_presets(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--preset", "shapes-medium"])
    err = capsys.readouterr().err
    assert "shapes-medium" in err
    for name in PRESETS:
        assert name in err


def test_bad_values_are_rejected(capsys):
    with pytest.raises(SystemExit):
        parse_config(["--attention", "medium"])
    assert "medium" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--lr", "fast"])
    with pytest.raises(SystemExit):
        parse_config(["--dropout", "1.5"])
    assert "dropout" in capsys.readouterr().err


def test_help_lists_every_field_with_its_default():
    text = " ".join(build_parser().format_help().split())
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert "(default: 0.0004)" in text  # lr
    assert "--no-gate" in text
    for name, doc in PRESET_DOCS.items():
        assert f"{name} {doc}" in text


def test_make_config_and_validation_errors():
    with pytest.raises(ConfigError, match="embed_size"):
        make_config(None, embed_size=3)
    with pytest.raises(ConfigError, match="hard_mix"):
        TrainConfig(hard_mix=-0.1)
    with pytest.raises(ConfigError, match="encoder='vgg16'"):
        TrainConfig(encoder="vgg16")
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*shapes-soft"):
        preset("nope")


def test_feature_cache_follows_the_frozen_encoder():
    assert TrainConfig(fine_tune=False).uses_feature_cache
    assert not TrainConfig(fine_tune=True).uses_feature_cache
    assert TrainConfig(fine_tune=False, feature_cache="on").uses_feature_cache
    with pytest.raises(ConfigError, match="fine-tuned encoder cannot be cached"):
        TrainConfig(fine_tune=True, feature_cache="on")
    assert not TrainConfig(fine_tune=False, feature_cache="off").uses_feature_cache


def test_dict_round_trip():
    cfg = preset("flickr30k-hard", lr=1e-3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="colour"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": 1})
    assert TrainConfig.from_dict({**cfg.to_dict(), "colour": 1}, strict=False) == cfg


def test_stored_configs_without_a_later_field_get_its_legacy_value():
    d = preset("shapes-soft").to_dict()
    assert d.pop("encoder_coord_scale") == 8.0
    assert TrainConfig.from_dict(d).encoder_coord_scale == 1.0  # what such a run trained with
    assert TrainConfig.from_dict({**d, "encoder_coord_scale": 0.0}).encoder_coord_scale == 0.0


def test_presets_follow_the_paper():
    assert set(PRESETS) == set(PRESET_DOCS) == {
        f"{d}-{a}" for d in ("shapes", "flickr8k", "flickr30k", "coco") for a in ("soft", "hard")}
    for name in PRESETS:
        cfg = preset(name)
        assert cfg.attention == name.rsplit("-", 1)[1]
        assert cfg.dataset == name.rsplit("-", 1)[0]
        if cfg.dataset == "shapes":
            continue
        assert (cfg.encoder, cfg.fine_tune, cfg.uses_feature_cache) == ("vgg19", False, True)
        assert (cfg.max_size, cfg.batch_size, cfg.dropout) == (10000, 64, 0.5)
        # Eq. 14's penalty is Sec. 4.2.1's (soft); the authors' hard model never feels it
        assert cfg.alpha_c == (1.0 if cfg.attention == "soft" else 0.0)
        assert cfg.equal_length and cfg.patience > 0
        assert cfg.optimizer == ("rmsprop" if cfg.dataset == "flickr8k" else "adam")


def test_field_groups_are_real_fields():
    names = {f.name for f in fields(TrainConfig)}
    assert set(ARCHITECTURE_FIELDS) <= names and set(RUNTIME_FIELDS) <= names
    assert not set(ARCHITECTURE_FIELDS) & set(RUNTIME_FIELDS)

import json

import pytest

from vocolab.core.config import Config
from vocolab.core.presets import preset
from vocolab.studies.common import study_config


def test_presets_build_and_scale():
    nano, small, base = (preset(n) for n in ("nano", "small", "base"))
    assert nano.data.image_tokens == 64
    assert small.data.image_tokens == 256
    assert base.data.image_tokens == 576  # the paper's 336 px / 14 px
    assert nano.llm.hidden_size < small.llm.hidden_size < base.llm.hidden_size


@pytest.mark.parametrize("name", ["nano", "small", "base"])
def test_json_round_trip(name, tmp_path):
    cfg = preset(name, **{"voco.tokens": 4, "seed": 3})
    path = tmp_path / "cfg.json"
    cfg.to_json(path)
    again = Config.from_json(path)
    assert again == cfg
    assert Config.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"data.imag_size": 3}, "data.imag_size"),  # unknown key
        ({"nonsense": 1}, "nonsense"),
        ({"voco.tokens": "one"}, "voco.tokens"),  # wrong type
        ({"train.lr": "fast"}, "train.lr"),
        ({"data.shapes": [1, 2]}, "data.shapes"),
        ({"data.image_size": 60}, "data.image_size"),  # not divisible by patch 8
        ({"voco.tokens": 65}, "voco.tokens"),  # more VoCo tokens than image tokens
        ({"voco.mask": "sideways"}, "voco.mask"),
        ({"llm.attn_implementation": "flash_attention_2"}, "llm.attn_implementation"),
        ({"llm.heads": 3}, "llm.hidden_size"),
        ({"train.instruct_retry_below": 1.5}, "train.instruct_retry_below"),  # an accuracy
        ({"train.instruct_retry": -0.5}, "train.instruct_retry"),
        ({"train.voco_retries": -1}, "train.voco_retries"),
    ],
)
def test_bad_overrides_name_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        preset("nano", **overrides)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"data.colors": ["gold", "red"]}, "data.colors"),  # a colour the renderer cannot draw
        ({"data.shapes": ["circle", "blob"]}, "data.shapes"),
        ({"compress.method": "zip", "compress.tokens": 4}, "compress.method"),
        ({"compress.method": "fastv", "compress.tokens": 4}, "compress.method"),  # acts inside the LLM
    ],
)
def test_a_job_config_checks_what_the_renderer_and_the_zoo_can_build(overrides, field):
    """The config alone accepts these (it imports neither the renderer nor the zoo); every
    job checks them before it generates data or trains."""
    preset("nano", **overrides)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        study_config("nano", 0, overrides, {})


def test_unknown_preset_and_bad_json(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        preset("huge")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        Config.from_json(bad)
    tree = json.loads(preset("nano").to_json())
    tree["llm"]["extra"] = 1
    with pytest.raises(ValueError, match="llm.extra"):
        Config.from_dict(tree)


def test_override_keeps_original_and_coerces_int_to_float():
    cfg = preset("nano")
    other = cfg.override(**{"train.lr": 1})
    assert other.train.lr == 1.0 and isinstance(other.train.lr, float)
    assert cfg.train.lr != other.train.lr


def test_a_field_added_later_is_left_out_of_keys_at_its_default():
    """`LEFT_OUT_AT_DEFAULT`: a field added after models were cached changes no key while at its
    default (the dict, and so every key of it, is the one before the field), and is kept when set."""
    from vocolab.core.config import LEFT_OUT_AT_DEFAULT

    cfg = preset("nano")
    for section, fields in LEFT_OUT_AT_DEFAULT.items():
        for name, default in fields.items():
            assert getattr(getattr(cfg, section), name) == default and name not in cfg.to_dict()[section]
            other = {"data.train_clip_frames": 0.5, "train.teacher_cache": True,
                     "train.ema_decay": 0.99, "train.distill_temperature": 1.0}[f"{section}.{name}"]
            changed = cfg.override(**{f"{section}.{name}": other})
            assert changed.to_dict()[section][name] == other and Config.from_dict(changed.to_dict()) == changed
    assert Config.from_dict(cfg.to_dict()) == cfg

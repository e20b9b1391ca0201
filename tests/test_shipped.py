"""The models the repository ships: they load as float32 models of their own config and
reproduce, from a clean checkout, the held-out accuracy recorded when they were shipped."""

import pytest
import torch
from tiny import batch, tiny_vlm

from vocolab.core.config import Config
from vocolab.models.vlm import VoCoVLM
from vocolab.shipped import MODELS, SHIPPED_ROOT, check_accuracy, load_shipped, load_trained, save_trained
from vocolab.zoo.mod import MoDVLM

SHIPPED_BYTES = 16 * 2**20  # the repository stays light


def logits(model, ids, layouts, pixels):
    with torch.no_grad():
        return model(ids, layouts, pixels=pixels, mask="causal").logits


@pytest.mark.parametrize("kind", ["vlm", "mod"])
def test_a_half_precision_save_loads_as_the_rounded_float32_model(tmp_path, kind):
    vlm = tiny_vlm(layers=2)
    model = MoDVLM(vlm, r=0.5, layers="all") if kind == "mod" else vlm
    if kind == "mod":
        for router in model.routers.values():  # a trained router, not the zero-ish init
            torch.nn.init.normal_(router.weight)
    save_trained(model, vlm.cfg, tmp_path / "m", {"stage": kind}, half=True)
    loaded, cfg, meta = load_trained(tmp_path / "m")
    assert type(loaded) is type(model) and cfg == vlm.cfg and meta["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert next(model.parameters()).dtype == torch.float32  # the caller's model was not cast
    rounded = {k: v.half().float() for k, v in model.state_dict().items()}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in rounded.items())
    ids, layouts, pixels = batch([(3, 2, 1), (5, 1, 1)])
    model.load_state_dict(rounded)
    torch.testing.assert_close(logits(loaded, ids, layouts, pixels), logits(model, ids, layouts, pixels))


def test_a_mod_folder_without_its_routers_is_refused(tmp_path):
    model = MoDVLM(tiny_vlm(layers=2), r=0.5, layers="all")
    save_trained(model, model.cfg, tmp_path / "m")
    (tmp_path / "m" / "routers.safetensors").unlink()
    with pytest.raises(ValueError, match="routers"):
        load_trained(tmp_path / "m")


def test_a_missing_shipped_model_says_how_to_make_it(tmp_path):
    with pytest.raises(ValueError, match="make models"):
        load_shipped("voco", root=tmp_path)
    with pytest.raises(ValueError, match="no shipped model"):
        load_shipped("teacher", root=tmp_path)


def test_the_shipped_models_are_all_there_and_light():
    folders = [SHIPPED_ROOT / "nano" / name for name in MODELS]
    assert all((f / "meta.json").is_file() for f in folders), f"missing: {[str(f) for f in folders]}"
    size = sum(p.stat().st_size for f in folders for p in f.iterdir())
    assert size <= SHIPPED_BYTES, f"shipped models take {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("name", list(MODELS))
def test_a_shipped_model_matches_its_config_and_reproduces_its_recorded_accuracy(name):
    model, cfg, meta = load_shipped(name)
    assert meta["dtype"] == "float16" and all(p.dtype == torch.float32 for p in model.parameters())
    assert cfg == Config.from_json(SHIPPED_ROOT / "nano" / name / "config.json") and cfg.preset == "nano"
    plain = model.vlm if name == "mod" else model
    fresh = VoCoVLM(cfg, plain.special, plain.vocab_size)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    for who in ("trained_by", "shipped_by"):  # the command and commit that made it
        assert meta[who]["command"].startswith("vocolab ") and len(meta[who]["commit"]) == 40
    recorded = meta["check"]
    check = check_accuracy(name, model, cfg)
    assert check["questions"] == recorded["questions"] > 50
    assert check["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-9)
    assert check["per_family"] == pytest.approx(recorded["per_family"], abs=1e-9)

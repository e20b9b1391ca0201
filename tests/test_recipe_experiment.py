"""`tools/recipe_experiment.py --clip-set`: the clip stage on other data under the recipe's
LLM stages. Without overrides it must be the recipe itself, or its comparisons mean nothing."""

import importlib.util
from pathlib import Path

import torch
from tiny import tiny_cfg

TOOL = Path(__file__).resolve().parents[1] / "tools" / "recipe_experiment.py"


def tool():
    spec = importlib.util.spec_from_file_location("recipe_experiment", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_clip_stage_apart_reproduces_the_recipe_and_jitter_changes_it(tmp_path):
    from vocolab.training.recipe import run_recipe

    cfg = tiny_cfg(**{"data.train_scenes": 48, "data.val_scenes": 8, "data.heldout_scenes": 8,
                      "train.batch_size": 8, "train.clip_batch_size": 8, "train.clip_steps": 2,
                      "train.pretrain_steps": 2, "train.instruct_steps": 2, "train.instruct_retry": 0.0})
    recipe = run_recipe(cfg, tmp_path / "a", progress=False, stages=("clip", "pretrain", "upper")).upper.model
    clip_apart = tool().clip_apart
    _, same, seconds = clip_apart(cfg, cfg, tmp_path / "b")
    _, jittered, _ = clip_apart(cfg, cfg.override(**{"data.train_jitter": 0.25}), tmp_path / "c")
    ref = recipe.state_dict()
    assert set(seconds) == {"clip", "pretrain", "upper"}
    assert all(torch.equal(ref[k], v) for k, v in same.state_dict().items())
    assert not all(torch.equal(ref[k], v) for k, v in jittered.state_dict().items())

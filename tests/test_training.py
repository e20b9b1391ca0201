"""Training stages on a tiny config: resume equivalence, the recipe chain, the fit command."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from lightning import seed_everything

from vocolab import cli
from vocolab.core.presets import preset
from vocolab.data.module import VoCoDataModule
from vocolab.training.loading import load_model
from vocolab.training.modules import VLMModule
from vocolab.training.trainer import make_trainer

TINY = {"data.image_size": 32, "llm.hidden_size": 32, "llm.layers": 1, "llm.heads": 2, "llm.kv_heads": 2,
        "llm.intermediate_size": 64, "vision.hidden_size": 32, "vision.heads": 2,
        "vision.intermediate_size": 64, "train.batch_size": 8, "train.warmup_frac": 0.2}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOCOLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _fit(tmp, steps, ckpt=None):
    cfg = preset("nano", **TINY)
    data = VoCoDataModule(cfg, train_n=48, heldout_n=8, turns=True, progress=False)  # 6 batches per epoch
    module = VLMModule(cfg, mask="voco", steps=9)
    torch.manual_seed(0)
    trainer = make_trainer(cfg, tmp, "run", steps, progress=False, limit_val_batches=0)  # saves every 2 steps
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    return module.model.state_dict()


def test_grad_clip_reaches_the_trainer(tmp_path):
    clipped = make_trainer(preset("nano", **{"train.grad_clip": 0.5}), tmp_path, "a", 3, progress=False)
    plain = make_trainer(preset("nano", **{"train.grad_clip": 0.0}), tmp_path, "b", 3, progress=False)
    assert clipped.gradient_clip_val == 0.5 and plain.gradient_clip_val is None


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a CPU-only promise")
def test_a_cpu_run_is_reproducible(tmp_path):
    """On the CPU the trainer turns on PyTorch's deterministic kernels (without them two nano
    runs of one seed part within 20 steps), so the same seed trains the same weights."""
    torch.use_deterministic_algorithms(False)
    make_trainer(preset("nano", **TINY), tmp_path, "run", 1, progress=False)
    assert torch.are_deterministic_algorithms_enabled()
    weights = []
    for name in ("a", "b"):
        seed_everything(0, verbose=False)
        weights.append(_fit(tmp_path / name, 6))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_resume_from_mid_epoch_checkpoint_matches_uninterrupted_run(cache):
    straight = _fit(cache / "a", 9)
    ckpt = cache / "a" / "run" / "checkpoints" / "step4.ckpt"  # saved during the run, mid first epoch
    assert ckpt.is_file()
    resumed = _fit(cache / "c", 9, ckpt=str(ckpt))
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    interrupted = _fit(cache / "d", 4)
    assert any(not torch.equal(straight[n], interrupted[n]) for n in straight)  # the test can fail


def test_recipe_distils_the_voco_stage_from_the_upper_bound(cache):
    from vocolab.training.distill import DistillModule
    from vocolab.training.recipe import run_recipe

    cfg = preset("nano", **TINY, **{"train.instruct_steps": 1, "train.voco_steps": 2})
    data = VoCoDataModule(cfg, train_n=48, heldout_n=8, turns=True, progress=False)
    trained = run_recipe(cfg, cache / "runs", data=data, progress=False, stages=("upper", "voco"))
    assert cfg.train.voco_objective == "logits+attention"
    assert isinstance(trained.voco, DistillModule) and trained.voco.objective == "logits+attention"
    assert trained.voco.teacher is trained.upper.model and trained.voco.model is not trained.upper.model
    implicit = cfg.override(**{"train.voco_objective": "implicit"})
    plain = run_recipe(implicit, cache / "runs2", data=data, progress=False, stages=("upper", "voco"))
    assert type(plain.voco) is VLMModule
    with pytest.raises(ValueError, match="upper stage"):
        run_recipe(cfg, cache / "runs3", data=data, progress=False, stages=("voco",))


def test_a_voco_stage_can_draw_its_k_per_batch(cache):
    from vocolab.training.recipe import stage_key, vlm_stage

    cfg = preset("nano", **TINY)
    data = VoCoDataModule(cfg, train_n=48, heldout_n=8, turns=True, progress=False)
    data.set_task("qa", voco_tokens=(1, 2, 4))

    def drawn():
        return [{layout.voco_tokens for layout in batch.layouts} for batch in data.train_dataloader()]

    ks = drawn()
    assert all(len(k) == 1 for k in ks) and set.union(*ks) == {1, 2, 4}  # one K per batch, every K drawn
    assert drawn() == ks  # the draw depends on the batch, not on how often it was asked
    tok = data.tokenizer
    assert stage_key(cfg, "voco", tok, cfg.voco.tokens) == stage_key(cfg, "voco", tok)  # keys of finished runs hold
    assert stage_key(cfg, "voco", tok, (1, 2, 4)) != stage_key(cfg, "voco", tok)
    voco = vlm_stage(cfg, data, cache / "runs", "voco", task="qa", mask="voco", steps=2, init=None, k=(1, 2, 4),
                     progress=False)
    assert voco.trainer.global_step == 2


def test_the_clip_stage_trains_to_a_validation_retrieval_target_under_a_cap(cache):
    """With `train.clip_target` the clip stage measures retrieval on the validation split every
    `train.clip_check_every` steps and stops once past the target, `clip_steps` being the cap;
    the checks leave the training itself as it was. Without a target no check runs."""
    from vocolab.training.recipe import run_recipe

    cfg = preset("nano", **TINY, **{"train.clip_steps": 12, "train.clip_batch_size": 8, "train.clip_check_every": 2,
                                    "data.val_scenes": 16})
    data = VoCoDataModule(cfg, train_n=48, heldout_n=8, turns=True, progress=False)
    runs = {name: run_recipe(cfg.override(**{"train.clip_target": target}), cache / name, data=data,
                             progress=False, stages=("clip",))
            for name, target in (("low", 1e-6), ("never", 1.0), ("off", 0.0))}
    low, never, off = runs["low"], runs["never"], runs["off"]
    assert low.clip.trainer.global_step < 12 and low.clip.trainer.global_step % 2 == 0
    assert low.validation["clip"] > 1e-6
    assert never.clip.trainer.global_step == 12 and 0 <= never.validation["clip"] < 1
    assert off.clip.trainer.global_step == 12 and off.validation == {} and off.clip.val_retrieval is None
    logged = (cache / "never" / "clip" / "metrics.csv").read_text().splitlines()
    assert logged[0].endswith("val/retrieval_acc") and sum(1 for line in logged if line[-1] != ",") == 1 + 6
    for name, value in off.clip.state_dict().items():
        assert torch.equal(value, never.clip.state_dict()[name]), name


def test_a_slow_upper_stage_gets_more_cycles_judged_on_validation(cache, monkeypatch):
    """While under `train.instruct_retry_below` on the validation split the upper stage goes on
    from where it ended (`upper-retry`, `upper-retry2`), `train.instruct_retries` cycles at most;
    a run that passes a check trains exactly as without the later cycles."""
    from vocolab.training import recipe
    from vocolab.training.recipe import run_recipe

    cfg = preset("nano", **TINY, **{"train.instruct_steps": 4, "data.val_scenes": 8, "train.instruct_retry_below": 1.0})
    data = VoCoDataModule(cfg, train_n=48, heldout_n=8, turns=True, progress=False)
    slow = run_recipe(cfg, cache / "slow", data=data, progress=False, stages=("upper",))
    assert cfg.train.instruct_retries == 2 and slow.upper.stage == "upper-retry2"  # capped: 1.0 is never passed
    assert list(slow.validation) == ["upper", "upper-retry", "upper-retry2"]
    assert [name for name in slow.seconds if "retry" in name] == ["upper-retry", "upper-retry2"]
    assert (cache / "slow" / "upper-retry2" / "finished.json").is_file()
    # the figures a run cut short would otherwise take with it
    assert json.loads((cache / "slow" / "validation.json").read_text()) == slow.validation
    once = run_recipe(cfg.override(**{"train.instruct_retries": 1}), cache / "once", data=data, progress=False,
                      stages=("upper",))
    assert once.upper.stage == "upper-retry" and list(once.validation) == ["upper", "upper-retry"]
    # a first retry that passes the bar ends the cycles, with its weights: those of a one-cycle cap
    seen = iter([0.5, 0.95])  # tiny models score 0 everywhere: the checks' figures are scripted here
    with monkeypatch.context() as patch:
        patch.setattr(recipe, "validation_accuracy", lambda *args, **kwargs: next(seen))
        early = run_recipe(cfg.override(**{"train.instruct_retry_below": 0.9}), cache / "early", data=data,
                           progress=False, stages=("upper",))
    assert early.upper.stage == "upper-retry" and early.validation == {"upper": 0.5, "upper-retry": 0.95}
    assert "upper-retry2" not in early.seconds
    for name, value in early.upper.model.state_dict().items():
        assert torch.equal(value, once.upper.model.state_dict()[name]), name
    passed = run_recipe(cfg.override(**{"train.instruct_retry_below": 0.0}), cache / "pass", data=data,
                        progress=False, stages=("upper",))
    assert passed.upper.stage == "upper" and passed.validation == {"upper": slow.validation["upper"]}
    off = run_recipe(cfg.override(**{"train.instruct_retry": 0.0}), cache / "off", data=data, progress=False,
                     stages=("upper",))
    assert off.validation == {} and "upper-retry" not in off.seconds
    for name, value in off.upper.model.state_dict().items():
        assert torch.equal(value, passed.upper.model.state_dict()[name]), name
    assert any(not torch.equal(v, slow.upper.model.state_dict()[n]) for n, v in off.upper.model.state_dict().items())


def test_a_slow_voco_stage_gets_more_cycles_judged_by_validation_retention(cache, monkeypatch):
    """While under `train.voco_retry_below` retention on the validation split (lower -> upper
    bound) the voco stage goes on from where it ended (`voco-retry`, `voco-retry2`), against the
    same teacher, `train.voco_retries` cycles at most; one that passes, or whose bounds do not
    separate, is kept."""
    from vocolab.training import recipe
    from vocolab.training.distill import DistillModule

    cfg = preset("nano", **TINY, **{"train.instruct_steps": 2, "train.voco_steps": 3, "train.instruct_retry": 0.0,
                                    "data.val_scenes": 8})
    data = VoCoDataModule(cfg, train_n=48, heldout_n=8, turns=True, progress=False)
    passed = recipe.run_recipe(cfg.override(**{"train.voco_retry_below": 0.0}), cache / "pass", data=data,
                               progress=False, stages=("upper", "voco"))
    assert passed.voco.stage == "voco" and "voco-retry" not in passed.seconds
    assert set(passed.validation) == {"upper", "lower", "voco"}
    assert all(0 <= a <= 1 for a in passed.validation.values())

    def judged(voco_accuracy):  # upper 0.9, lower 0.1: VoCo at 0.7 keeps 0.75 < 0.80, at 0.9 all of it
        def accuracy(module, data, mask="causal"):
            if mask == "causal":
                return 0.9
            return voco_accuracy(module.stage) if module.stage.startswith("voco") else 0.1
        return accuracy

    with monkeypatch.context() as patch:
        patch.setattr(recipe, "validation_accuracy", judged(lambda stage: 0.7))
        slow = recipe.run_recipe(cfg, cache / "slow", data=data, progress=False, stages=("upper", "voco"))
        once = recipe.run_recipe(cfg.override(**{"train.voco_retries": 1}), cache / "once", data=data,
                                 progress=False, stages=("upper", "voco"))
        patch.setattr(recipe, "validation_accuracy", judged(lambda stage: 0.9 if stage == "voco-retry" else 0.7))
        early = recipe.run_recipe(cfg, cache / "early", data=data, progress=False, stages=("upper", "voco"))
    assert cfg.train.voco_retries == 2 and slow.voco.stage == "voco-retry2" and isinstance(slow.voco, DistillModule)
    assert slow.voco.trainer.global_step == round(cfg.train.voco_retry * cfg.train.voco_steps)
    assert slow.validation == {"upper": 0.9, "lower": 0.1, "voco": 0.7, "voco-retry": 0.7, "voco-retry2": 0.7}
    assert [name for name in slow.seconds if name.startswith("voco")] == ["voco", "voco-retry", "voco-retry2"]
    assert (cache / "slow" / "voco-retry2" / "finished.json").is_file()
    kept = passed.voco.model.state_dict()  # the same first voco stage: the retries went on from it
    assert any(not torch.equal(v, kept[n]) for n, v in slow.voco.model.state_dict().items())
    assert once.voco.stage == "voco-retry" and "voco-retry2" not in once.validation
    # a first retry that passes ends the cycles, with its weights: those of a one-cycle cap
    assert early.voco.stage == "voco-retry" and early.validation["voco-retry"] == 0.9
    assert "voco-retry2" not in early.seconds
    for name, value in early.voco.model.state_dict().items():
        assert torch.equal(value, once.voco.model.state_dict()[name]), name
    for off in ({"train.voco_retry": 0.0}, {"train.voco_retries": 0}):
        unchecked = recipe.run_recipe(cfg.override(**off), cache / "off", data=data, progress=False,
                                      stages=("upper", "voco"))
        assert unchecked.voco.stage == "voco" and unchecked.validation == {}
    monkeypatch.setattr(recipe, "validation_accuracy", lambda module, data, mask="causal": 0.5)  # no gap
    level = recipe.run_recipe(cfg, cache / "level", data=data, progress=False, stages=("upper", "voco"))
    assert level.voco.stage == "voco" and "voco-retry" not in level.seconds


def test_fit_command_chains_the_yaml_stages(cache, monkeypatch):
    monkeypatch.chdir(cache)
    configs = Path(__file__).resolve().parents[1] / "configs" / "nano"
    small = ["--trainer.max_steps", "2", "--data.train_n", "16", "--data.heldout_n", "4", "--data.batch_size", "8",
             "--data.progress", "false", "--trainer.enable_progress_bar", "false"]
    overrides = '{"data.image_size": 32, "llm.layers": 1, "vision.layers": 2}'
    for stage in ("clip", "pretrain", "upper", "voco"):
        model_args = ["--model.init_args.overrides", overrides, "--data.overrides", overrides]
        assert cli.main(["fit", "--config", str(configs / f"{stage}.yaml"), *small, *model_args]) == 0, stage
        assert (cache / "runs" / "nano" / stage / "checkpoints" / "last.ckpt").is_file()
    model = load_model(str(cache / "runs/nano/voco/checkpoints/last.ckpt"))
    assert model.cfg.llm.layers == 1 and model.cfg.data.image_size == 32
    with pytest.raises(ValueError, match="CLIP stage"):
        load_model(str(cache / "runs/nano/clip/checkpoints/last.ckpt"))


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a CPU-only promise")
def test_the_fit_command_trains_with_the_deterministic_kernels_too(cache, monkeypatch):
    monkeypatch.chdir(cache)
    torch.use_deterministic_algorithms(False)
    config = Path(__file__).resolve().parents[1] / "configs" / "nano" / "clip.yaml"
    assert cli.main(["fit", "--config", str(config), "--trainer.max_steps", "1", "--data.train_n", "16",
                     "--data.heldout_n", "4", "--data.batch_size", "8", "--data.progress", "false",
                     "--trainer.enable_progress_bar", "false", "--model.init_args.overrides",
                     '{"data.image_size": 32}', "--data.overrides", '{"data.image_size": 32}']) == 0
    assert torch.are_deterministic_algorithms_enabled()


def test_fit_command_rejects_bad_input(cache, capsys):
    configs = Path(__file__).resolve().parents[1] / "configs" / "nano"
    bad = shutil.copy(configs / "voco.yaml", cache / "bad.yaml")
    Path(bad).write_text(Path(bad).read_text().replace("mask: voco", "mask: sideways"))
    for argv in (["fit", "--config", str(cache / "missing.yaml")],
                 ["fit", "--config", str(bad)],
                 ["fit", "--config", str(configs / "voco.yaml"), "--trainer.bogus", "1"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vocolab: error:"), err


def test_a_run_builds_its_tokenizer_once(cache, monkeypatch):
    """The recipe hands the data module's tokenizer down to every stage's module."""
    import vocolab.data.tokenizer as tokenizer
    from vocolab.training.recipe import run_recipe

    builds = []
    real = tokenizer.words
    monkeypatch.setattr(tokenizer, "words", lambda cfg: builds.append(1) or real(cfg))
    cfg = preset("nano", **TINY, **{"train.clip_steps": 1, "train.clip_batch_size": 8, "train.pretrain_steps": 1,
                                    "train.instruct_steps": 1, "train.voco_steps": 1})
    run_recipe(cfg, cache / "runs", data=VoCoDataModule(cfg, train_n=16, heldout_n=4, turns=True, progress=False),
               progress=False)
    assert len(builds) == 1
    VLMModule(cfg)  # a module started on its own (e.g. from a YAML) builds one itself: the count can move
    assert len(builds) == 2


@pytest.mark.parametrize("stage, steps", [("clip", "clip_steps"), ("pretrain", "pretrain_steps"),
                                          ("upper", "instruct_steps"), ("voco", "voco_steps"),
                                          ("distill", "voco_steps")])
def test_stage_yaml_files_train_as_many_steps_as_the_preset(stage, steps):
    """The step counts live in the presets; the LightningCLI files must agree with them."""
    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "nano" / f"{stage}.yaml"
    spec = yaml.safe_load(path.read_text())
    assert spec["trainer"]["max_steps"] == getattr(preset("nano").train, steps)
    assert spec["trainer"]["gradient_clip_val"] == preset("nano").train.grad_clip
    if stage == "clip":
        assert spec["data"]["batch_size"] == preset("nano").train.clip_batch_size


def test_learning_rate_warms_up_then_decays_to_the_floor():
    """transformers' cosine-with-warm-up schedule: no step at lr 0, the peak after the
    warm-up, `LR_FLOOR` of the peak at the last step."""
    from vocolab.training.modules import LR_FLOOR

    cfg = preset("nano", **TINY)  # warm-up 20% of the steps
    module = VLMModule(cfg, steps=20)
    optim = module.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = cfg.train.lr
    assert lrs[0] == pytest.approx(peak / 4) and min(lrs) > 0
    assert max(lrs) == pytest.approx(peak) and lrs.index(max(lrs)) == 3
    assert lrs[-1] == pytest.approx(LR_FLOOR * peak)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))  # monotone decay after the warm-up


def test_the_patch_positions_can_learn_faster_on_the_same_schedule():
    """`train.positions_lr_scale` gives the per-patch image positions their own group at a
    multiple of the lr; the schedule scales both groups alike."""
    cfg = preset("nano", **TINY, **{"train.positions_lr_scale": 10.0})
    module = VLMModule(cfg, steps=20)
    optim = module.configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    rest, where = opt.param_groups
    assert where["params"] == [module.model.projector.positions]
    assert not any(p is module.model.projector.positions for p in rest["params"])
    for _ in range(7):
        assert where["lr"] == pytest.approx(10 * rest["lr"])
        opt.step()
        sched.step()
    assert len(VLMModule(preset("nano", **TINY, **{"llm.image_positions": False}), steps=20)
               .configure_optimizers()["optimizer"].param_groups) == 1
    with pytest.raises(ValueError, match="positions_lr_scale"):
        preset("nano", **{"train.positions_lr_scale": 0.0})


def test_frame_embeddings_train_on_clips_and_stay_frozen_on_images(cache):
    """An image stage freezes `frame_positions` and `frame_deltas` before the optimiser and DDP see
    them: a zero gradient would still enter the clipped gradient norm and move the run by rounding."""
    from vocolab.training.mod import MoDModule

    cfg = preset("nano", **TINY)
    for kind, make, frames_learn in (("scenes", VLMModule, False), ("clips", VLMModule, True),
                                     ("clips", MoDModule, True)):  # MoD wraps the VoCoVLM that holds them
        data = VoCoDataModule(cfg, kind=kind, train_n=8, heldout_n=4, turns=True, progress=False)
        module = make(cfg, steps=2, **({"layers": [0]} if make is MoDModule else {}))
        trainer = make_trainer(cfg, cache / kind / make.__name__, "run", 2, progress=False, limit_val_batches=0)
        vlm = getattr(module.model, "vlm", module.model)
        start = {frames: frames.detach().clone() for frames in (vlm.frame_positions, vlm.frame_deltas.weight)}
        trainer.fit(module, datamodule=data)
        for frames, before in start.items():
            in_optimiser = any(p is frames for g in trainer.optimizers[0].param_groups for p in g["params"])
            assert frames.requires_grad is frames_learn and in_optimiser is frames_learn
            assert (not torch.equal(frames.detach(), before)) is frames_learn


@pytest.mark.parametrize("distilled", [False, True])
def test_ema_decay_ends_training_on_the_moving_average_of_the_weights(cache, distilled):
    """`train.ema_decay`: the weights a stage ends with are the exponential moving average of
    those after each optimiser step (the first step's taken whole), not the last step's; a
    distilled module (its teacher outside the parameters, the teacher's answers kept) too."""
    from lightning.pytorch.callbacks import Callback

    from vocolab.training.distill import DistillModule

    decay = 0.5
    cfg = preset("nano", **TINY, **{"train.ema_decay": decay, "train.teacher_cache": distilled})
    data = VoCoDataModule(cfg, train_n=16, heldout_n=8, turns=True, progress=False)
    torch.manual_seed(0)
    if distilled:
        module = DistillModule(cfg, objective="logits", steps=4)
        teacher = VLMModule(cfg).model
        teacher.vision.load_state_dict(module.model.vision.state_dict())  # both read the student's CLIP features
        module.set_teacher(teacher.eval())
    else:
        module = VLMModule(cfg, mask="voco", steps=4)
    seen = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.append({k: v.detach().clone() for k, v in pl_module.model.named_parameters()})

    make_trainer(cfg, cache, "run", 4, progress=False, limit_val_batches=0, callbacks=[Record()]).fit(module, data)
    assert len(seen) == 4
    expected = dict(seen[0])
    for step in seen[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * step[k] for k in expected}
    final = dict(module.model.named_parameters())
    moved = [k for k in expected if not torch.equal(seen[-1][k], seen[-2][k])]
    assert moved  # the last step changed weights, and the module does not hold them
    for k in expected:
        torch.testing.assert_close(final[k].detach(), expected[k], atol=1e-6, rtol=0)
    assert any(not torch.allclose(final[k].detach(), seen[-1][k]) for k in moved)

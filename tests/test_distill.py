"""The distill stage: the pure losses, DistillModule's objectives and teacher handling,
the fit command with configs/nano/distill.yaml, and attention_maps. Tiny configs only."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import data_cache
from tiny import SPECIAL, VOCAB, tiny_cfg

from vocolab import cli
from vocolab.core.layout import build_layout
from vocolab.data.batching import make_batch
from vocolab.data.module import VoCoDataModule
from vocolab.evaluation.attention import attention_maps
from vocolab.models.vlm import VoCoVLM
from vocolab.training.distill import OBJECTIVES, DistillModule, answer_kl, text_hidden_mse, text_positions
from vocolab.training.loading import load_model
from vocolab.training.modules import VLMModule
from vocolab.training.trainer import make_trainer

OVERRIDES = {"train.batch_size": 4, "train.warmup_frac": 0.2}
CFG = tiny_cfg(**OVERRIDES)  # 16 px scenes, V = 16 patches, K = 1, 2 LLM layers


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with data_cache(tmp_path_factory) as root:
        yield root


def datamodule() -> VoCoDataModule:
    data = VoCoDataModule(CFG, train_n=8, heldout_n=4, turns=True, progress=False)
    data.setup()
    return data


@pytest.fixture(scope="module")
def batch(cache):
    data = datamodule()  # its own module: a fit attaching features elsewhere cannot change this batch
    return data.collate(data.splits["train"], [(i, -1) for i in range(4)])  # 4 scenes, all questions


def upper(seed=1) -> VoCoVLM:
    """A stand-in for the causal upper bound (untrained: only its role matters here)."""
    torch.manual_seed(seed)
    return VLMModule(CFG, mask="causal").model.eval()


def student_of(teacher: VoCoVLM, objective: str, **kwargs) -> DistillModule:
    """The recipe: the student starts from the upper bound's weights, the teacher stays frozen."""
    module = DistillModule(CFG, objective=objective, **kwargs)
    module.model.load_state_dict(teacher.state_dict())
    return module.set_teacher(teacher)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_upper(path: Path, teacher: VoCoVLM, cfg=CFG) -> Path:
    """A Lightning-format `VLMModule` checkpoint, as the upper stage writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in teacher.state_dict().items()},
                "hyper_parameters": {"cfg": cfg.to_dict(), "mask": "causal", "stage": "upper"}}, path)
    return path


# -- pure losses ------------------------------------------------------------------------------


def test_answer_kl_is_zero_for_equal_logits_and_counts_only_answer_positions():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 6, 10, generator=g), torch.randn(2, 6, 10, generator=g)
    labels = torch.full((2, 6), -100)
    labels[0, 3:5], labels[1, 5] = torch.tensor([1, 2]), 3  # predicted at (0, 2), (0, 3), (1, 4)
    predicts = torch.zeros(2, 6, dtype=torch.bool)
    predicts[0, 2:4] = predicts[1, 4] = True

    assert answer_kl(s, s.clone(), labels, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    kl = answer_kl(s, t, labels, 2.0)
    assert kl.item() > 0

    s2, t2 = s.clone(), t.clone()
    s2[~predicts], t2[~predicts] = 50 * torch.randn(int((~predicts).sum()), 10, generator=g), 0.0
    assert torch.allclose(answer_kl(s2, t2, labels, 2.0), kl)  # elsewhere: no effect
    s2[0, 3] += 5 * torch.randn(10, generator=g)
    assert not torch.allclose(answer_kl(s2, t2, labels, 2.0), kl)  # an answer position counts

    # the formula: T^2 * mean over scored positions of KL(softmax(t/T) || softmax(s/T))
    temp = 3.0
    pt, ps = (t[predicts] / temp).log_softmax(-1), (s[predicts] / temp).log_softmax(-1)
    expected = temp**2 * (pt.exp() * (pt - ps)).sum(-1).mean()
    assert torch.allclose(answer_kl(s, t, labels, temp), expected, atol=1e-6)

    s.requires_grad_(True)
    answer_kl(s, t, labels, 2.0).backward()
    assert s.grad[~predicts].abs().sum() == 0 and s.grad[predicts].abs().sum() > 0
    assert answer_kl(s, t, torch.full((2, 6), -100), 2.0).item() == 0.0  # nothing scored
    with pytest.raises(ValueError):
        answer_kl(s, t[:, :5], labels, 2.0)
    with pytest.raises(ValueError):
        answer_kl(s, t, labels, 0.0)


def test_text_hidden_mse_compares_text_positions_of_the_chosen_layers():
    layouts = [build_layout(3, 2, image_tokens=4, voco_tokens=1),  # text 6..10
               build_layout(2, 1, image_tokens=4, voco_tokens=1)]  # text 6..8, padded to 12
    mask = text_positions(layouts, 12)
    assert mask.sum().item() == 8 and mask[0, 6:11].all() and not mask[1, 9:].any() and not mask[:, :6].any()
    g = torch.Generator().manual_seed(0)
    student = tuple(torch.randn(2, 12, 8, generator=g) for _ in range(3))  # embeddings + 2 layers
    assert text_hidden_mse(student, tuple(h.clone() for h in student), layouts).item() == 0.0

    teacher = [h.clone() for h in student]
    teacher[0] = teacher[0] + 1.0  # the embeddings are not a layer's output
    for h in teacher[1:]:
        h[:, :6] += 3.0  # BOS, image, VoCo
        h[1, 9:] -= 7.0  # padding
    assert text_hidden_mse(student, teacher, layouts).item() == 0.0

    teacher[2][1, 7, 0] += 4.0  # layer 1, one text position, one of 8 dims
    one = 16.0 / 8 / 8  # d^2 / dims / text positions
    assert text_hidden_mse(student, teacher, layouts, layers=[1]).item() == pytest.approx(one)
    assert text_hidden_mse(student, teacher, layouts, layers=[-1]).item() == pytest.approx(one)
    assert text_hidden_mse(student, teacher, layouts, layers=[0]).item() == 0.0
    assert text_hidden_mse(student, teacher, layouts).item() == pytest.approx(one / 2)  # all layers
    with pytest.raises(ValueError, match="out of range"):
        text_hidden_mse(student, teacher, layouts, layers=[2])
    with pytest.raises(ValueError):
        text_hidden_mse(student, teacher[:2], layouts)


# -- the module -------------------------------------------------------------------------------


def test_implicit_is_exactly_the_voco_vlm_module(batch):
    torch.manual_seed(0)
    ref = VLMModule(CFG, mask="voco")
    torch.manual_seed(0)
    module = DistillModule(CFG)  # objective "implicit", no teacher needed
    assert module.mask == "voco" and module.objective == "implicit"
    losses = module.distill_losses(batch)
    assert set(losses) == {"ce", "loss"}
    assert torch.equal(losses["loss"], ref(batch).loss) and torch.equal(losses["ce"], losses["loss"])
    assert module.state_dict().keys() == ref.state_dict().keys()


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_each_objective_trains_and_leaves_the_teacher_alone(batch, objective):
    teacher = upper()
    before = snapshot(teacher)
    module = student_of(teacher, objective, hidden_weight=0.5)
    assert module.teacher is teacher and not teacher.training
    teacher_params = {id(p) for p in teacher.parameters()}
    assert not teacher_params & {id(p) for p in module.parameters()}
    assert module.state_dict().keys() == {f"model.{k}" for k in teacher.state_dict()}

    expected = {"ce", "loss"} | ({"kl"} if "logits" in objective else set()) | (
        {"hidden"} if "attention" in objective else set())
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    torch.manual_seed(0)
    history = []
    for _ in range(6):
        losses = module.distill_losses(batch)
        assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
        total = losses["ce"] + module.kl_weight * losses.get("kl", 0) + 0.5 * losses.get("hidden", 0)
        assert torch.allclose(losses["loss"], total)
        if objective != "implicit":  # the student starts as the teacher, yet the masks differ
            assert all(losses[k].item() > 0 for k in expected - {"ce", "loss"})
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(losses["loss"].item())
    assert history[-1] < history[0], history
    assert all(p.grad is None for p in teacher.parameters())
    after = snapshot(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(before[k], v) for k, v in snapshot(module.model).items())  # the student did move


def test_video_student_against_a_causal_teacher():
    data = VoCoDataModule(CFG, train_n=8, heldout_n=4, progress=False)  # tokenizer only, no data loaded
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (2, 3, 16, 16, 3), dtype=np.uint8)  # 2 clips of 3 frames
    clip_batch = make_batch(data.tokenizer, data.ids, ["what color is the circle?"] * 2, ["red", "blue"], clips,
                            image_tokens=16, voco_tokens=1)
    assert len(clip_batch.layouts[0].frames) == 3
    module = student_of(upper(), "logits+attention", mask="video")
    losses = module.distill_losses(clip_batch)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["kl"] > 0 and losses["hidden"] > 0


def test_fit_from_checkpoints_logs_every_term_and_saves_only_the_student(cache, tmp_path):
    teacher = upper()
    path = save_upper(tmp_path / "upper.ckpt", teacher)
    module = DistillModule(CFG, objective="logits+attention", teacher_from=str(path), init_from=str(path), steps=3)
    assert module.teacher is None  # loaded when fitting starts
    trainer = make_trainer(CFG, tmp_path, "distill", 3, progress=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule())

    loaded = module.teacher
    assert loaded is not None and not loaded.training
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in loaded.state_dict().items())  # unchanged
    with open(tmp_path / "distill" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"train/ce", "train/kl", "train/hidden", "train/loss"} <= set(rows[0])
    assert all(np.isfinite(float(r["train/loss"])) for r in rows if r["train/loss"])

    ckpt = tmp_path / "distill" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["state_dict"].keys() == module.state_dict().keys()
    assert saved["hyper_parameters"]["objective"] == "logits+attention"
    assert saved["hyper_parameters"]["mask"] == "voco"
    reloaded = load_model(str(ckpt))  # a distilled checkpoint loads like any VoCo model
    assert all(torch.equal(v, module.model.state_dict()[k]) for k, v in reloaded.state_dict().items())
    assert any(not torch.equal(v, teacher.state_dict()[k]) for k, v in reloaded.state_dict().items())


def test_fit_command_runs_the_distill_yaml(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny = {"data.image_size": 16, "data.patch_size": 4, "data.grid": 2, "data.max_objects": 4,
            "llm.hidden_size": 32, "llm.layers": 2, "llm.heads": 2, "llm.kv_heads": 2,
            "llm.intermediate_size": 64, "llm.max_positions": 128, "vision.hidden_size": 32,
            "vision.heads": 2, "vision.intermediate_size": 64, "vision.text_hidden_size": 32,
            "vision.projection_dim": 16}
    assert tiny_cfg() == tiny_cfg(**tiny)  # the same model as tests/tiny.py builds
    save_upper(tmp_path / "runs/nano/upper/checkpoints/last.ckpt", upper(), tiny_cfg())
    config = Path(__file__).resolve().parents[1] / "configs" / "nano" / "distill.yaml"
    argv = ["fit", "--config", str(config), "--trainer.max_steps", "2", "--data.train_n", "8",
            "--data.heldout_n", "4", "--data.batch_size", "4", "--data.progress", "false",
            "--trainer.enable_progress_bar", "false", "--model.init_args.objective", "logits+attention",
            "--model.init_args.overrides", json.dumps(tiny), "--data.overrides", json.dumps(tiny)]
    assert cli.main(argv) == 0
    model = load_model(str(tmp_path / "runs/nano/distill/checkpoints/last.ckpt"))
    assert model.cfg.llm.layers == 2 and model.cfg.data.image_size == 16


def test_the_kl_temperature_comes_from_the_config_unless_given(batch):
    """`train.distill_temperature` (default 2) sets the `logits` term's T; the module's own argument wins; the
    KL the module computes is `answer_kl` at that T."""
    teacher = upper()
    assert DistillModule(CFG, objective="logits").temperature == 2.0
    cold = DistillModule(CFG.override(**{"train.distill_temperature": 1.0}), objective="logits").set_teacher(teacher)
    assert cold.temperature == 1.0 and cold.hparams["temperature"] == 1.0
    assert DistillModule(CFG.override(**{"train.distill_temperature": 1.0}), temperature=4.0).temperature == 4.0
    losses = cold.distill_losses(batch)
    with torch.no_grad():
        student = cold.model(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                             mask="voco").logits
        ref = teacher(batch.input_ids, batch.layouts, pixels=batch.pixels, features=batch.features,
                      mask="causal").logits
    for t in (1.0, 2.0):
        assert torch.allclose(answer_kl(student, ref, batch.labels, t), losses["kl"]) == (t == 1.0)
    with pytest.raises(ValueError, match="train.distill_temperature"):
        CFG.override(**{"train.distill_temperature": 0.0})


def test_bad_objective_mask_or_teacher_raise(cache, batch, tmp_path):
    with pytest.raises(ValueError, match="logits\\+attention"):
        DistillModule(CFG, objective="feelings")
    with pytest.raises(ValueError, match="mask"):
        DistillModule(CFG, mask="causal")
    with pytest.raises(ValueError, match="hidden_layers"):
        DistillModule(CFG, objective="attention", hidden_layers=[5])
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillModule(CFG, objective="logits").distill_losses(batch)
    with pytest.raises(ValueError, match="vocabulary"):
        DistillModule(CFG, objective="logits").set_teacher(VoCoVLM(tiny_cfg(), SPECIAL, VOCAB))
    with pytest.raises(ValueError, match="depth"):
        DistillModule(CFG, objective="attention").set_teacher(
            VLMModule(tiny_cfg(**OVERRIDES, **{"llm.layers": 1}), mask="causal").model)
    module = DistillModule(CFG, objective="logits")
    with pytest.raises(ValueError, match="separate"):
        module.set_teacher(module.model)

    def fit(module):
        trainer = make_trainer(CFG, tmp_path, "bad", 1, progress=False, checkpoint=False, limit_val_batches=0)
        trainer.fit(module, datamodule=datamodule())

    with pytest.raises(ValueError, match="needs a teacher"):
        fit(DistillModule(CFG, objective="logits", steps=1))  # refused when fitting starts
    other = upper(seed=2)  # another CLIP tower, but the student's cached features would be shared
    with pytest.raises(ValueError, match="vision tower"):
        fit(student_of(upper(), "logits", steps=1).set_teacher(other))
    with pytest.raises(FileNotFoundError):
        fit(DistillModule(CFG, objective="logits", teacher_from=str(tmp_path / "missing.ckpt"), steps=1))


# -- attention maps ---------------------------------------------------------------------------


def test_attention_maps_shapes_and_what_the_text_can_see(batch):
    vlm = upper()
    vlm.train()
    causal = attention_maps(vlm, batch, "causal")
    assert vlm.attn_implementation == "sdpa" and vlm.cfg.llm.attn_implementation == "sdpa" and vlm.training
    voco = attention_maps(vlm, {"input_ids": batch.input_ids, "layouts": batch.layouts, "pixels": batch.pixels})
    longest = max(l.text.length for l in batch.layouts)
    n, b, h = CFG.llm.layers, 4, CFG.llm.heads
    for maps in (causal, voco):
        assert maps["text_to_image"].shape == (n, b, h, longest, 1, 16)
        assert maps["text_to_voco"].shape == (n, b, h, longest, 1, 1)
        assert maps["voco_to_image"].shape == (n, b, h, 1, 1, 16)
        assert maps["grid"] == (4, 4) and maps["voco_to_image"].unflatten(-1, maps["grid"]).shape[-2:] == (4, 4)
        assert maps["text_mask"].sum(1).tolist() == [l.text.length for l in batch.layouts]
        assert (maps["text_to_image"][:, 1, :, batch.layouts[1].text.length:] == 0).all()  # padded rows
        v2i = maps["voco_to_image"]
        assert (v2i > 0).all() and (v2i.sum(-1) < 1).all()  # the VoCo token also sees BOS and itself
    assert causal["keys"] == "image" and causal["text"] is causal["text_to_image"]
    assert voco["keys"] == "voco" and voco["text"] is voco["text_to_voco"]
    real = causal["text_mask"][None, :, None, :].expand(n, b, h, longest)
    assert (causal["text_to_image"].sum((-2, -1))[real] > 0).all()
    assert (voco["text_to_image"] == 0).all()  # the mask hides the image from the text
    assert (voco["text_to_voco"].squeeze(-1).squeeze(-1)[real] > 0).all()
    # the VoCo token's own attention does not depend on the text's mask
    assert torch.allclose(causal["voco_to_image"], voco["voco_to_image"], atol=1e-6)
    with pytest.raises(ValueError, match="image"):
        text_only = build_layout(2, 2)
        attention_maps(vlm, {"input_ids": torch.ones(1, 5, dtype=torch.long), "layouts": [text_only]})

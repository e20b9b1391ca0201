"""One rule for where tensors go: callers hand inputs over wherever they were made (the
host, usually) and the model moves them to its own device (`VoCoVLM.embed`, `prepare`,
`forward`). The test needs no GPU: the model is moved to PyTorch's `meta` device, which
computes shapes only, and every input stays on the CPU; an input the model forgot to
move would meet a meta weight and fail."""

import torch
from tiny import SPECIAL, V, batch, tiny_vlm

from vocolab.core.layout import assemble, labels_from_layouts
from vocolab.data.batching import Batch
from vocolab.training.distill import DistillModule
from vocolab.training.modules import VLMModule
from vocolab.zoo.mod import MoDVLM

SPECS = [(3, 2, 1), (4, 1, 2), (2, 2, 0)]  # an image, a two-frame clip, a text-only sample


def _inputs(voco=1):
    ids, layouts, pixels = batch(SPECS, voco=voco)
    return ids, layouts, pixels, labels_from_layouts(ids, layouts)


def test_the_vlm_moves_ids_pixels_labels_mask_and_positions_itself():
    vlm = tiny_vlm().to("meta")
    ids, layouts, pixels, labels = _inputs()
    for mask in ("causal", "voco", "video"):
        out = vlm(ids, layouts, pixels=pixels, mask=mask, labels=labels)
        assert out.logits.device.type == "meta" and out.loss.device.type == "meta"
    assert vlm.embed(ids, pixels=pixels, layouts=layouts).device.type == "meta"


def test_host_side_calls_of_the_studies_and_the_quickstart_reach_a_model_elsewhere():
    """The call sites that build CPU tensors: the mask check's batch, the MoD study's
    embedding of one clip, the training modules' batches."""
    vlm = tiny_vlm().to("meta")
    ids, layout = assemble([7, 8, 9], [], SPECIAL, frames=2, image_tokens=V, voco_tokens=1, add_eos=False)
    features = torch.randn(1, 2, V, vlm.cfg.vision.hidden_size)
    assert vlm.embed(torch.tensor([ids]), features=features).device.type == "meta"
    mod = MoDVLM(vlm, r=0.5)
    ids, layouts, pixels, labels = _inputs(voco=0)
    assert mod(ids, layouts, pixels=pixels, labels=labels).loss.device.type == "meta"
    ids, layouts, pixels, labels = _inputs()
    module = VLMModule(vlm.cfg, mask="voco")
    module.model = vlm
    assert module(Batch(ids, layouts, pixels, labels)).loss.device.type == "meta"


def test_the_distilled_stage_moves_its_batch_for_student_and_teacher():
    student = DistillModule(tiny_vlm().cfg, objective="logits+attention")
    student.model = tiny_vlm(seed=1).to("meta")
    student.set_teacher(tiny_vlm(seed=2).to("meta"))
    ids, layouts, pixels, labels = _inputs()
    losses = student.distill_losses(Batch(ids, layouts, pixels, labels))
    assert {value.device.type for value in losses.values()} == {"meta"}


def test_evaluation_answers_on_the_runtime_device(monkeypatch):
    """`predict` moves a model handed over on the CPU (as `Trainer.fit` and `load_model` return
    it) to the runtime's device: on the H200 the validation checks and `vocolab eval` had
    answered on its CPU. `meta` stands in for the GPU; generation is replaced by a probe."""
    import numpy as np

    from vocolab.evaluation import heldout
    from vocolab.models.inputs import model_device

    seen = {}

    def probe(model, special, q_ids, *, features, **_):
        seen["model"], seen["features"] = model_device(model).type, features.device.type
        return [[] for _ in q_ids]

    class Tokenizer:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [7, 8]}

        def decode(self, tokens, skip_special_tokens=True):
            return ""

    monkeypatch.setattr(heldout, "runtime_device", lambda: torch.device("meta"))
    monkeypatch.setattr(heldout, "greedy_generate", probe)
    vlm = tiny_vlm()
    qs = heldout.Questions(np.array([0, 1]), ["q", "q"], ["a", "a"], ["color", "color"])
    heldout.predict(vlm, Tokenizer(), np.zeros((2, 16, 16, 3), np.uint8), qs, "causal", 1, progress=False)
    assert seen == {"model": "meta", "features": "meta"}

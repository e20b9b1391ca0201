"""Temporal tuning: clips train on cached per-frame CLIP features, a compressor compresses
each frame on its own, streaming answers equal one full `video`-mask decode, and the
study runs end to end on a tiny config, resumably. Tiny configs only."""

import json
import shutil

import numpy as np
import pytest
import torch
from data_helpers import data_cache
from test_sweep import tiny_overrides
from tiny import V, tiny_cfg

import vocolab.studies.temporal as temporal_mod
from vocolab import cli
from vocolab.data.clips import TEMPORAL_FAMILIES, Clip
from vocolab.data.module import VoCoDataModule
from vocolab.data.scenes import FAMILIES as SCENE_FAMILIES
from vocolab.data.storage import iter_rows
from vocolab.data.tokenizer import build_tokenizer, special_ids
from vocolab.evaluation.clips import predict_frames
from vocolab.evaluation.heldout import Questions
from vocolab.inference.compression import compress_video
from vocolab.inference.generate import greedy_generate
from vocolab.models.projector import sincos_frames
from vocolab.models.vlm import VoCoVLM
from vocolab.studies.common import QUICK, runs_dir, study_config
from vocolab.studies.temporal import CELLS, CellSettings, TemporalStudy, frame_costs, run_temporal_study

FRAMES, K = 3, 2
STUDY = tiny_overrides() | {"data.frames": FRAMES, "data.train_clips": 16, "data.heldout_clips": 4}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with data_cache(tmp_path_factory) as root:
        yield root


def model_for(cfg, seed=0, untie=False) -> VoCoVLM:
    torch.manual_seed(seed)
    tok = build_tokenizer(cfg.data)
    model = VoCoVLM(cfg, special_ids(tok), len(tok)).eval()
    if untie:  # a random tied model repeats its input token; an untied head wanders over the vocabulary
        g = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(cfg.llm.hidden_size, len(tok))
        with torch.no_grad():
            head.weight.copy_(0.3 * torch.randn(len(tok), cfg.llm.hidden_size, generator=g))
            head.bias.zero_()
            # a generated image-slot id would be read as one more image token by the reference decoder
            head.bias[[model.special.image, model.special.voco]] = -10.0
        model.llm.lm_head = head
    return model


# -- clips: cached features, compressors per frame ----------------------------------------------


def test_clip_features_are_cached_per_frame_and_train_like_pixels(cache):
    cfg = tiny_cfg(**{"data.frames": FRAMES, "voco.tokens": K})
    data = VoCoDataModule(cfg, kind="clips", train_n=4, heldout_n=2, progress=False)
    data.setup()
    model = model_for(cfg)
    split = data.splits["train"]
    pairs = [(i, -1) for i in range(4)]
    with_pixels = data.collate(split, pairs)
    data.attach_features(model.encode_images)
    assert split.features.shape == (4, FRAMES, V, cfg.vision.hidden_size)
    with torch.no_grad():
        torch.testing.assert_close(split.features[1, 2],
                                   model.encode_images(torch.from_numpy(split.images[1, 2])), atol=1e-6, rtol=0)
    batch = data.collate(split, pairs)
    assert batch.pixels is None and batch.features.shape[:2] == (4, FRAMES)
    with torch.no_grad():
        a = model(batch.input_ids, batch.layouts, features=batch.features, mask="video", labels=batch.labels)
        b = model(with_pixels.input_ids, with_pixels.layouts, pixels=with_pixels.pixels, mask="video",
                  labels=with_pixels.labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=0)
    assert abs(a.loss.item() - b.loss.item()) < 1e-5


def test_a_compressor_compresses_each_frame_on_its_own(cache):
    cfg = tiny_cfg(**{"data.frames": FRAMES, "compress.method": "avgpool", "compress.tokens": K,
                      "voco.tokens": 0})
    data = VoCoDataModule(cfg, kind="clips", train_n=4, heldout_n=2, progress=False)
    data.setup()
    data.set_task("qa", voco_tokens=0, image_slots=cfg.image_slots)
    model = model_for(cfg, seed=1)
    data.attach_features(model.encode_images)
    batch = data.collate(data.splits["train"], [(0, -1), (1, -1)])
    slots = batch.input_ids == model.special.image
    assert slots.sum(1).tolist() == [FRAMES * K] * 2  # K tokens per frame in the sequence
    with torch.no_grad():
        emb = model.embed(batch.input_ids, features=batch.features)
        for b in range(2):
            per_frame = torch.cat([model.projector(model.compressor(batch.features[b, t : t + 1])[0])
                                   + (model.frame_positions[t - 1] if t else 0) for t in range(FRAMES)])
            torch.testing.assert_close(emb[b][slots[b]], per_frame, atol=1e-5, rtol=0)
        changed = batch.features.clone()
        changed[:, 0] += 1.0  # frame 0 only
        moved = (model.embed(batch.input_ids, features=changed) - emb).abs().sum(-1)[0][slots[0]]
    assert (moved[:K] > 0).all() and (moved[K:] == 0).all()


# -- streaming answers == one full video-mask decode ---------------------------------------------


def test_streaming_answers_equal_the_full_video_decode():
    cfg = tiny_cfg(**{"data.frames": FRAMES, "voco.tokens": K, "llm.layers": 3})
    model = model_for(cfg, seed=3, untie=True)
    tok = build_tokenizer(cfg.data)
    g = torch.Generator().manual_seed(4)
    clips = torch.randint(0, 256, (3, FRAMES, 16, 16, 3), generator=g, dtype=torch.uint8).numpy()
    questions = ["which way does the red circle move ?", "which shape changes color ?",
                 "which shape appears first ?", "in how many frames is the blue square visible ?",
                 "which way does the green cross move ?", "which shape appears last ?"]
    qs = Questions(np.array([2, 0, 1, 2, 0, 2]), questions, ["left"] * 6, ["direction"] * 6)
    q_ids = [tok(q, add_special_tokens=False)["input_ids"] for q in questions]
    # eos_id=-1: every answer runs all 4 steps, so positions after the first token are checked too
    preds, logits = predict_frames(model, tok, clips, qs, "video", K, batch_clips=2, max_new_tokens=4,
                                   eos_id=-1, return_logits=True, progress=False)
    assert sorted(preds) == [1, 2, 3]
    for t in (1, FRAMES):
        ref, ref_logits = greedy_generate(model, model.special, q_ids, clips[qs.item, :t], mode="video",
                                          max_new_tokens=4, voco_tokens=K, eos_id=-1, return_logits=True)
        assert preds[t] == [tok.decode(r, skip_special_tokens=True) for r in ref]
        for got, want in zip(logits[t], ref_logits):
            assert got.shape == want.shape == (4, len(tok))
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    # fewer frames are a different input: the answers' logits must move
    assert max((a - b).abs().max().item() for a, b in zip(logits[1], logits[FRAMES])) > 1e-3
    # the full-token path answers from the first t frames the same way
    causal, causal_logits = predict_frames(model, tok, clips, qs, "causal", K, frames=[2], max_new_tokens=2,
                                           eos_id=-1, return_logits=True, progress=False)
    _, ref_logits = greedy_generate(model, model.special, q_ids, clips[qs.item, :2], mode="causal",
                                    max_new_tokens=2, voco_tokens=K, eos_id=-1, return_logits=True)
    for got, want in zip(causal_logits[2], ref_logits):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="outside"):
        predict_frames(model, tok, clips, qs, "video", K, frames=[FRAMES + 1], progress=False)


def test_frame_costs_match_a_real_cache():
    cfg = tiny_cfg(**{"data.frames": FRAMES, "voco.tokens": K})
    model = model_for(cfg)
    clips = torch.zeros(1, FRAMES, 16, 16, 3, dtype=torch.uint8)
    cost = frame_costs(cfg, K, FRAMES)
    assert compress_video(model, clips, K).nbytes == cost["cache_bytes_clip"] == FRAMES * cost["cache_bytes_per_frame"]
    per_token = cost["cache_bytes_per_frame"] // K
    assert per_token == cfg.llm.layers * 2 * cfg.llm.hidden_size * 4  # K and V of every layer, fp32
    assert frame_costs(cfg, V + 1, FRAMES)["cache_bytes_per_frame"] == (V + 1) * per_token


# -- the study -----------------------------------------------------------------------------------


def study(out, **kwargs):
    """The tiny study; `CellSettings` fields among `kwargs` go into its settings."""
    own = {name: kwargs.pop(name) for name in list(kwargs) if name in CellSettings.__dataclass_fields__}
    return run_temporal_study("nano", out, k=K, steps=2, limit=12, overrides=STUDY, progress=False,
                              settings=CellSettings(**own), **kwargs)


@pytest.fixture(scope="module")
def finished(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("temporal")
    return out, study(out)


def test_the_study_runs_end_to_end(finished):
    out, body = finished
    by = {r["name"]: r for r in body["runs"]}
    assert "middle-frame" in CELLS and set(by) == set(CELLS) | {"blind", "best-single-frame"}
    assert body["eval"]["families"] == list(TEMPORAL_FAMILIES) and body["eval"]["frames"] == FRAMES
    assert body["eval"]["examples"] == 12 and body["temporal"]["failed"] == []
    assert body["provenance"]["command"] == "vocolab temporal" and body["provenance"]["preset"] == "nano"
    assert body["invocations"][-1]["cells_run"] == len(CELLS)  # this invocation's cost is on record
    assert (out / "invocations.json").exists()
    for r in body["runs"]:
        assert 0.0 <= r["accuracy"] <= 1.0
        assert set(r["per_family"]) <= set(TEMPORAL_FAMILIES) and r["per_family"], r["name"]
        if r["name"] not in ("video-upper", "blind"):
            assert "retention" in r, r["name"]
    for name in set(CELLS) - {"middle-frame"}:  # every clip model answers after each of the first t frames
        assert list(by[name]["accuracy_vs_frames"]) == [str(t) for t in range(1, FRAMES + 1)]
        assert by[name]["accuracy_vs_frames"][str(FRAMES)] == by[name]["accuracy"]
    bytes_ = {n: by[n]["cost"]["cache_bytes_per_frame"] for n in ("temporal", "avgpool", "video-upper")}
    assert bytes_["temporal"] == bytes_["avgpool"] < bytes_["video-upper"]
    assert by["video-upper"]["cost"]["cached_tokens_per_frame"] == V + 1  # V image tokens + its VoCo slot
    assert by["middle-frame"]["frame"] == FRAMES // 2 and by["voco-image"]["video_trained"] is False
    logs = runs_dir(study_config("nano", 0, STUDY, QUICK)) / "temporal"
    header = (logs / "voco-image" / "metrics.csv").read_text().splitlines()[0]
    assert "train/hidden" in header  # the image VoCo model is distilled like the recipe's voco stage
    assert "train/hidden" in (logs / "temporal" / "metrics.csv").read_text().splitlines()[0]  # and so the video one
    assert "train/hidden" not in (logs / "video-upper" / "metrics.csv").read_text().splitlines()[0]
    middle = by["middle-frame"]  # trained on clip QA like video-upper, but sees one frame
    assert middle["train_steps"] == 2 and "accuracy_vs_frames" not in middle
    assert middle["cost"]["cache_bytes_clip"] == middle["cost"]["cache_bytes_per_frame"] == \
        by["video-upper"]["cost"]["cache_bytes_per_frame"]
    seen = body["temporal"]["frame_perception"]  # the scene model on scenes and on clip frames
    assert seen["frame"] == FRAMES // 2
    assert seen["scenes"]["questions"] == seen["clip_frames"]["questions"] > 0
    for where in ("scenes", "clip_frames"):
        assert 0.0 <= seen[where]["accuracy"] <= 1.0 and set(seen[where]["per_family"]) <= set(SCENE_FAMILIES)
    example = body["temporal"]["example"]
    assert [s["cache_tokens"] for s in example["steps"]] == [K * t for t in range(1, FRAMES + 1)]
    for name in ("results.json", "table.md", "accuracy_per_family.png", "accuracy_vs_frames.png",
                 "streaming.png"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text())["runs"] == json.loads(json.dumps(body["runs"]))
    assert "| temporal | voco | 2 | video |" in (out / "table.md").read_text()
    assert "on the clips' middle frames" in (out / "table.md").read_text()


def test_frame_questions_describe_the_middle_frame(cache):
    """The perception check asks about the frame it shows: every answer is the symbolic
    middle frame's, which differs from the first frame's where objects enter, leave or
    change colour."""
    cfg = study_config("nano", 0, STUDY, QUICK)
    st = TemporalStudy.__new__(TemporalStudy)  # only what frame_questions reads
    st.cfg, st.sizes = cfg, {"heldout": 4}
    qs = st.frame_questions()
    clips = [Clip.from_json(r["objects"]) for r in iter_rows(cfg.data, "clips", "heldout", 4, render=False)]
    assert len(qs) == 4 * cfg.data.questions_per_scene and set(qs.item.tolist()) == {0, 1, 2, 3}
    differs = 0
    for i, q, a, fam in zip(qs.item, qs.questions, qs.answers, qs.families):
        assert fam in SCENE_FAMILIES
        if fam == "exist":  # "is there a <color> <shape> ?"
            color, shape = q.split()[3:5]
            present = [(o.color, o.shape) == (color, shape) for o in clips[i].frame_scene(FRAMES // 2).objects]
            first = [(o.color, o.shape) == (color, shape) for o in clips[i].frame_scene(0).objects]
            assert a == ("yes" if any(present) else "no"), q
            differs += any(present) != any(first)
    assert differs >= 1  # these clips do tell the middle frame from the first


def test_a_rerun_skips_cells_and_reuses_saved_models(finished, monkeypatch):
    out, body = finished

    def never(*args, **kwargs):
        raise AssertionError("nothing should be trained or evaluated again")

    with monkeypatch.context() as mp:
        mp.setattr(TemporalStudy, "run_cell", never)
        mp.setattr(TemporalStudy, "_fit", never)
        again = study(out)
    assert again["temporal"]["failed"] == []
    assert [(r["name"], r["accuracy"], r.get("per_family")) for r in again["runs"]] == \
        [(r["name"], r["accuracy"], r.get("per_family")) for r in body["runs"]]
    # a lost cell is evaluated again from the saved models (temporal and video-upper), not retrained
    for name in ("temporal", "lower"):
        (out / "cells" / f"{name}.json").unlink()
    monkeypatch.setattr(TemporalStudy, "_fit", never)
    third = study(out)
    assert third["temporal"]["failed"] == []
    assert (out / "cells" / "temporal.json").exists() and (out / "cells" / "lower.json").exists()
    old, new = ({r["name"]: r for r in b["runs"]} for b in (body, third))
    for name in ("temporal", "lower"):
        assert new[name]["accuracy_vs_frames"] == old[name]["accuracy_vs_frames"]
        assert new[name]["cell_key"] == old[name]["cell_key"]


def test_the_temporal_cell_is_keyed_by_its_teacher(finished, monkeypatch):
    """The temporal cell is distilled from video-upper: another video-upper is another temporal model."""
    cfg = study_config("nano", 0, STUDY, QUICK)
    state = TemporalStudy(cfg, runs_dir(cfg), k=K, steps=2, limit=12, progress=False)
    keys = {name: state.model_key(name) for name in ("temporal", "avgpool")}
    own = TemporalStudy.cell_cfg

    def other_teacher(self, name):
        return own(self, name).override(**{"train.lr": 3e-3}) if name == "video-upper" else own(self, name)

    monkeypatch.setattr(TemporalStudy, "cell_cfg", other_teacher)
    assert state.model_key("temporal") != keys["temporal"] and state.model_key("avgpool") == keys["avgpool"]


def test_the_temporal_cell_trains_its_own_steps_and_the_others_are_reused(finished, tmp_path, monkeypatch):
    """`temporal_steps` (`--temporal-steps`): only the temporal cell is keyed and trained anew, for
    that many steps; every other cell's model is the study's, read back."""
    out, body = finished
    shutil.copytree(out / "cells", tmp_path / "cells")
    fit, trained = TemporalStudy._fit, []

    def recording(self, name, *args, **kwargs):
        trained.append((name, self.steps_of(name)))
        return fit(self, name, *args, **kwargs)

    monkeypatch.setattr(TemporalStudy, "_fit", recording)
    saved = runs_dir(study_config("nano", 0, STUDY, QUICK)) / "temporal" / "models" / "temporal"
    shutil.copytree(saved, tmp_path / "saved")  # the study's 2-step model, which other tests read
    try:
        other = study(tmp_path, temporal_steps=1)
    finally:
        shutil.rmtree(saved)
        shutil.copytree(tmp_path / "saved", saved)
    assert trained == [("temporal", 1)] and other["temporal"]["failed"] == []
    assert other["temporal"]["temporal_steps"] == 1 and other["temporal"]["steps"] == 2
    old, new = ({r["name"]: r for r in b["runs"]} for b in (body, other))
    assert new["temporal"]["train_steps"] == 1 and new["temporal"]["cell_key"] != old["temporal"]["cell_key"]
    for name in set(CELLS) - {"temporal"}:
        assert new[name]["cell_key"] == old[name]["cell_key"] and new[name]["train_steps"] == old[name]["train_steps"]
    assert "2 training steps per model (1 for temporal)" in (tmp_path / "table.md").read_text()
    with pytest.raises(ValueError, match="temporal_steps"):
        study(tmp_path, temporal_steps=0)


def test_the_temporal_cell_distils_with_its_own_objective_and_the_others_are_reused(finished, tmp_path,
                                                                                    monkeypatch):
    """`temporal_objective` (`--temporal-objective`): only the temporal cell is keyed and trained anew,
    with that objective (its teacher and every other model read back); the recipe's own objective
    changes nothing."""
    out, body = finished
    shutil.copytree(out / "cells", tmp_path / "cells")
    fit, trained = TemporalStudy._fit, []

    def recording(self, name, *args, **kwargs):
        trained.append((name, self.cell_cfg(name).train.voco_objective))
        return fit(self, name, *args, **kwargs)

    monkeypatch.setattr(TemporalStudy, "_fit", recording)
    cfg = study_config("nano", 0, STUDY, QUICK)
    recipe = cfg.train.voco_objective
    other_objective = next(o for o in ("logits", "attention") if o != recipe)
    saved = runs_dir(cfg) / "temporal" / "models" / "temporal"
    shutil.copytree(saved, tmp_path / "saved")  # the study's model, which other tests read
    try:
        other = study(tmp_path, temporal_objective=other_objective)
    finally:
        shutil.rmtree(saved)
        shutil.copytree(tmp_path / "saved", saved)
    assert trained == [("temporal", other_objective)] and other["temporal"]["failed"] == []
    assert other["temporal"]["temporal_objective"] == other_objective
    old, new = ({r["name"]: r for r in b["runs"]} for b in (body, other))
    assert new["temporal"]["cell_key"] != old["temporal"]["cell_key"]
    for name in set(CELLS) - {"temporal"}:
        assert new[name]["cell_key"] == old[name]["cell_key"]
    assert f"2 training steps per model (2 for temporal with the {other_objective} objective)" in \
        (tmp_path / "table.md").read_text()
    state = TemporalStudy(cfg, runs_dir(cfg), k=K, steps=2, limit=12, progress=False)
    keys = {name: state.model_key(name) for name in CELLS if name != "lower"}
    state.settings = CellSettings(temporal_objective=recipe)
    assert {name: state.model_key(name) for name in keys} == keys
    with pytest.raises(ValueError, match="temporal_objective 'nope'"):
        study(tmp_path, temporal_objective="nope")


def test_the_temporal_cell_starts_from_video_upper_and_reads_more_questions_per_clip(finished, tmp_path,
                                                                                   monkeypatch):
    """`temporal_init` / `temporal_questions` / `temporal_batch` (`--temporal-init`, `--temporal-questions`,
    `--temporal-batch`): only the temporal cell is keyed and trained anew, from video-upper's weights, on the
    study's training clips asked more questions each, in its own batches (the held-out clips and questions
    unchanged); every other model is read back."""
    out, body = finished
    shutil.copytree(out / "cells", tmp_path / "cells")
    fit, trained = TemporalStudy._fit, []

    def recording(self, name, data, mask, init, *args, **kwargs):
        asked = [max(len(q) for q in d.splits["train"].questions) for d in (self.clips, data)]
        trained.append((name, init is self.model("video-upper"), *asked, len(data.splits["train"].images),
                        data.splits["heldout"].questions == self.clips.splits["heldout"].questions,
                        self.cell_cfg(name).train.batch_size, self.cell_cfg(name).llm.attn_implementation,
                        self.cell_cfg(name).train.distill_temperature))
        return fit(self, name, data, mask, init, *args, **kwargs)

    monkeypatch.setattr(TemporalStudy, "_fit", recording)
    saved = runs_dir(study_config("nano", 0, STUDY, QUICK)) / "temporal" / "models" / "temporal"
    shutil.copytree(saved, tmp_path / "saved")  # the study's model, which other tests read
    try:
        other = study(tmp_path, temporal_init="video-upper", temporal_questions=8, temporal_teacher_cache=True,
                      temporal_objective="logits", temporal_batch=4, temporal_attention="sdpa_frames",
                      temporal_temperature=1.0)
    finally:
        shutil.rmtree(saved)
        shutil.copytree(tmp_path / "saved", saved)
    [(name, from_upper, theirs, own, clips, same_heldout, batch, backend, temperature)] = trained
    assert name == "temporal" and from_upper and clips == 16 and same_heldout
    assert batch == 4 and backend == "sdpa_frames"  # its own batch (quick mode gives the clip models 8), backend
    assert temperature == 1.0  # and KL temperature (the others: 2)
    assert theirs <= 5 < own <= 8  # the study's clips ask up to 5 questions each; a clip may hold fewer
    assert other["temporal"]["failed"] == [] and other["eval"]["examples"] == body["eval"]["examples"]
    assert other["temporal"]["temporal_init"] == "video-upper" and other["temporal"]["temporal_questions"] == 8
    assert "temporal_merge" not in other["temporal"]  # recorded for a merged start only
    assert other["temporal"]["temporal_teacher_cache"] is True and body["temporal"]["temporal_teacher_cache"] is False
    assert other["temporal"]["temporal_batch"] == 4 and body["temporal"]["temporal_batch"] == 0
    assert other["temporal"]["temporal_attention"] == "sdpa_frames" and body["temporal"]["temporal_attention"] is None
    assert other["temporal"]["temporal_temperature"] == 1.0 and body["temporal"]["temporal_temperature"] is None
    old, new = ({r["name"]: r for r in b["runs"]} for b in (body, other))
    assert new["temporal"]["cell_key"] != old["temporal"]["cell_key"]
    for name in set(CELLS) - {"temporal"}:
        assert new[name]["cell_key"] == old[name]["cell_key"]
    assert ("(2 for temporal with the logits objective from video-upper, 8 questions per training clip, the "
            "teacher's answers kept per clip, batches of 4 clips, attention sdpa_frames, KL temperature 1)" in
            (tmp_path / "table.md").read_text())
    with pytest.raises(ValueError, match="temporal_init 'nope'"):
        study(tmp_path, temporal_init="nope")
    with pytest.raises(ValueError, match="temporal_questions must be >= 0"):
        study(tmp_path, temporal_questions=-1)
    with pytest.raises(ValueError, match="temporal_batch must be >= 0"):
        study(tmp_path, temporal_batch=-1)
    with pytest.raises(ValueError, match="temporal: temporal_attention: attention backend 'flash_attention_2'"):
        study(tmp_path, temporal_attention="flash_attention_2")
    with pytest.raises(ValueError, match="temporal_temperature must be > 0"):
        study(tmp_path, temporal_temperature=-1.0)


def test_the_temporal_cell_starts_from_the_merge_of_video_upper_and_the_image_voco_model(finished, tmp_path,
                                                                                        monkeypatch):
    """`temporal_init = "merged"` (`--temporal-init merged --temporal-merge S`): the temporal cell starts from
    video-upper + S x (voco-image - the scene model), is keyed by the share and trained anew; every other model
    is read back."""
    from vocolab.models.merging import task_arithmetic

    out, body = finished
    shutil.copytree(out / "cells", tmp_path / "cells")
    fit, starts = TemporalStudy._fit, []

    def recording(self, name, data, mask, init, *args, **kwargs):
        merge = task_arithmetic(self.model("video-upper"), self.model("voco-image"), self.upper, 0.25)
        starts.append((name, all(torch.equal(v, merge.state_dict()[k]) for k, v in init.state_dict().items())))
        return fit(self, name, data, mask, init, *args, **kwargs)

    monkeypatch.setattr(TemporalStudy, "_fit", recording)
    saved = runs_dir(study_config("nano", 0, STUDY, QUICK)) / "temporal" / "models" / "temporal"
    shutil.copytree(saved, tmp_path / "saved")  # the study's model, which other tests read
    try:
        other = study(tmp_path, temporal_init="merged", temporal_merge=0.25)
    finally:
        shutil.rmtree(saved)
        shutil.copytree(tmp_path / "saved", saved)
    assert starts == [("temporal", True)]
    assert other["temporal"]["temporal_init"] == "merged" and other["temporal"]["temporal_merge"] == 0.25
    old, new = ({r["name"]: r for r in b["runs"]} for b in (body, other))
    assert new["temporal"]["cell_key"] != old["temporal"]["cell_key"]
    assert all(new[name]["cell_key"] == old[name]["cell_key"] for name in set(CELLS) - {"temporal"})
    assert "from merged (video-upper + 0.25 x the image VoCo model's change)" in (tmp_path / "table.md").read_text()
    keys = {s: CellSettings(temporal_init="merged", temporal_merge=s).temporal_key() for s in (0.25, 0.5)}
    assert keys[0.25] != keys[0.5]
    assert CellSettings(temporal_init="video-upper", temporal_merge=0.25).temporal_key() == {"init": "video-upper"}
    with pytest.raises(ValueError, match="temporal_merge must be > 0"):
        study(tmp_path, temporal_init="merged", temporal_merge=0.0)


def test_video_upper_trains_its_own_steps_on_its_own_clips_and_its_student_follows(finished, tmp_path,
                                                                                   monkeypatch):
    """`upper_steps` / `upper_clips` (`--upper-steps`, `--upper-clips`): video-upper is keyed and
    trained anew for that many steps on that many training clips (the held-out clips unchanged), the
    temporal cell it distils is trained again on the study's clips, every other model is read back."""
    out, body = finished
    shutil.copytree(out / "cells", tmp_path / "cells")
    fit, trained = TemporalStudy._fit, []

    def recording(self, name, data, *args, **kwargs):
        trained.append((name, self.steps_of(name), len(data.splits["train"].images),
                        len(data.splits["heldout"].images)))
        return fit(self, name, data, *args, **kwargs)

    monkeypatch.setattr(TemporalStudy, "_fit", recording)
    models = runs_dir(study_config("nano", 0, STUDY, QUICK)) / "temporal" / "models"
    for name in ("video-upper", "temporal"):  # the study's 2-step models, which other tests read
        shutil.copytree(models / name, tmp_path / "saved" / name)
    try:
        other = study(tmp_path, upper_steps=1, upper_clips=20)
    finally:
        for name in ("video-upper", "temporal"):
            shutil.rmtree(models / name)
            shutil.copytree(tmp_path / "saved" / name, models / name)
    assert trained == [("video-upper", 1, 20, 4), ("temporal", 2, 16, 4)] and other["temporal"]["failed"] == []
    assert other["temporal"]["upper_steps"] == 1 and other["temporal"]["upper_clips"] == 20
    assert other["temporal"]["clips"] == body["temporal"]["clips"] == {"train": 16, "heldout": 4}
    old, new = ({r["name"]: r for r in b["runs"]} for b in (body, other))
    assert new["video-upper"]["train_steps"] == 1
    for name in ("video-upper", "temporal", "lower"):
        assert new[name]["cell_key"] != old[name]["cell_key"]
    for name in set(CELLS) - {"video-upper", "temporal", "lower"}:
        assert new[name]["cell_key"] == old[name]["cell_key"]
    assert "2 training steps per model (1 on 20 training clips for video-upper)" in (tmp_path / "table.md").read_text()
    with pytest.raises(ValueError, match="upper_steps"):
        study(tmp_path, upper_steps=0)
    with pytest.raises(ValueError, match="train_clips"):
        study(tmp_path, upper_clips=0)


def test_more_training_clips_are_other_cells_on_the_same_scene_model(finished, tmp_path, monkeypatch):
    """`train_clips` (`--train-clips`) draws more training clips without touching the config:
    every clip-trained cell is keyed anew (none is reused), the scene model is the study's."""
    def never(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(TemporalStudy, "run_cell", never)
    more = study(tmp_path, train_clips=20)
    assert more["temporal"]["clips"]["train"] == 20 and sorted(more["temporal"]["failed"]) == sorted(CELLS)
    assert more["config"] == finished[1]["config"]
    with pytest.raises(ValueError, match="train_clips"):
        study(tmp_path, train_clips=0)


def test_the_cached_base_model_records_its_commit_and_a_reuse_by_other_code_warns(finished, capsys, monkeypatch):
    """The base model is cached by config and seed, not by code: it records the commit it was trained at,
    and loading it from another commit (or a dirty checkout) says so, naming both and the way out."""
    from vocolab.studies.common import base_model, code_state, reuse_message

    cfg = study_config("nano", 0, STUDY, QUICK)
    folder = runs_dir(cfg) / "upper-model"
    trained_at = json.loads((folder / "meta.json").read_text())["trained_at"]
    assert trained_at == code_state()  # the fixture trained it in this process
    assert finished[1]["base_model"] == {"folder": f"runs/{runs_dir(cfg).name}/upper-model", "trained_at": trained_at}
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    other = {"commit": "f" * 40, "dirty": False}
    monkeypatch.setattr("vocolab.studies.common.code_state", lambda: other)
    base_model(cfg, runs_dir(cfg), scenes, progress=False)
    said = capsys.readouterr().out
    assert said.strip() == reuse_message(folder, trained_at, other)
    assert said.startswith("WARNING") and trained_at["commit"][:12] in said and "f" * 12 in said and "Delete" in said
    clean = {"commit": "a" * 40, "dirty": False}
    assert not reuse_message(folder, clean, clean).startswith("WARNING")
    assert reuse_message(folder, clean | {"dirty": True}, clean | {"dirty": True}).startswith("WARNING")
    assert "an unrecorded commit" in reuse_message(folder, None, clean)  # saved before commits were recorded
    assert not reuse_message(folder, None, {"commit": "unknown", "dirty": None}).startswith("WARNING")  # no git


def test_the_off_lattice_scene_model_is_tuned_once_on_clip_frame_scenes(finished, tmp_path, monkeypatch):
    """`--off-lattice-steps`: the base model continued on scenes half drawn as clip frames, vision tower included,
    saved and reused; a study on it keys every clip cell anew (none of the base model's is reused)."""
    from vocolab.studies.common import base_model
    from vocolab.studies.off_lattice import CLIP_FRAMES, off_lattice_model

    cfg = study_config("nano", 0, STUDY, QUICK)
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    base = base_model(cfg, runs_dir(cfg), scenes, progress=False)  # the study's, saved by the fixture
    tuned = off_lattice_model(cfg, runs_dir(cfg), base, scenes.tokenizer, 2, progress=False)
    before, after = base.state_dict(), tuned.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("vision.") for k in changed) and any(k.startswith("llm.") for k in changed)
    log = runs_dir(cfg) / "off-lattice-2-logs" / "upper" / "hparams.yaml"
    assert f"train_clip_frames: {CLIP_FRAMES}" in log.read_text() and "train_vision: true" in log.read_text()
    with pytest.raises(ValueError, match="steps"):
        off_lattice_model(cfg, runs_dir(cfg), base, scenes.tokenizer, 0)

    def never(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("vocolab.training.recipe.vlm_stage", never)
    again = off_lattice_model(cfg, runs_dir(cfg), base, scenes.tokenizer, 2, progress=False)
    assert all(torch.equal(after[k], v) for k, v in again.state_dict().items())
    monkeypatch.setattr(TemporalStudy, "run_cell", never)
    body = study(tmp_path, off_lattice_steps=2)
    assert body["temporal"]["off_lattice_steps"] == 2 and sorted(body["temporal"]["failed"]) == sorted(CELLS)


def test_cli_temporal(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(temporal_mod, "run_temporal_study", lambda *a, **kw: seen.update(args=a, kwargs=kw))
    assert cli.main(["temporal", "--preset", "nano", "--seed", "1", "--out", "x", "--k", "4", "--steps", "3",
                     "--limit", "5", "--train-clips", "40", "--off-lattice-steps", "6", "--set", "data.frames=3",
                     "--temporal-steps", "2", "--upper-steps", "7", "--upper-clips", "80",
                     "--temporal-objective", "logits", "--temporal-init", "video-upper",
                     "--temporal-questions", "10", "--temporal-teacher-cache",
                     "--temporal-merge", "0.3", "--temporal-batch", "16",
                     "--temporal-attention", "sdpa_frames", "--temporal-temperature", "1"]) == 0
    assert seen["args"] == ("nano", "x")
    own = CellSettings(temporal_steps=2, temporal_objective="logits", temporal_init="video-upper",
                       temporal_merge=0.3, temporal_questions=10, temporal_teacher_cache=True, temporal_batch=16,
                       temporal_attention="sdpa_frames", temporal_temperature=1.0, upper_steps=7, upper_clips=80)
    assert seen["kwargs"] | {"command": None} == {"seed": 1, "k": 4, "steps": 3, "limit": 5, "train_clips": 40,
                                                   "overrides": {"data.frames": 3}, "command": None,
                                                   "off_lattice_steps": 6, "settings": own}
    monkeypatch.undo()
    assert cli.main(["temporal", "--k", "0", "--out", "y"]) == 2
    assert "k=0" in capsys.readouterr().err
    assert cli.main(["temporal", "--temporal-steps", "0", "--out", "y"]) == 2
    assert "temporal_steps must be >= 1" in capsys.readouterr().err
    assert cli.main(["temporal", "--upper-steps", "0", "--out", "y"]) == 2
    assert "upper_steps must be >= 1" in capsys.readouterr().err
    assert cli.main(["temporal", "--temporal-objective", "nope", "--out", "y"]) == 2
    assert "temporal_objective 'nope' is not one of" in capsys.readouterr().err
    assert cli.main(["temporal", "--temporal-questions", "-1", "--out", "y"]) == 2
    assert "temporal_questions must be >= 0" in capsys.readouterr().err
    assert cli.main(["temporal", "--temporal-teacher-cache", "--out", "y"]) == 2
    assert "temporal_teacher_cache keeps the teacher's answer logits: it needs" in capsys.readouterr().err
    assert cli.main(["temporal", "--off-lattice-steps", "-1", "--out", "y"]) == 2
    assert "off-lattice tuning: steps must be >= 0" in capsys.readouterr().err


def video_tool():
    return tool_module("video_experiment")


def tool_module(name: str):
    """`tools/<name>.py`, imported from its path (the tools are not a package; they import each other)."""
    import importlib.util
    import sys
    from pathlib import Path

    tools = Path(__file__).resolve().parents[1] / "tools"
    if str(tools) not in sys.path:
        sys.path.append(str(tools))
    spec = importlib.util.spec_from_file_location(name, tools / f"{name}.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def saved_video_upper():
    """The finished quick study's config, scene data, saved video-upper model and clip data (batches of 8)."""
    from vocolab.models.checkpoint import load_checkpoint

    cfg = study_config("nano", 0, STUDY, QUICK)
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    scenes.setup()
    model = load_checkpoint(runs_dir(cfg) / "temporal" / "models" / "video-upper")[0].eval()
    clips = VoCoDataModule(cfg, kind="clips", turns=cfg.train.turns, train_n=cfg.data.train_clips, progress=False,
                           tokenizer=scenes.tokenizer, batch_size=8)
    return cfg, scenes, model, clips


def test_the_video_experiment_tool_trains_the_studys_video_upper_bound(finished, tmp_path):
    """`tools/video_experiment.py` without overrides must be the study's `video-upper` cell, or
    its validation comparisons say nothing about the study."""
    from vocolab.models.checkpoint import load_checkpoint
    from vocolab.studies.common import base_model

    tool = video_tool()
    cfg = study_config("nano", 0, STUDY, QUICK)
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    base = base_model(cfg, runs_dir(cfg), scenes, progress=False)  # the study's, saved by the fixture
    cell = cfg.override(**{"voco.mask": "causal"})  # as the tool and `TemporalStudy.cell_cfg` build it
    clips = VoCoDataModule(cell, kind="clips", turns=cfg.train.turns, train_n=cfg.data.train_clips,
                           progress=False, tokenizer=scenes.tokenizer)
    ours = tool.train_video_upper(cell, clips, base, 2, tmp_path, progress=False)
    study_model = load_checkpoint(runs_dir(cfg) / "temporal" / "models" / "video-upper")[0]
    ref = study_model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in ours.state_dict().items())
    tuned = tool.train_video_upper(cell.override(**{"train.lr": 3e-3}), clips, base, 2, tmp_path / "b",
                                   progress=False)
    assert not all(torch.equal(ref[k], v) for k, v in tuned.state_dict().items())


def test_the_temporal_experiment_tool_trains_the_studys_temporal_cell(finished, tmp_path):
    """`tools/temporal_experiment.py` distilled from the study's video-upper must be the study's
    `temporal` cell; without the teacher it must train another model (the distillation terms
    reach the gradients)."""
    from vocolab.models.checkpoint import load_checkpoint

    tool = tool_module("temporal_experiment")
    cfg = study_config("nano", 0, STUDY, QUICK)
    scenes = VoCoDataModule(cfg, turns=cfg.train.turns, progress=False)
    scenes.setup()
    cell = cfg.override(**{"voco.tokens": K, "voco.mask": "video"})  # as the tool and `TemporalStudy.cell_cfg` build it
    clips = VoCoDataModule(cell, kind="clips", turns=cfg.train.turns, train_n=cfg.data.train_clips,
                           progress=False, tokenizer=scenes.tokenizer)
    models = runs_dir(cfg) / "temporal" / "models"
    teacher = load_checkpoint(models / "video-upper")[0]
    ours = tool.train_temporal(cell, clips, load_checkpoint(models / "voco-image")[0], 2, tmp_path, teacher=teacher,
                               progress=False)  # train.voco_objective: logits+attention
    ref = load_checkpoint(models / "temporal")[0].state_dict()
    assert all(torch.equal(ref[k], v) for k, v in ours.state_dict().items())
    plain = tool.train_temporal(cell, clips, load_checkpoint(models / "voco-image")[0], 2, tmp_path / "b",
                                progress=False)
    assert not all(torch.equal(ref[k], v) for k, v in plain.state_dict().items())
    # `--train-seed`: the same clips in another order, another model
    reordered = VoCoDataModule(cell, kind="clips", turns=cfg.train.turns, train_n=cfg.data.train_clips,
                               progress=False, tokenizer=scenes.tokenizer, seed=1)
    other = tool.train_temporal(cell, reordered, load_checkpoint(models / "voco-image")[0], 2, tmp_path / "c",
                                teacher=teacher, progress=False)
    assert not all(torch.equal(ref[k], v) for k, v in other.state_dict().items())
    assert reordered.split("train").questions == clips.split("train").questions


def test_the_video_experiments_perception_questions_are_true_in_every_visible_frame(cache):
    """`--perception`: each added question is answered by every frame its object is visible in,
    never names the colour changer, and lands after the clip's own temporal questions."""
    tool = video_tool()
    cfg = study_config("nano", 0, STUDY, QUICK)
    rows = list(iter_rows(cfg.data, "clips", "train", None, render=False))
    for i, row in enumerate(rows):
        clip = Clip.from_json(row["objects"])
        for qa in tool.perception_questions(clip, np.random.default_rng(i), 3, cfg.data):
            for t in range(clip.frames):
                objs = clip.frame_scene(t).objects
                words = qa.question.split()
                if qa.family == "color":
                    assert {o.color for o in objs if o.shape == words[-2]} <= {qa.answer}
                elif qa.family == "shape":
                    assert {o.shape for o in objs if o.color == words[-3]} <= {qa.answer}
                else:
                    there = any((o.color, o.shape) == (words[-3], words[-2]) for o in objs)
                    assert not there or qa.answer == "yes"
            changer = [tr for tr in clip.tracks if tr.new_color is not None]
            assert not any(tr.shape in qa.question.split() and qa.family == "color" for tr in changer)
    clips = VoCoDataModule(cfg, kind="clips", progress=False).split("train")
    before = [list(q) for q in clips.questions]
    tool.add_perception_questions(clips, cfg, 2, len(rows))
    assert all(q[: len(b)] == b and len(q) == len(b) + 2 for q, b in zip(clips.questions, before))
    assert all(len(a) == len(q) == len(f) for a, q, f in zip(clips.answers, clips.questions, clips.families))


def test_the_video_experiments_caption_turn_comes_last_and_batches_as_answer_tokens(cache):
    """`--caption`: the clip's caption is each training clip's last turn, after its own questions
    (so no question can read its answer from it), and every caption word is a scored token."""
    from vocolab.data.batching import make_batch

    tool = video_tool()
    cfg = study_config("nano", 0, STUDY, QUICK)
    clips = VoCoDataModule(cfg, kind="clips", progress=False).split("train")
    before = [list(q) for q in clips.questions]
    tool.add_caption_turn(clips)
    for q, a, b, caption in zip(clips.questions, clips.answers, before, clips.captions):
        assert q[: len(b)] == b and q[-1] == tool.CAPTION_QUESTION and a[-1] == caption and len(a) == len(q)
    tok = build_tokenizer(cfg.data)
    ids = special_ids(tok)
    batch = make_batch(tok, ids, clips.questions[:1], clips.answers[:1], clips.images[:1],
                       image_tokens=cfg.data.image_tokens, voco_tokens=0)
    scored = batch.labels[0][batch.labels[0] != -100].tolist()
    caption_ids = tok(clips.captions[0], add_special_tokens=False)["input_ids"]
    assert scored[-len(caption_ids) - 1: -1] == caption_ids  # the caption, then its end token


def test_the_video_experiments_random_frame_code_starts_a_copy_and_leaves_the_scene_model_at_zero():
    """`--frame-init random`: the clip model starts from a copy whose frames carry distinct codes
    of the asked RMS, the same for the same seed; the scene model it copies keeps its zeros."""
    tool = video_tool()
    scene = torch.nn.Module()
    scene.frame_positions = torch.nn.Parameter(torch.zeros(3, 256))
    clip = tool.with_random_frame_embeddings(scene, 0.32, 0)
    code = clip.frame_positions.detach()
    assert torch.count_nonzero(scene.frame_positions) == 0
    assert abs(code.pow(2).mean().sqrt().item() - 0.32) < 0.03
    assert torch.cdist(code, code).add(torch.eye(3)).min() > 0.32  # every frame's code differs from the others
    assert torch.equal(tool.with_random_frame_embeddings(scene, 0.32, 0).frame_positions, clip.frame_positions)
    assert not torch.equal(tool.with_random_frame_embeddings(scene, 0.32, 1).frame_positions, clip.frame_positions)


def test_the_video_experiments_frame_code_starts_a_copy_and_leaves_the_scene_model_alone():
    """`--frame-init sincos|zeros`: the clip model starts from a copy carrying the code; the
    scene model it copies keeps its own."""
    tool = video_tool()
    code = sincos_frames(4, 256, 0.5)
    scene = torch.nn.Module()
    scene.frame_positions = torch.nn.Parameter(sincos_frames(4, 256, 0.32))
    clip = tool.with_frame_embeddings(scene, code)
    assert torch.equal(clip.frame_positions.detach(), code)
    assert torch.equal(scene.frame_positions.detach(), sincos_frames(4, 256, 0.32))


def test_shared_frame_positions_put_every_frame_where_frame_one_sits_and_the_text_after_one_frame():
    from vocolab.core.layout import Frame, Layout, Span

    frames = (Frame(Span(1, 3), Span(4, 1)), Frame(Span(5, 3), Span(8, 1)), Frame(Span(9, 3), Span(12, 1)))
    layout = Layout(length=16, frames=frames, text=Span(13, 3), answer=Span(15, 1))
    pos = video_tool().shared_frame_positions([layout, layout], 18)
    assert pos.shape == (2, 18)
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9]


def test_the_video_experiments_teacher_forced_score_is_the_streaming_answerers(finished):
    """Runs under shared positions are scored teacher-forced; under the package's positions that
    score must be the streaming answerer's, question for question, or the two cannot be compared."""
    from vocolab.data.clips import TEMPORAL_FAMILIES
    from vocolab.evaluation.clips import clip_run
    from vocolab.evaluation.heldout import Questions

    tool = video_tool()
    cfg, scenes, model, clips = saved_video_upper()
    val = clips.split("val")
    streamed = clip_run(model, scenes.tokenizer, val.images, Questions.of(val), TEMPORAL_FAMILIES, name="u",
                        method="full", mask="causal", k=cfg.voco.tokens, tokens=cfg.data.image_tokens, progress=False)
    forced = tool.teacher_forced_run(model, clips)
    assert forced["questions"] == len(Questions.of(val))
    assert forced["accuracy"] == round(streamed["accuracy"], 4)
    assert forced["per_family"] == {f: round(v, 4) for f, v in streamed["per_family"].items()}
    shared = tool.teacher_forced_run(model, clips, shared=True)
    assert shared["questions"] == forced["questions"] and 0.0 <= shared["accuracy"] <= 1.0


def test_the_video_upper_bound_learns_frame_deltas_and_the_no_deltas_control_keeps_them_at_zero(finished, tmp_path):
    """The study's clip models train their frame deltas (`models.frame_deltas`) from a scene model's
    zeros; `tools/video_experiment.py --no-deltas`, the control, trains the rest and keeps them at zero."""
    from vocolab.studies.common import base_model

    cfg, scenes, model, clips = saved_video_upper()
    base = base_model(cfg, runs_dir(cfg), scenes, progress=False)
    assert base.frame_deltas.weight.abs().max() == 0 and model.frame_deltas.weight.abs().max() > 0
    control = video_tool().train_video_upper(cfg.override(**{"voco.mask": "causal"}), clips, base, 2, tmp_path,
                                             progress=False, no_deltas=True)
    assert control.frame_deltas.weight.abs().max() == 0
    assert not torch.equal(control.frame_positions, base.frame_positions)

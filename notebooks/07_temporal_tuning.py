# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Temporal tuning: VoCo on video, one frame at a time
#
# VoCo-LLaMA extends to video without any new machinery: every frame gets its own K VoCo
# tokens, each frame's VoCo tokens may only read *that* frame, and the question reads the
# VoCo tokens of *all* frames. That is the `video` attention mask. Because a frame never
# looks at another one, a clip can be compressed **streaming**: frame by frame, as it
# arrives, into a cache that grows by K tokens per frame, and questions can be answered
# after any frame.
#
# An image VoCo model already knows how to compress *one* image. Whether it can compare
# frames (which way did the object move? which one appeared first?) is another matter:
# the paper continues training on video QA under the video mask, the `temporal` stage.
# The clips here are built so that no single frame answers the questions (notebook 02):
# *direction*, *order* of appearance, which shape *changes colour* and in how many frames
# an object is *visible*.
#
# In this notebook you will:
#
# 1. draw the video mask and check what each token may see;
# 2. compress one clip frame by frame and watch the cache grow, and check that streaming
#    equals one forward over the whole clip;
# 3. run the temporal study (`vocolab temporal`): the image VoCo model, the same model
#    after temporal tuning, average pooling at the same K, the full-token upper bound,
#    and single-frame references;
# 4. read the table, the accuracy per family, and the accuracy when only the first t
#    frames are given.

# %%
from vocolab import lab

# minutes on this project's 2-core CPU; cpu: the temporal study, 18.7 min measured with frame embeddings
info = lab.setup(minutes={"quick": 0.4, "cpu": 19})

# %%

import pandas as pd
import torch
from IPython.display import Markdown, display

from vocolab.core.config import Config
from vocolab.core.layout import assemble, build_layout
from vocolab.core.masks import build_mask
from vocolab.data import Split, build_tokenizer, special_ids
from vocolab.inference import compress_frame, text_logits
from vocolab.models import VoCoVLM
from vocolab.reporting import (plot_accuracy_vs_frames, plot_clip, plot_mask_modes, plot_streaming,
                               plot_temporal_families, temporal_markdown)
from vocolab.evaluation import Questions, predict_frames

K = lab.TEMPORAL_K  # VoCo tokens per frame, as `vocolab temporal` uses by default


# %% [markdown]
# ## 1. The video mask
#
# A clip of T frames is laid out as `[BOS] ([IMG x V][VOCO x K]) x T [question] [answer]`:
# each frame's image tokens are followed by its own VoCo tokens. Below, a toy layout (3
# frames, V = 4, K = 2) under the three mask modes:
#
# * `causal`: everything sees everything before it (the full-token upper bound);
# * `voco`: the text sees only VoCo tokens, but VoCo tokens of frame 2 still see frames 0
#   and 1 (fine for one image, not streamable for video);
# * `video`: frame t's image and VoCo tokens see BOS and frame t only; the text sees every
#   frame's VoCo tokens and nothing of the images.

# %%
layout = build_layout(question_len=4, answer_len=2, frames=3, image_tokens=4, voco_tokens=2)
plot_mask_modes(layout)

# %% [markdown]
# **Notice** the block diagonal in the `video` panel: each frame is a closed box, joined to
# the others only through the text rows. BOS stays visible to every frame: it is the
# attention sink, and since BOS's keys and values are the same whoever looks at it, frame
# t computes exactly the same thing whether it is run alone or inside the whole clip. That
# is what makes streaming exact. The same facts, read off the mask tensor:

# %%
m = build_mask([layout], "video")[0, 0]
f0, f1 = layout.frames[0], layout.frames[1]
q = layout.text.start
checks = {
    "frame 1's VoCo tokens see frame 1's image": m[f1.voco.start, f1.image.start],
    "frame 1's VoCo tokens see frame 0's image": m[f1.voco.start, f0.image.start],
    "frame 1's VoCo tokens see frame 0's VoCo tokens": m[f1.voco.start, f0.voco.start],
    "frame 1's VoCo tokens see BOS": m[f1.voco.start, 0],
    "the question sees frame 0's VoCo tokens": m[q, f0.voco.start],
    "the question sees frame 0's image": m[q, f0.image.start],
}
for what, allowed in checks.items():
    print(f"{what:50s} {bool(allowed)}")

# %% [markdown]
# ## 2. A clip, compressed frame by frame
#
# One held-out clip and its questions (every object moves one cell over the whole clip; one
# of them changes colour; objects may appear late or vanish early):

# %%
cfg = info.config.override(**{"voco.tokens": K})
tok = build_tokenizer(cfg.data)
heldout = Split.load(cfg, "clips", "heldout", n=40 if info.quick else None, progress=False)
i = 0
clip = heldout.images[i]  # [T, H, W, 3] uint8
T = clip.shape[0]
for question, gold, family in zip(heldout.questions[i], heldout.answers[i], heldout.families[i]):
    print(f"{family:14s} {question:50s} {gold}")
plot_clip(clip, heldout.captions[i])

# %% [markdown]
# `compress_frame(model, cache, frame, t)` runs `[BOS][IMG_t][VOCO_t]` at the positions frame
# t has in the full clip (frame t's image starts at 1 + t (V + K)), under the video mask,
# keeps the K VoCo tokens' keys and values of every layer, and appends them to the cache.
# Frame t's image tokens also get the model's learned embedding of frame t
# (`model.frame_positions`; none for frame 0): the rotary positions turn only queries and
# keys, so without it what a question reads from a frame would not say *which* frame. It
# starts at a fixed sine-cosine code of t and only clip training moves it.
# They also get a learned map of how each token's features changed since frame t - 1
# (`model.frame_deltas`; zero at the start, none for frame 0): every question here compares
# frames, and the change marks a moving or recolouring object where it is. So the cache also
# keeps the last frame's CLIP features (`cache.last_frame`) for the next frame's change; the
# answer never reads them, and no frame's VoCo tokens *attend* to another frame.
# The cache's mechanics do not depend on the weights, so a freshly initialised model is
# enough here; the trained models come in section 3.

# %%
torch.manual_seed(0)
model = VoCoVLM(cfg, special_ids(tok), len(tok)).eval()
pixels = torch.from_numpy(clip[None])  # [1, T, H, W, 3]
V, L = cfg.data.image_tokens, cfg.llm.layers

cache, rows = None, []
for t in range(T):
    cache = compress_frame(model, cache, pixels[:, t], t, K)
    rows.append({"after frame": t, "cached tokens": cache.tokens, "cache bytes": cache.nbytes,
                 "positions": cache.positions.tolist(), "question starts at": cache.next_position,
                 # the same bytes per token, for all V + K tokens of every frame so far
                 "bytes keeping all V + K tokens of each frame": cache.nbytes // cache.tokens * (t + 1) * (V + K)})
print(cache)
pd.DataFrame(rows).set_index("after frame")

# %% [markdown]
# **Notice** the cache grows by K tokens (and the same number of bytes) per frame, while the
# question's position keeps moving as if all V image tokens of every frame were still in
# the sequence: RoPE has rotated every cached key by its original position, so the text
# must continue at `next_position`. Each frame costs K / (V + K) of what keeping all its
# tokens would cost.
#
# Streaming is not an approximation. The reference is one forward over the whole clip
# sequence `[BOS] ([IMG][VOCO]) x T [question] [answer]` under the `video` mask, no cache at
# all; reading the question and its gold answer against the streamed cache (teacher forcing,
# `text_logits`) must give the same logits at every text position:

# %%
ids = model.special
worst = 0.0
for question, gold in zip(heldout.questions[i], heldout.answers[i]):
    text = tok(question + " " + gold, add_special_tokens=False)["input_ids"]
    seq, lay = assemble(text, [], ids, frames=T, image_tokens=V, voco_tokens=K, add_eos=False)
    with torch.no_grad():
        full = model(torch.tensor([seq]), [lay], pixels=pixels, mask="video").logits[0, lay.text.start:]
    cached = text_logits(model, cache, [text])[0]
    worst = max(worst, (full - cached).abs().max().item())
print(f"largest logit difference over {len(heldout.questions[i])} questions: {worst:.1e}")
assert worst < 1e-4

# %% [markdown]
# The two paths add the same numbers in a different order, so they agree to float
# rounding. The full forward needed every frame's V image tokens at once; the cache never
# holds more than K tokens per frame. (`tests/test_temporal.py` also checks multi-token
# greedy decoding through the cache against the full decoder.)
#
# ## 3. The temporal study
#
# `lab.run_temporal_study` (the `vocolab temporal` command, `make temporal`) starts every model
# from the same upper-bound *scene* model and trains each for the same steps with the same
# seed (the distilled `temporal` cell and `video-upper` may train their own way: `settings=CellSettings(...)`
# of `vocolab.studies.temporal_settings`, the `--temporal-*` and `--upper-*` options of the command). With
# `off_lattice_steps` the scene model is first tuned on scenes half drawn as clip frames, so that what it
# sees carries over to clips. `make temporal` gives the temporal cell 2,600 steps of 16 clips (the others: 1,600 of
# 32) on 8,000 clips, under `sdpa_frames` (attention over the `video` mask's blocks only: the same numbers,
# cheaper), distilled through the answer logits only at temperature 1 (kept per clip after the first epoch: the teacher is
# frozen), started from `video-upper` plus the weight change that made `voco-image` from the scene model
# (task arithmetic: `vocolab.models.merging.task_arithmetic`, `--temporal-init merged`; both models started from
# that scene model, so the start already knows clips *and* a little of squeezing a frame into K tokens) and
# asked 10 questions per training clip (the held-out clips keep their 5), after 550 such scene steps:
#
# | run | what it is | tokens per frame the answer sees |
# |---|---|---|
# | `voco-image` | the image VoCo model (scene QA, `voco` mask, distilled from the scene model like the recipe's voco stage), evaluated on clips under the `video` mask, never trained on video | K VoCo |
# | `temporal` | a VoCo model trained on clip QA under the `video` mask, distilled from `video-upper` (its answer logits; the recipe's objective adds its hidden states), from `voco-image` by default, from the merge of `video-upper` and `voco-image` in `make temporal`: **temporal tuning** | K VoCo |
# | `avgpool` | average pooling of each frame to K tokens, trained on clip QA | K pooled |
# | `video-upper` | all V tokens of every frame, causal, trained on clip QA: the upper bound | V (+ its VoCo slot) |
# | `lower` | `video-upper` evaluated under the `video` mask with K VoCo tokens per frame: the lower bound | K VoCo |
# | `middle-frame` | the scene model trained on clip QA like `video-upper`, but shown only each clip's middle frame | V, one frame |
# | `best-single-frame` | a *symbolic* answerer that sees the full state of its best frame | - |
# | `blind` | majority answer per question template | 0 |
#
# Retention is measured against `video-upper` and `lower`, as for images
# (docs/architecture.md, "Results files").
#
# Set `LOAD_COMMITTED = True` to read the nano study committed in `figures/temporal/`
# (made by `make temporal`). Otherwise the study runs here: in quick mode (`VOCOLAB_QUICK=1`,
# as in the tests) with little data and 5 steps per model, so its numbers only show that
# the machinery works; outside quick mode it is the real study of the preset (it takes a
# while on a CPU; finished models and cells are kept and reused).

# %%
LOAD_COMMITTED = False
OUT = lab.runs_folder("notebook07")
body = lab.study_results("temporal", lambda: lab.run_temporal_study(info.preset, OUT, seed=info.seed,
                                                                     limit=100 if info.quick else None,
                                                                     progress=not info.quick),
                         load_committed=LOAD_COMMITTED)

# %% [markdown]
# ## 4. The comparison
#
# Accuracy in % per family, retention, and what each method has to keep per frame (the
# fp32 keys and values of every layer, `vocolab.zoo.costs.kv_bytes`):

# %%
display(Markdown(temporal_markdown(body)))

# %% [markdown]
# What to look for (with the real study; quick-mode models have trained for 5 steps and
# mostly answer with the majority):
#
# * **`voco-image` → `temporal`**: the image VoCo model has never had to compare frames;
#   the gap is what temporal tuning buys;
# * **`temporal` against `avgpool`**: the same cache size per frame (K tokens), one learned
#   inside the LLM, one by pooling before it;
# * **`temporal` against `video-upper`**: what compressing each frame to K tokens costs,
#   for a cache V / K times smaller;
# * **`middle-frame` and `best-single-frame`**: what one frame can answer. A temporal
#   family where they score well is not really temporal.
#
# ## 5. Per family

# %%
plot_temporal_families(body)

# %% [markdown]
# The black line over each group is the blind accuracy for that family: a bar only counts
# above it.
#
# * **direction** needs two frames (one frame only rules out directions near a border);
# * **order** ("which shape appears first?") needs the frames where objects enter;
# * **color_change** needs a frame before and one after the change;
# * **visible_count** needs every frame.
#
# ## 6. Accuracy against frames
#
# Every model also answered after only the first t frames (VoCo models from the streaming
# cache after frame t, the others from the first t frames in the sequence). With t = 1 no
# temporal question is answerable except by prior or luck; a model that really uses time
# should climb with t.

# %%
plot_accuracy_vs_frames(body)

# %%
run = next(r for r in body["runs"] if r["name"] == "temporal")
curve = pd.DataFrame(run["per_family_vs_frames"]).T.rename_axis("frames given")
(100 * curve).round(1)

# %% [markdown]
# The same curve per family for the `temporal` model: *visible_count* should need the whole
# clip, *direction* two frames; *order* and *color_change* jump at the frame where the
# event happens, which varies from clip to clip.
#
# ## 6b. What the scene model sees in a clip frame
#
# Every clip model starts from the upper-bound *scene* model. Scene objects always sit on a
# lattice cell; clip objects move a fraction of a cell per frame (that is what makes a single
# frame useless for *direction*), so in most frames they sit *between* cells. The study asks the
# scene model the scene families (colour, shape, count, exist, spatial) about held-out scenes and
# about the clips' middle frames, as many questions each:

# %%
seen = body["temporal"].get("frame_perception")
if seen is None:
    print("this results file predates the perception check")
else:
    table = pd.DataFrame({where: {"all": s["accuracy"], **s["per_family"]}
                          for where, s in seen.items() if where != "frame"})
    display((100 * table).round(1))


# %% [markdown]
# **Notice** how much of the scene model's perception is lost between cells without the tuning (the
# study's scene model: 91 % on held-out scenes, 47 % on clip frames). A clip model that starts from it
# has to learn again to see the objects in each frame within its training steps before it can compare
# frames. Training scenes drawn where clip frames hold their objects teach it: `make temporal` first
# tunes the scene model 550 steps with half its scenes drawn as clip frames (`--off-lattice-steps`,
# `data.train_clip_frames`), and the committed run reads 97 % on scenes and 89 % on clip frames; its
# video upper bound reads 92.3 % after 1,600 steps (59.7 % from an untuned scene model, RESULTS.md).
#
# ## 7. Streaming answers
#
# One held-out clip streamed through the `temporal` model: the cache after each frame, and
# the answer the model would give if the clip stopped there.

# %%
example = body["temporal"].get("example")
if example is None:
    print("no temporal model in this study (its cell failed)")
else:
    study_cfg = Config.from_dict(body["config"])
    frames = Split.load(study_cfg, "clips", "heldout", n=body["temporal"]["clips"]["heldout"],
                        progress=False).images[example["clip"]]
    display(pd.DataFrame(example["steps"]).set_index("frames"))
    display(plot_streaming(frames, example))

# %% [markdown]
# ### A trained video model, streamed
#
# The repository ships the `temporal` model of `vocolab temporal` (`trained/nano/video`). Here
# it streams the first held-out clip and answers each of its questions after every frame
# (`predict_frames`: one growing cache, each frame compressed once): read down a column to see
# which answers need the whole clip. It is the temporal model of `make temporal` at `d2d7895` (2,600
# steps of 16 clips from the video upper bound plus the image VoCo model's weight change, distilled through the
# upper bound's answer logits at temperature 1, 10 questions per training clip, every clip model started from the scene model tuned
# on clip-frame scenes): 80.5 % on all 1,500 held-out questions and 0.780 on its check (the first 150; blind
# 0.25), best on `direction` (88.1 %), so expect wrong answers, more of them after one or two frames.
# What the streaming *mechanics* show holds for any weights.

# %%
if lab.use_shipped(info):
    video, video_cfg, _ = lab.shipped("video")
    clips = Split.load(video_cfg, "clips", "heldout", n=1, progress=False)
    qs = Questions.of(clips)
    streamed = predict_frames(video, build_tokenizer(video_cfg.data), clips.images, qs, "video",
                              video_cfg.voco.tokens, progress=False)
    table = pd.DataFrame({f"t = {t}": answers for t, answers in streamed.items()},
                         index=pd.Index(qs.questions, name="question"))
    table["gold"] = qs.answers
    display(table)
    display(plot_clip(clips.images[0], clips.captions[0]))

# %% [markdown]
# ## Exercises
#
# 1. **More tokens per frame.** Run the study with `k=4` (`lab.run_temporal_study(..., k=4)`, or
#    `vocolab temporal --k 4`). Does `temporal` close the gap to `video-upper`? What happens
#    to `avgpool`? How many bytes per frame does each cost now?
# 2. **Time reversed.** Evaluate the `temporal` model on reversed clips with
#    `vocolab.evaluation.predict_frames(model, tok, heldout.images[:, ::-1], qs, "video", K)`
#    (the trained models are saved under `vocolab.studies.common.runs_dir(cfg) / "temporal" / "models"`,
#    load them with `vocolab.models.load_checkpoint`). Which families should flip (direction:
#    left ↔ right; order: first ↔ last), and do they?
# 3. **Only the last frame?** `predict_frames(..., frames=[1])` on `heldout.images[:, -1:]`
#    answers from the last frame alone (with the `middle-frame` model, trained on middle frames). Compare with `middle-frame` and with
#    `body["temporal"]["single_frame"]["per_frame"]`, the symbolic answerer at each frame:
#    which frame is the most informative, and why?
# 4. **Without BOS.** The `video` mask lets every frame see BOS. Argue why streaming would
#    still be exact if it did not, and what the frames would lose (hint: which token absorbs
#    attention that has nowhere useful to go?).
# 5. **An hour of video.** With the `base` preset (`vocolab.core.config.preset("base")`), compute
#    `vocolab.zoo.costs.frame_costs(cfg, K, 3600)` for one frame per second at K = 2 and at V + 1 tokens
#    (full). Which fits in a GPU's memory?

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
# # 02 · Scenes, clips and the model: what goes in, what comes out
#
# Before compressing anything, look at what the model will be asked to compress. vocolab
# downloads no data set: every image is a **scene** of coloured shapes drawn from a seed,
# every video a **clip** of moving shapes, and every question comes with its exact answer
# because the symbolic scene is kept next to the pixels. That makes the benchmark cheap,
# but also easy to get wrong: if the questions give their answers away, a model can score
# well while its vision tokens carry nothing, and compression would look free.
#
# In this notebook you will:
#
# 1. sample and render scenes, read their questions and captions, and turn the difficulty knobs;
# 2. measure a **blind** answerer that reads only the question: the floor every result is read against;
# 3. watch a clip and check that **no single frame** answers its questions;
# 4. meet the tokenizer: a closed vocabulary of a few dozen words;
# 5. build the VLM for this preset, count its parameters across presets, and run one
#    forward pass under each mask mode.
#
# Nothing is trained here. In quick mode it runs in seconds; otherwise the first run
# generates and caches the preset's full splits (a few seconds for `nano`).

# %%
from vocolab import lab

# minutes on this project's 2-core CPU: quick mode under nbmake, real mode run once (data cached)
info = lab.setup(minutes={"quick": 0.2, "cpu": 0.3})

# %%
import math

import numpy as np
import torch

from vocolab.core.config import MASK_MODES
from vocolab.core.presets import preset
from vocolab.data import (FAMILIES, PALETTE, SPECIAL_TOKENS, TEMPORAL_FAMILIES, Clip, build_tokenizer, load_clips,
                          load_scenes, make_batch, numpy_view, render_scene, sample_scene, special_ids)
from vocolab.evaluation import BlindAnswerer, accuracy, as_qas, best_single_frame
from vocolab.models import VoCoVLM
from vocolab.reporting import plot_clip, plot_family_accuracy, plot_images, plot_mask_modes, plot_parameter_counts


# %% [markdown]
# ## 1. Scenes
#
# A scene is `min_objects..max_objects` objects (shape, colour, size) on distinct cells of a
# `grid x grid` lattice, with a little pixel noise. `load_scenes` generates a split once,
# caches it on disk (under `$VOCOLAB_CACHE`, keyed by every config field that changes the
# data) and reloads it in milliseconds afterwards; a stale or half-written cache is rebuilt,
# never silently reused. The held-out split is drawn from a **different seed** than the
# training split, so no held-out scene is ever trained on.
#
# In quick mode we take the split sizes the quickstart uses (`lab.main_config`). Item *i* of a
# split has its own random stream, so a smaller split is simply a prefix of the full one
# (`load_scenes(..., n=...)` gives any prefix).

# %%
cfg = lab.main_config(info)
d = cfg.data
print(f"{d.image_size} px images cut into {d.patch_size} px patches -> V = {d.image_tokens} image tokens")
print(f"{d.min_objects}-{d.max_objects} objects on a {d.grid}x{d.grid} grid, "
      f"{len(d.shapes)} shapes x {len(d.colors)} colours x {len(d.sizes)} sizes")

train = load_scenes(d, "train")
heldout = load_scenes(d, "heldout")
print(f"{len(train)} train / {len(heldout)} held-out scenes, {d.questions_per_scene} questions each")
print("columns:", heldout.column_names)

# %% [markdown]
# Each row is one image with its caption, its questions and their answers, families and
# templates, and the symbolic scene as JSON. `numpy_view` reads the pixels as `uint8`
# arrays `[H, W, 3]` (a plain numpy view would widen them to int64, 8x the memory).
#
# Here is one held-out question of each of the five **families**, each with its scene:

# %%
questions, answers, families = heldout["question"], heldout["answer"], heldout["family"]
picks = []  # (scene, question) pairs: one question per family, each from a different scene
for family in FAMILIES:
    used = {i for i, _ in picks}
    picks.append(next((i, j) for i, fams in enumerate(families) if i not in used
                      for j, f in enumerate(fams) if f == family))
images = numpy_view(heldout.select([i for i, _ in picks]))["image"]
titles = [f"{families[i][j]}: {questions[i][j]} {answers[i][j].upper()}" for i, j in picks]
plot_images(list(images), titles, cols=len(FAMILIES))

# %% [markdown]
# Every answer is one word. The families test different things: `color` and `shape` need
# one object's attributes, `count` needs all of them, `exist` needs **binding** (a red
# object and a circle are not a red circle: half of the "no" questions name a colour and a
# shape that are both present, just not together), and `spatial` needs positions.
#
# The **caption** lists every object, row by row, with a coarse position. Captions feed
# the training stages that come before question answering (CLIP's contrastive stage and
# the projector's pre-training):

# %%
i = picks[0][0]
print("caption:", heldout[i]["caption"], "\n")
for q, a, f in zip(questions[i], answers[i], families[i]):
    print(f"{f:8s} {q} -> {a}")

# %% [markdown]
# ### 1.1 Difficulty knobs
#
# The benchmark's difficulty is a handful of `DataConfig` fields:
#
# | knob | field | what it makes harder |
# |---|---|---|
# | objects per scene | `data.min_objects`, `data.max_objects` | more to pack into K VoCo tokens; counting; finding the one object a question names |
# | palette | `data.colors` (and `data.shapes`, `data.sizes`) | finer distinctions; more ways to be wrong; a larger vocabulary |
# | grid | `data.grid` | more, smaller cells: objects shrink (their size is a fraction of a cell) and positions get finer |
#
# The `small` and `base` presets already use 8 objects on a 6x6 or 8x8 grid, but with
# bigger images. Here the same random stream is rendered under harder settings at this
# preset's image size:

# %%
harder = {
    "this preset": {},
    "6-8 objects": {"data.min_objects": 6, "data.max_objects": 8},
    "6-8 objects, 6x6 grid": {"data.min_objects": 6, "data.max_objects": 8, "data.grid": 6},
    f"... and all {len(PALETTE)} colours": {"data.min_objects": 6, "data.max_objects": 8, "data.grid": 6,
                                          "data.colors": list(PALETTE)},
}
images, titles = [], []
for name, overrides in harder.items():
    hard = cfg.override(**overrides).data
    rng = np.random.default_rng(0)  # the same stream for every setting
    scene = sample_scene(rng, hard)
    images.append(render_scene(scene, hard, rng))
    titles.append(f"{name}: {len(scene.objects)} objects, {hard.image_size // hard.grid} px cells")
plot_images(images, titles, cols=len(images))

# %% [markdown]
# **Notice** how small the objects get on a 6x6 grid of a 64 px image: a small object is
# about 5 px across, smaller than one 8 px patch. Geometry that cannot work fails as soon
# as the config is built, naming the field, instead of producing a silently broken data
# set (a colour or shape the renderer cannot draw is caught when data is generated):

# %%
for bad in ({"data.grid": 10}, {"data.max_objects": 20}, {"data.min_objects": 7}):
    try:
        cfg.override(**bad)
    except ValueError as err:
        print("ValueError:", err)

# %% [markdown]
# ## 2. The blind baseline: what the questions give away
#
# A visual question-answering benchmark can often be "solved" without looking: "what
# colour is the banana?" is *yellow* whatever the picture shows. On such a benchmark a VLM
# whose vision tokens carry nothing still scores well, and compressing those tokens to
# nothing looks free. So before any model, measure a **blind** answerer.
#
# `BlindAnswerer` reads only the question. It is fit on the training questions and, for
# each question *template* (e.g. `what color is the {shape} ?`), predicts the most common
# training answer; with `key="question"` it memorises the most common answer of each
# exact question instead. It is scored on the held-out split, with exact match, overall
# and per family. The black lines are chance: one over the number of different answers
# the family gives.

# %%
QA_COLUMNS = ["question", "answer", "family", "template"]
train_qas = as_qas(train.select_columns(QA_COLUMNS))
heldout_qas = as_qas(heldout.select_columns(QA_COLUMNS))

blind = {key: accuracy(BlindAnswerer(key).fit(train_qas), heldout_qas) for key in ("template", "question")}
chance = {f: 1 / len({qa.answer for qa in heldout_qas if qa.family == f}) for f in FAMILIES}
for key, score in blind.items():
    print(f"blind, majority per {key:8s}: {score['accuracy']:.1%} of {score['examples']} held-out questions")
print(f"chance (mean over families):     {sum(chance.values()) / len(chance):.1%}")
plot_family_accuracy({f"blind (per {key})": score["per_family"] for key, score in blind.items()}, chance,
                     families=FAMILIES, title="Held-out accuracy without the image")

# %% [markdown]
# **Notice:** the blind answerer sits at chance for `color`, `shape`, `exist` and
# `spatial` (up to sampling noise, which is larger in quick mode). That is by
# construction: the question generator picks the **answer first** (uniformly over the
# answers this scene can give) and only then an object that has it, so the question's
# wording says nothing about its answer.
#
# `count` is the exception, and worth understanding. Balancing happens per scene, and a
# scene of a few objects can only answer "how many red objects?" with *zero*, *one* or
# *two*: small numbers stay more likely than large ones, and "how many objects?" always
# has an answer between `min_objects` and `max_objects`. A model's `count` accuracy must
# therefore be read against the blind bar, not against chance.
#
# This is the rule every later notebook follows: **a benchmark where blind accuracy is
# high measures nothing**. Accuracy only means "the model used the image" to the extent
# that it beats the blind answerer on the same split.

# %% [markdown]
# ## 3. Clips: questions that need time
#
# A clip is `data.frames` frames (T) of objects that each move one cell in total, a fixed
# step per frame, in one of four directions. An object may appear late or vanish early, and
# one object changes colour mid-clip. The four **temporal families** need at least two
# frames by construction: `direction` (which way does X move?), `order` (which shape
# appears first / last?), `color_change` (which shape changes colour?) and `visible_count`
# (in how many frames is X visible?).
#
# Here is the first held-out clip whose questions cover all four families:

# %%
train_clips, heldout_clips = load_clips(d, "train"), load_clips(d, "heldout")
print(f"{len(train_clips)} train / {len(heldout_clips)} held-out clips of {d.frames} frames")

k = next(i for i, fams in enumerate(heldout_clips["family"]) if set(TEMPORAL_FAMILIES) <= set(fams))
clip = numpy_view(heldout_clips)[k]
print("frames:", clip["frames"].shape, clip["frames"].dtype)
print("caption:", clip["caption"], "\n")
for family in TEMPORAL_FAMILIES:
    j = list(clip["family"]).index(family)
    print(f"{family:13s} {clip['question'][j]} -> {clip['answer'][j]}")
plot_clip(clip["frames"], title=clip["caption"])


# %% [markdown]
# Is one frame really not enough? `SingleFrameAnswerer` is a generous opponent: it sees
# the exact **symbolic** state of one frame (no pixels to misread) and uses it as well as
# it can. A position near a border rules some directions out; an object visible now tends
# to be visible for long; the most common shape on screen is a fair guess for "which shape
# appears first". `best_single_frame` fits one such answerer per frame on the training
# clips and reports, for each family, its **best** frame on the held-out clips: a
# generous estimate of what one frame gives away.
#
# The answerers need only the symbolic clip (the `objects` column) and the questions:

# %%
def clip_pairs(ds):
    rows = ds.select_columns(["objects", *QA_COLUMNS])
    return [(Clip.from_json(row["objects"]), qa) for row in rows for qa in as_qas([row])]


train_pairs, heldout_pairs = clip_pairs(train_clips), clip_pairs(heldout_clips)
single = best_single_frame(d, train_pairs, heldout_pairs)
clip_blind = accuracy(BlindAnswerer().fit(qa for _, qa in train_pairs), [qa for _, qa in heldout_pairs])
clip_chance = {f: 1 / len({qa.answer for _, qa in heldout_pairs if qa.family == f}) for f in TEMPORAL_FAMILIES}

for t, score in single["per_frame"].items():
    print(f"single frame t={t}: {score['accuracy']:.1%}")
print(f"blind:            {clip_blind['accuracy']:.1%} of {clip_blind['examples']} held-out questions")
best = {f: b["accuracy"] for f, b in single["best_per_family"].items()}
plot_family_accuracy({"blind": clip_blind["per_family"], "best single frame": best}, clip_chance,
                     families=TEMPORAL_FAMILIES, title="Held-out accuracy from the question, or one frame")

# %% [markdown]
# **Notice:** even with the best frame chosen per family *after* seeing the held-out
# scores, one frame stays far from answering: roughly 40-50% on the full `nano` split,
# where a model that reads the whole clip can reach 100%. (In quick mode these numbers
# come from a few hundred questions: expect up to ~10 points of noise per family.) To
# answer, a model must combine frames. That is what the `video` mask preserves: each frame
# is compressed into its own VoCo tokens, and the text sees the VoCo tokens of *every*
# frame.
#
# ## 4. The tokenizer
#
# The procedural world has a closed vocabulary, so the tokenizer is word-level: one token
# per word, readable ids, nothing to train or download. It is a real `tokenizers` object
# wrapped as a `PreTrainedTokenizerFast` (it saves with `save_pretrained`). Six special
# tokens come first: padding is id 0, `<image>` is the placeholder the projected patch
# features replace, and `<voco>` is the compression token whose embedding is learned.

# %%
tok = build_tokenizer(d)
ids = special_ids(tok)
print(f"vocabulary: {len(tok)} tokens = {len(SPECIAL_TOKENS)} special + {len(tok) - len(SPECIAL_TOKENS)} words")
for token in SPECIAL_TOKENS:
    print(f"  {token:8s} id {tok.convert_tokens_to_ids(token)}")
print(ids)
print("words:", " ".join(tok.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS), len(tok))))))

# %% [markdown]
# It lowercases, splits on spaces and punctuation, and never adds BOS/EOS by itself: the
# sequence builder (`vocolab.layout.assemble`) places them, next to the image slots.

# %%
i, j = picks[-1]
question = questions[i][j]
encoded = tok(question, add_special_tokens=False)["input_ids"]
print(question)
print([f"{t}:{n}" for t, n in zip(tok.convert_ids_to_tokens(encoded), encoded)])
print("decoded:", tok.decode(encoded))

odd = tok("Is there a golden unicorn?", add_special_tokens=False)["input_ids"]
print("\nunknown words:", tok.convert_ids_to_tokens(odd))

# %% [markdown]
# Words outside the vocabulary become `<unk>`. Generated data never contains one, because
# the vocabulary is derived from the same config as the generator (a unit test proves it;
# here we check this split):

# %%
texts = [qa.question + " " + qa.answer for qa in heldout_qas] + list(heldout["caption"])
unknown = sum(tok.unk_token_id in row for row in tok(texts, add_special_tokens=False)["input_ids"])
print(f"{len(texts)} held-out questions and captions, {unknown} with an unknown word")
assert unknown == 0

# %% [markdown]
# ## 5. The model
#
# `VoCoVLM` is LLaVA-shaped: a mini **CLIP vision tower** turns the image into V patch
# features, an **MLP projector** maps them to the LLM's width, and they replace the
# `<image>` placeholders in the embedded sequence of a mini **LLaMA**. All three are built
# from `transformers` configs with random weights: nothing is downloaded. Two small extras
# sit beside them: a learned position per image patch (added by the projector,
# `llm.image_positions`) and a learned embedding per VoCo slot (`voco_slots`,
# `voco.distinct`). The compression itself lives entirely in the attention mask and the
# per-sample layouts.

# %%
torch.manual_seed(info.seed)
model = VoCoVLM(cfg, ids, len(tok)).eval()
report = model.parameter_report()
print(f"preset {info.preset}: " + ", ".join(f"{k} {v:,}" for k, v in report.items() if k != "trainable"))

# %% [markdown]
# How do the presets compare? Building a model is cheap (the `base` one, ~90 M parameters,
# takes a couple of seconds and ~400 MB), so we build all three and count:

# %%
counts = {}
for name in ("nano", "small", "base"):
    p = preset(name)
    p_tok = build_tokenizer(p.data)
    built = VoCoVLM(p, special_ids(p_tok), len(p_tok))
    counts[name] = {k: v for k, v in built.parameter_report().items() if k != "trainable"}
    print(f"{name:5s} {p.data.image_size:3d} px / {p.data.patch_size:2d} px patches -> V = {p.data.image_tokens:3d} | "
          f"{counts[name]['total']:>11,} parameters")
    del built
plot_parameter_counts(counts)

# %% [markdown]
# **Notice:** the LLM holds most of the parameters and the projector is tiny. Compute is
# another matter: the LLM's cost grows with the sequence length, and the image is most of
# the sequence (V = 64, 256, 576 tokens against a question of a dozen words). That is the
# cost VoCo compression attacks: with K = 1, the text attends to one visual token instead
# of V.
#
# ### 5.1 One batch, one forward pass per mask mode
#
# `make_batch` is the single place where text is tokenized and image slots are laid out:
# it returns right-padded token ids, one `Layout` per sample, the pixels, and labels that
# are `-100` everywhere except the answer tokens and EOS (the only positions the loss
# scores). Here: the first question of four held-out scenes.

# %%
rows = numpy_view(heldout.select(range(4)))
batch = make_batch(tok, ids, [q[0] for q in rows["question"]], [a[0] for a in rows["answer"]], rows["image"],
                   image_tokens=d.image_tokens, voco_tokens=cfg.voco.tokens)
print("input_ids", tuple(batch.input_ids.shape), "| pixels", tuple(batch.pixels.shape), batch.pixels.dtype,
      "| labels", tuple(batch.labels.shape))
layout = batch.layouts[0]
print(layout)
print("sample 0 after the VoCo tokens:", tok.decode(batch.input_ids[0, layout.text.start:layout.length]))
scored = (batch.labels[0] != -100).nonzero().flatten().tolist()
print("scored positions:", scored, "->", tok.convert_ids_to_tokens(batch.labels[0, scored].tolist()))

# %% [markdown]
# An untrained model predicts roughly uniformly over the vocabulary, so its loss should be
# close to log(vocabulary size). The three modes give slightly different losses only
# because they route random activations differently; for one image, `video` and `voco`
# are the same mask (notebook 01), hence the same loss.

# %%
print(f"log({len(tok)}) = {math.log(len(tok)):.3f}: the loss of a uniform guess")
with torch.no_grad():
    for mode in MASK_MODES:
        out = model(batch.input_ids, batch.layouts, pixels=batch.pixels, mask=mode, labels=batch.labels)
        print(f"scenes  {mode:6s} loss {out.loss.item():.3f} | logits {tuple(out.logits.shape)}")

# %% [markdown]
# A clip batch is built the same way from `[T, H, W, 3]` frames: each frame gets its own V
# image slots and K VoCo tokens. Here `video` and `voco` differ, because under `video` a
# frame's VoCo tokens may not look at the earlier frames:

# %%
clip_rows = numpy_view(heldout_clips.select(range(4)))
clip_batch = make_batch(tok, ids, [q[0] for q in clip_rows["question"]], [a[0] for a in clip_rows["answer"]],
                        clip_rows["frames"], image_tokens=d.image_tokens, voco_tokens=cfg.voco.tokens)
print("input_ids", tuple(clip_batch.input_ids.shape), "| pixels", tuple(clip_batch.pixels.shape))
with torch.no_grad():
    for mode in ("voco", "video"):
        out = model(clip_batch.input_ids, clip_batch.layouts, pixels=clip_batch.pixels, mask=mode,
                    labels=clip_batch.labels)
        print(f"clips   {mode:6s} loss {out.loss.item():.3f} | logits {tuple(out.logits.shape)}")

# %% [markdown]
# Finally, the masks the model just used for the first scene, at their real size. Compare
# them with the toy masks of notebook 01: the image now fills most of the sequence, and
# under `voco` each question and answer row keeps only the single VoCo column and its own
# past out of everything before it.

# %%
plot_mask_modes(batch.layouts[0])

# %% [markdown]
# ## Exercises
#
# 1. Re-run sections 1-2 with `info.config.override(**{"data.max_objects": 8, "data.grid": 6})`
#    (the `small` preset's scene knobs at this image size). Does the blind answerer's `count`
#    accuracy go up or down, and why?
# 2. Compare `BlindAnswerer("template")` with `BlindAnswerer("question")` per family. Where
#    does memorising exact questions help, where does it hurt, and why?
# 3. `best_single_frame` returns `per_frame` scores. For `direction`, which frame is best?
#    What can a single frame reveal about a direction at all? (Hint: borders.)
# 4. Tokenize `"What colour is the SQUARE?"`. Which tokens come out, and why is one of them
#    `<unk>`?
# 5. For the `base` preset and a 10-token question plus a 2-token answer, how long is the
#    sequence with K = 1, and what fraction of it are image tokens? How many keys does the
#    first answer token attend to under `causal` and under `voco`?
# 6. Build the batch of section 5.1 with `cfg.override(**{"voco.tokens": 4})` and redraw
#    the mask. What changes in the layout, and in the loss of the untrained model?

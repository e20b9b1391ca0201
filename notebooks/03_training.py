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
# # 03 · Training VoCo-LLaMA: four stages, one mask apart
#
# Notebooks 01 and 02 built the mask, the data and an untrained model. Here we train it.
# VoCo-LLaMA adds **no compression module**: the same LLM is trained twice on the same
# questions, once with the plain `causal` mask (it may read all V image tokens: the
# *upper bound*) and once with the `voco` mask (it may read only K VoCo tokens: the
# *VoCo model*). Everything the VoCo model learns about compressing images happens in
# that second stage, through the mask alone.
#
# In this notebook you will:
#
# 1. read the recipe: what each stage trains, on which data, under which mask, from which weights;
# 2. look at a training sample of each kind (caption, multi-turn QA) and what the loss scores;
# 3. train all four stages with `run_recipe` and read their wall times and loss curves;
# 4. see **where the VoCo model learns to compress**: the jump in loss when the image is
#    hidden, and how much of it the `voco` stage wins back;
# 5. evaluate Table 1 in miniature (upper bound, lower bound, blind, VoCo) with retention.
#
# In quick mode (`VOCOLAB_QUICK=1`, what CI runs) every stage trains for 10 steps on 200
# scenes: the notebook runs in well under a minute and **its numbers mean nothing**. Without
# quick mode it trains the preset's real recipe (minutes on a CPU for `nano`).

# %%
from vocolab import lab

# minutes on this project's 2-core CPU; real mode trains the nano recipe: the main job's stages
info = lab.setup(minutes={"quick": 0.4, "cpu": 19})

# %%
import csv
import json
import math
from pathlib import Path

import torch
from IPython.display import Markdown, display

import vocolab
from vocolab.data import FAMILIES
from vocolab.evaluation import standard_runs
from vocolab.reporting import (plot_confusion, plot_family_accuracy, plot_mask_modes, plot_training_curves,
                               stage_losses, table1_markdown)


# %% [markdown]
# ## 1. The recipe
#
# | stage | trains | frozen | data | mask | starts from |
# |---|---|---|---|---|---|
# | `clip` | mini CLIP vision + text towers, contrastive | - | (scene, caption) pairs | - | random |
# | `pretrain` | projector + LLM | CLIP vision tower | captions, all V image tokens | `causal` | `clip`'s vision tower |
# | `upper` | projector + LLM | CLIP vision tower | questions and answers | `causal` | `pretrain` |
# | `voco` | projector + LLM (+ the VoCo embedding) | CLIP vision tower | the same questions | `voco`, K tokens | `upper` (also its teacher) |
#
# * **`clip`** gives the model eyes. A tiny CLIP learns to match each scene with its
#   caption (InfoNCE over the batch: each image must pick out its own caption among the
#   others). Only its vision tower is kept.
# * **`pretrain`** aligns the vision features with the LLM (LLaVA's stage 1): the LLM
#   learns to *describe* a scene from all V projected patch tokens. The vision tower is
#   frozen from here on, so its features never change: they are computed **once** for
#   every image and reused at every step (LLaVA-style). On a CPU that is the largest
#   single speed-up of the recipe: no training step ever runs the vision tower again.
# * **`upper`** teaches the LLM to answer questions while it can see every image token.
#   The K VoCo tokens are already in the sequence (so it is laid out exactly like the
#   VoCo model's), but the `causal` mask does not force anything through them. This is the
#   **upper bound**: the best this LLM does with the full image.
# * **`voco`** is the same code with one argument changed, `mask="voco"`: now text may only
#   read the VoCo tokens. It starts from the upper-bound model, which already knows how to
#   answer; what it must learn is to pack the image into the VoCo tokens' keys and values,
#   in every layer. The official code trains with plain next-token loss under this mask
#   and no teacher: the compression is distilled *implicitly*. vocolab's recipe adds one
#   term (`train.voco_objective = "attention"`, notebook 06): the frozen upper-bound model
#   reads the same batch under `causal`, and the student's hidden states at the text
#   positions are pulled towards the teacher's (mean squared error, every layer). At `nano`
#   that reached a higher held-out accuracy in fewer steps than next-token loss alone (RESULTS.md).
#
# The **lower bound** needs no training: it is the upper-bound model evaluated under the
# `voco` mask, a model that was never asked to put anything into its VoCo tokens.
#
# `lab.main_config(info)` is the config `vocolab quickstart` runs: in quick mode the preset
# shrunk to a few steps and scenes; outside quick mode the preset itself with this
# notebook's seed.

# %%
cfg = lab.main_config(info)  # the preset, shrunk in quick mode as `vocolab quickstart` does
t = cfg.train
print(f"preset {cfg.preset}: V = {cfg.data.image_tokens} image tokens, K = {cfg.voco.tokens} VoCo token(s), "
      f"{cfg.data.train_scenes} training scenes, {cfg.data.heldout_scenes} held-out scenes")
for stage, steps, batch in [("clip", t.clip_steps, t.clip_batch_size), ("pretrain", t.pretrain_steps, t.batch_size),
                            ("upper", t.instruct_steps, t.batch_size), ("voco", t.voco_steps, t.batch_size)]:
    print(f"  {stage:8s} {steps:5d} steps x batch {batch}")
print(f"lr {t.lr} (AdamW, {t.warmup_frac:.0%} warm-up, cosine) | multi-turn QA samples: {t.turns}")

# %% [markdown]
# ### What each stage reads
#
# `run_recipe` builds one `VoCoDataModule` and switches its task between stages
# (`set_task`); we build it ourselves so we can look at a sample first, then hand it to
# `run_recipe`. The first training scene as a `caption` sample (the `pretrain` stage) and
# as a `qa` sample (the `upper` and `voco` stages). With `train.turns` every question of an
# image is packed into one sequence, `[BOS][IMG][VOCO] q1 a1 EOS q2 a2 EOS ...`: the
# image prefix, most of the sequence, is paid once for all its questions.
#
# The loss scores only the **answer tokens and their EOS** (labels elsewhere are -100):
# the model is never trained to predict the image placeholders or the questions.

# %%
data = lab.data(cfg, progress=not info.quick)
train, heldout = data.splits["train"], data.splits["heldout"]
tok = data.tokenizer


def show(batch, what):
    layout, ids, labels = batch.layouts[0], batch.input_ids[0], batch.labels[0]
    scored = (labels != -100).nonzero().flatten().tolist()
    print(f"{what}: {layout.length} tokens, of which {len(layout.image_positions())} image and "
          f"{len(layout.voco_positions())} VoCo")
    print("  after the VoCo tokens:", tok.decode(ids[layout.text.start:layout.length]))
    print("  scored by the loss:   ", " ".join(tok.convert_ids_to_tokens(labels[scored].tolist())), "\n")


show(data.set_task("caption").collate(train, [(0, -1)]), "caption sample (pretrain)")
show(data.set_task("qa").collate(train, [(0, -1)]), "multi-turn QA sample (upper, voco)")

# %% [markdown]
# The `upper` and `voco` stages read exactly these sequences. The only thing that differs is
# the mask they are trained under. Here it is for one question about the same scene (laid
# out the way evaluation asks it):

# %%
single = data.collate(train, [(0, 0)])
plot_mask_modes(single.layouts[0], modes=("causal", "voco"))

# %% [markdown]
# **Notice** the Q/A rows: on the left they read every IMG column (upper bound), on the
# right only the single VOCO column. The IMG and VOCO rows are the same in both panels: the
# VoCo token always reads the whole image. Training under the right-hand mask is what turns
# it into a summary of the image.
#
# ## 2. Train the four stages
#
# `run_recipe` runs the stages in order, each a Lightning `Trainer.fit`, each initialised
# from the previous stage's weights. Every stage writes `metrics.csv` (and checkpoints)
# under `out/<stage>/`; we start from an empty folder so the logs hold this run only.

# %%
trained = lab.train_recipe(cfg, "notebook03", data_module=data, progress=not info.quick)
RUNS = lab.runs_folder("notebook03", fresh=False)
print("logs and checkpoints:", RUNS)

# %%
total = sum(trained.seconds.values())
for stage, seconds in trained.seconds.items():
    print(f"{stage:8s} {seconds:7.1f} s  ({seconds / total:.0%})")
print(f"{'total':8s} {total:7.1f} s on {info.device.type}")

for module in (trained.upper, trained.voco):
    module.to(info.device).eval()  # Lightning hands models back on the CPU after fit
upper = trained.upper.model
n_train = sum(p.numel() for p in trained.upper.parameters() if p.requires_grad)
n_all = sum(p.numel() for p in trained.upper.parameters())
print(f"\nupper/voco stages train {n_train:,} of {n_all:,} parameters (the vision tower is frozen)")
print("frozen CLIP features computed once per image:", tuple(train.features.shape), "(train),",
      tuple(heldout.features.shape), "(held-out)")

# %% [markdown]
# **Notice:** `upper` and `voco` read the same sequences and cost about the same per
# step: the mask changes *which* scores are kept, not how many are computed (dense
# attention computes the masked ones too). `clip` still runs the vision tower forward and
# backward on pixels at every step; the VLM stages only read the cached features. (On a
# busy machine wall times wander by a factor of two or more; compare them within one run.)
#
# ## 3. Loss curves
#
# One curve per stage, read back from each stage's `metrics.csv` (a moving average over a
# few logged steps). The stages optimise different things, so compare each curve with
# its own start, not with the others:
#
# * `clip`: the contrastive loss; guessing gives log(batch size);
# * `pretrain`: next-token loss on the caption words;
# * `upper` and `voco`: next-token loss on the answer words.
#
# A stage that does not descend from its start has not learned anything yet. In quick
# mode (10 steps per stage) you mostly see the warm-up.

# %%
print(f"guessing: clip log({t.clip_batch_size}) = {math.log(t.clip_batch_size):.2f}, "
      f"next token log({len(tok)}) = {math.log(len(tok)):.2f}")
logs = {stage: RUNS / stage / "metrics.csv" for stage in trained.seconds}
plot_training_curves(logs)

# %% [markdown]
# ## 4. Where the VoCo model learns to compress
#
# Put the two QA stages next to each other. The `voco` stage starts from the weights the
# `upper` stage ended with, so any difference at its first step comes from the mask alone:
#
# * **the jump** from `upper`'s last loss to `voco`'s first is what hiding the image costs
#   a model that never learned to compress: that is the lower bound, in loss instead of accuracy;
# * **the descent** during the `voco` stage is the compression being learned: the model
#   rewires its layers so that the VoCo token's keys and values carry what the answers need;
# * **the gap that remains** between the end of `voco` and the end of `upper` is the
#   price of compressing V tokens into K.
#
# Training losses are noisy, one batch per point. So we also measure the three losses on
# the same held-out batch, teacher-forced: the upper-bound model under `causal`, the same
# model under `voco` (the lower bound), and the VoCo model under `voco`.

# %%
plot_training_curves({"upper": logs["upper"], "voco": logs["voco"]})


# %%
def losses(path):
    """The next-token loss per logged step (a distilled stage's `train/ce`: its
    `train/loss` also holds the distillation term)."""
    with open(path) as f:
        return [loss for _, loss in stage_losses(list(csv.DictReader(f)))]


up, vo = losses(logs["upper"]), losses(logs["voco"])
print(f"training loss, upper stage: {up[0]:.3f} -> {up[-1]:.3f}")
print(f"training loss, voco stage:  {vo[0]:.3f} -> {vo[-1]:.3f} (jump at the switch: {vo[0] - up[-1]:+.3f})")

batch = next(iter(data.val_dataloader())).to(info.device)  # the validation split, one question per sequence
with torch.no_grad():
    held = {
        "upper model, causal mask (upper bound)": trained.upper(batch, mask="causal").loss.item(),
        "upper model, voco mask   (lower bound)": trained.upper(batch, mask="voco").loss.item(),
        "VoCo model,  voco mask   (VoCo-LLaMA) ": trained.voco(batch, mask="voco").loss.item(),
    }
print(f"\nvalidation answer loss on {len(batch)} questions (scenes never trained on):")
for name, value in held.items():
    print(f"  {name}  {value:.3f}")
hi, lo, vc = held.values()
if lo - hi > 1e-3:
    print(f"the VoCo stage closed {(lo - vc) / (lo - hi):.0%} of the loss gap opened by hiding the image")

# %% [markdown]
# With the real recipe the picture is clear: hiding the image from the upper-bound model
# sends its answer loss up towards what the question alone allows, and the `voco` stage
# brings most of it back within its first few hundred steps. In quick mode the models have
# seen 10 batches each: the losses barely move from their starting values and the "gap
# closed" can be anything, even negative. Read the mechanism here; read numbers from a
# real run.
#
# ## 5. Table 1 in miniature
#
# `standard_runs` answers the same held-out questions four ways, by greedy decoding with
# exact match (docs/architecture.md, "Results files"):
#
# | run | model | mask | what it measures |
# |---|---|---|---|
# | `upper` | upper-bound model | `causal`, all V image tokens | the ceiling |
# | `lower` | upper-bound model | `voco`, K tokens | hiding the image from a model never trained to compress |
# | `blind` | majority answer per question template | no image | what the questions give away |
# | `voco-k1` | VoCo model | `voco`, K tokens | VoCo-LLaMA |
#
# **Retention** = (VoCo − lower) / (upper − lower), computed from bounds measured in the
# same run on the same questions: 100% means compression is free, 0% means the VoCo
# tokens carry nothing the lower bound did not have. The paper reports 83.7% on average
# for 576 → 1 tokens (the VoCo-LLaMA paper, Table 1). The VoCo runs answer from a VoCo cache
# (notebook 04), which is exactly the masked forward, only cheaper.
#
# **In quick mode the models trained above answer no better than chance**: ten steps per stage
# do not teach a model to answer (expect accuracies near or below blind, and a retention of `-`
# when the two bounds coincide). So right after their table comes the same table for the upper
# bound and VoCo model the repository ships (`trained/nano`, trained by this recipe in full),
# on the same questions.

# %%
K = cfg.voco.tokens
runs, qs = standard_runs(upper, {f"voco-k{K}": trained.voco.model}, tok, train, heldout, FAMILIES,
                         limit=300 if info.quick else None, progress=not info.quick, confusion=("spatial",))
print(f"{len(qs)} held-out questions about {len(set(qs.item.tolist()))} scenes")
display(Markdown(table1_markdown(runs, FAMILIES)))

# %%
if lab.use_shipped(info):
    shipped_upper, shipped_voco = lab.shipped("upper")[0], lab.shipped("voco")[0]
    shipped_k = shipped_voco.cfg.voco.tokens
    shipped_runs, _ = standard_runs(shipped_upper, {f"voco-k{shipped_k}": shipped_voco}, tok, train, heldout,
                                    FAMILIES, limit=300 if info.quick else None, progress=not info.quick,
                                    confusion=("spatial",))
    display(Markdown("**The shipped models**, same questions:\n\n" + table1_markdown(shipped_runs, FAMILIES)))

# %%
chance = {f: 1 / len({a for a, g in zip(qs.answers, qs.families) if g == f}) for f in FAMILIES}
plot_family_accuracy({r["name"]: r["per_family"] for r in runs}, chance, families=FAMILIES,
                     title=f"held-out exact match per family ({cfg.preset}, {'quick mode' if info.quick else 'full run'})")

# %% [markdown]
# How to read it:
#
# * `upper` far above `blind`: the model uses the image. If it is not, nothing below means
#   anything (read `count` against its blind bar: notebook 02);
# * `lower` near or below `blind`: the upper-bound model's VoCo token carries little, and
#   its text never had to live without the image tokens;
# * `voco-k1` between them, as close to `upper` as compression allows; its retention is
#   the headline number.
#
# The full `nano` run is made by `make quickstart` without quick mode; RESULTS.md shows its Table 1,
# rendered from `figures/quickstart/results.json`, which also records the command, commit
# and wall time that produced it:

# %%
results = Path(vocolab.__file__).resolve().parents[1] / "figures" / "quickstart" / "results.json"
if results.exists():
    body = json.loads(results.read_text())
    prov = body["provenance"]
    print(f"{results}: `{prov['command']}`, commit {prov['commit'][:10]}, preset {prov['preset']}, "
          f"device {prov['device']}, {prov['wall_s']:.0f} s, {body['eval']['examples']} held-out questions")
    display(Markdown(table1_markdown(body["runs"], body["eval"]["families"])))
else:
    print(f"no {results} yet: run `make quickstart` (without VOCOLAB_QUICK) to produce the real numbers")

# %% [markdown]
# ### How `spatial` goes wrong
#
# `spatial` is the family the recipe learns last, and the one that moves most between seeds
# and processors (RESULTS.md). Its accuracy hides *how* a model fails. A spatial question
# names two objects that share a row or a column, and the answer is a direction. A wrong
# answer can pick the wrong axis ("above" for two objects in one row) or the right axis in
# the wrong order ("right" for "left"). The two call for different fixes: the first model
# has not found which line the objects share, the second has found it but not which end
# each object sits at.
#
# `standard_runs(..., confusion=("spatial",))` (above) counts, for each gold direction, which
# answer each model gave (`vocolab.evaluation.confusion`; `vocolab eval --confusion spatial`
# on the command line). A cell's colour is the share of its row. Each panel's title splits
# the accuracy into the axis (share of answers on the gold answer's axis) and the order (of
# those, the share exactly right). Guessing gets 50% on each.

# %%
shown = shipped_runs if lab.use_shipped(info) else runs
plot_confusion({r["name"]: r["confusion"]["spatial"] for r in shown if "confusion" in r}, "spatial")

# %% [markdown]
# Read `upper` first: where its errors sit is what the recipe failed to teach. Then `lower`:
# the upper-bound model with the image hidden behind one VoCo token it never learned to
# fill. Then `voco-k1`: what the one trained token keeps. An axis near 100% with the order
# near 50% means the compressed token keeps which line the two objects share but not
# which end each sits at. RESULTS.md gives these figures for the full runs on three seeds.

# %% [markdown]
# ## Exercises
#
# 1. **Change K.** Train with `cfg.override(**{"voco.tokens": 4})` (or `--set voco.tokens=4` on
#    the command line). Does retention go up, as in the paper's Table 2 (83.8% at K = 1,
#    90.4% at K = 4)? How much longer is each training sequence?
# 2. **Change the objective.** Train the last stage with the official code's loss,
#    `cfg.override(**{"train.voco_objective": "implicit"})`, and with `"logits+attention"`.
#    Which closes more of the gap for the same wall time (the teacher's forward is not free)?
# 3. **Change the steps.** Outside quick mode, halve and double `train.voco_steps`
#    (`cfg.override(**{"train.voco_steps": 1000})`). Where does the `voco` loss curve flatten,
#    and does the held-out retention follow the loss?
# 4. **Start the VoCo model from `pretrain` instead of the upper bound.** The recipe's last
#    stage is one call; change its `init=` and train it into another folder:
#
#    ```python
#    from vocolab.training import vlm_stage
#
#    voco_from_pretrain = vlm_stage(cfg, data, RUNS, "voco-from-pretrain", task="qa", mask="voco",
#                                   steps=cfg.train.voco_steps, init=trained.pretrain)  # was init=trained.upper
#    ```
#
#    Evaluate it next to `voco-k1` with `standard_runs(upper, {"voco-k1": trained.voco.model,
#    "voco-from-pretrain": voco_from_pretrain.model}, ...)` and compare their loss curves.
#    What does starting from a model that already answers buy? (Without `teacher=` the
#    stage trains with next-token loss alone; pass `teacher=trained.upper` to distil too.)
# 5. **Multi-turn packing.** Train with `cfg.override(**{"train.turns": False})` (one question
#    per sequence). How do the wall time per step and the number of answers seen per step
#    change? Which one matters for a fixed budget of wall time?
# 6. **The lower bound.** Evaluate the `pretrain` model under `causal` on the held-out
#    questions (`vocolab.evaluate.model_run`). It has only ever written captions: can it
#    answer anything? Compare with `blind`.

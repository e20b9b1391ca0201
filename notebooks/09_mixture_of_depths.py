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
# # 09 · Mixture of depths: let most video tokens skip most layers
#
# Every compressor so far (VoCo tokens, pooling, FastV, PruMerge) makes the LLM see **fewer**
# vision tokens. VideoLLM-MoD (Wu et al. 2024, arXiv 2408.16730) keeps **all** of them and
# instead lets most of them **skip layers**. Video is very redundant: from one frame to the
# next most patches show the same background, and within a frame most patches are empty. A
# token that has nothing new to say does not need every layer's attention and MLP. It can
# pass a layer unchanged and still be there, at full resolution, for the layers where it is
# computed.
#
# In this notebook you will:
#
# 1. see the idea and its cost: which layers route, how many tokens each frame keeps, and
#    what that saves by the FLOP formula (`mod_flops_ratio`);
# 2. wrap a trained scene model in a `MoDVLM` and look at **which tokens the router keeps** in
#    each frame and layer, drawn over the frames, before and after training on clip QA (the
#    trained MoD model ships with the repository);
#    check that skipped tokens really leave a layer unchanged and write no K/V;
# 3. run the study (`vocolab mod`): full computation against MoD with a **learned**,
#    **random** and **uniform** choice of tokens, same steps, same seed; read the
#    cost/accuracy table honestly;
# 4. exercises: the share `r`, the choice of layers, the router's initialisation.

# %%
from vocolab import lab

# minutes on this project's 2-core CPU; cpu: the MoD study, 18.2 min measured with frame embeddings
info = lab.setup(minutes={"quick": 0.5, "cpu": 19})

# %%
import math

import pandas as pd
import torch
from IPython.display import Markdown, display

from vocolab.core.config import Config
from vocolab.core.layout import assemble, build_layout
from vocolab.data import build_tokenizer
from vocolab.reporting import mod_markdown, plot_clip, plot_mod, plot_mod_routing
from vocolab.training import MoDModule, fine_tune
from vocolab.zoo import mod_config, mod_flops
from vocolab.zoo.mod import MoDVLM


# %% [markdown]
# ## 1. The idea
#
# A clip of T frames is laid out like in notebook 07, `[BOS] ([IMG x V][VOCO x K]) x T [question] [answer]`,
# but under the plain **causal** mask: MoD does not compress anything into VoCo tokens (the
# VoCo slots are simply more text-like tokens here). What changes is *how much of each layer*
# a vision token gets:
#
# * some decoder layers are **MoD layers**: `all` of them, every other one (`interleaved`,
#   layers 1, 3, 5, ..., the paper's best trade-off) or the second half (`deep`);
# * in a MoD layer, a small **router** (one `Linear(d, 1)` per MoD layer, the only new
#   parameters) scores every vision token, and **per frame** only the top
#   `k = ceil(r · V)` are computed (the paper uses r = 0.2: 80 % of the tokens skip). Routing
#   per frame, not over the whole clip, guarantees every frame keeps some tokens;
# * a computed vision token gets `h + w · (layer(h) − h)` with the gate `w = sigmoid(score)`:
#   the top-k choice itself has no gradient, the gate gives the router one (the paper's
#   `x + μ f(x)`);
# * a **skipped** token leaves the layer bit for bit unchanged. It is not in the layer's
#   input at all, so it also writes **no keys and values** there, and nothing attends to it in
#   that layer: a smaller KV cache as well as less compute;
# * **text is always computed**: BOS, the VoCo slots, the question and the answer.
#
# The layer runs on the shorter sequence `n̂ = n − T (V − k)` with the tokens' *original*
# position ids, so RoPE is unchanged. Per decoder layer at `n` tokens (hidden size `d`, K/V width
# `d_kv`, MLP width `f`), the forward costs
#
# $$C(n) = \underbrace{2nd\,(2d + 2d_{kv})}_{q,\,k,\,v,\,o} + \underbrace{6ndf}_{\text{MLP}} + \underbrace{4n^2 d}_{\text{attention}},$$
#
# so MoD costs $\sum_{\text{plain}} C(n) + \sum_{\text{MoD}} C(\hat n) + 2nd\cdot|\text{MoD}|$ (router) $+\ 2nd\,|\text{vocab}|$ (LM head),
# against $L\,C(n) + 2nd\,|\text{vocab}|$ for the plain model. Training (forward + backward) counts
# 3× the matmuls and 3.5× the attention (`mod_flops(..., training=True)`). `mod_flops_ratio`
# gives the quotient, here for the shape of one clip of this preset and an 8-token question:

# %%
cfg = lab.study_config(info)  # the studies' config: their base model is shared
T, V, K, L = cfg.data.frames, cfg.image_slots, cfg.voco.tokens, cfg.llm.layers
vocab = len(build_tokenizer(cfg.data))
shape = build_layout(question_len=8, answer_len=0, frames=T, image_tokens=V, voco_tokens=K)
print(f"preset {cfg.preset}: {T} frames x {V} vision tokens (+ {K} VoCo slot each) + an 8-token question "
      f"= {shape.length} tokens, {len(shape.image_positions()) / shape.length:.0%} of them vision; {L} layers")
print("MoD layers:", {choice: mod_config.mod_layer_indices(L, choice) for choice in mod_config.LAYER_CHOICES})

RS = (0.2, 0.5, 1.0)
pd.DataFrame({(kind, layers): {f"r = {r} (k = {mod_config.selected_per_frame(r, V)} of {V})":
                                   mod_flops.mod_flops_ratio(cfg, vocab, shape.length, T, V, r, layers,
                                                   training=kind == "training")
                               for r in RS}
              for kind in ("forward", "training") for layers in mod_config.LAYER_CHOICES}).round(3)

# %% [markdown]
# **Notice:**
#
# * with `all`, the cost falls to about `r`. Here 95 % of the tokens are vision tokens and
#   attention shrinks quadratically, which makes up for the text and the LM head, which are
#   always paid. With `interleaved` half the layers stay full, so the cost cannot fall below
#   about 0.5 + 0.5 · n̂ / n, whatever `r` is;
# * at r = 1 every token is computed, and the learned router only *adds* cost. Here that is one
#   `Linear(d, 1)` per MoD layer, too little to show at three decimals;
# * with this preset's few layers, `interleaved` and `deep` route the same *number* of layers
#   and cost the same. They differ in *which* layers see every token: early layers (`deep`) or
#   every other one (`interleaved`);
# * the attention term is quadratic in `n`, so with longer videos the saving of a MoD layer
#   grows toward `(n̂ / n)²` for attention. The paper's 0.6× training FLOPs is for a 7-8B model on
#   long streams.
#
# ## 2. A MoD model on one held-out clip
#
# Every MoD model starts from an upper-bound (causal) scene model. For `nano` the repository
# ships one (`trained/nano/upper`) and the MoD model trained from it by `vocolab mod`
# (`trained/nano/mod`), so what you see below is a trained router, in quick mode too.
# **To train your own**, set `RETRAIN = True`: the studies' shared base model is then reused
# from the cache or trained first, and the MoD model is fine-tuned here (3 steps in quick mode;
# the study's budget, several minutes on a CPU, otherwise). The clip QA data are the temporal
# clips of notebook 07; in quick mode only a few of them, as in the study.

# %%
RETRAIN = False  # True: train the base model (if needed) and the MoD model here

progress = not info.quick
clip_cfg = lab.clip_config(cfg)  # fewer clips in quick mode, as the study
shipped = lab.use_shipped(info, RETRAIN)
upper = lab.shipped("upper")[0] if shipped else lab.study(cfg, progress=progress).upper
data = lab.data(clip_cfg, kind="clips", progress=progress)
held, tok = data.splits["heldout"], data.tokenizer

CLIP = 0
clip = held.images[CLIP]  # [T, H, W, 3] uint8
for question, gold, family in zip(held.questions[CLIP], held.answers[CLIP], held.families[CLIP]):
    print(f"{family:14s} {question:50s} {gold}")
plot_clip(clip, held.captions[CLIP])

# %% [markdown]
# `MoDModule` is the usual training module with the LLM wrapped in a `MoDVLM` (r = 0.2,
# interleaved, learned routing). We load the base model's weights into it. The router is new
# and untrained, so first we look at what it chooses *before* any training: the top-k of a
# random linear function of the hidden states.

# %%
R, LAYERS = 0.2, "interleaved"
torch.manual_seed(cfg.seed)
module = MoDModule(clip_cfg, stage="notebook09-learned", steps=1, r=R, layers=LAYERS, selection="learned",
                   seed=cfg.seed)
module.model.load_backbone(upper.state_dict())
mod = module.model
n_router = sum(p.numel() for p in mod.router_parameters())
print(f"MoD layers {mod.mod_layers} of {L}; k = {mod.k} of {V} vision tokens per frame computed there; "
      f"router parameters {n_router} of {sum(p.numel() for p in mod.parameters()):,}")

question, gold = held.questions[CLIP][0], held.answers[CLIP][0]
q_ids = tok(question, add_special_tokens=False)["input_ids"]
ids, layout = assemble(q_ids, [], mod.special, frames=T, image_tokens=V, voco_tokens=K, add_eos=False)
ids, pixels = torch.tensor([ids]), torch.from_numpy(clip[None])  # one clip: [1, T, H, W, 3]

mod.eval()
with torch.no_grad():
    mod(ids, [layout], pixels=pixels, mask="causal")
untrained = {rec.layer: set(rec.selected_of(0)) for rec in mod.records}
for rec in mod.records:
    gate = torch.sigmoid(rec.scores[0, rec.selected_of(0)])
    print(f"layer {rec.layer}, untrained router: mean gate of the kept tokens {gate.mean():.3f}")
plot_mod_routing(clip, mod.records, layout)

# %% [markdown]
# Bright patches are computed in that layer, dark ones skip it: k of the V patches of every
# frame (13 of 64 for nano), chosen independently per frame and per layer.
#
# Look at the gates. The router is `nn.Linear`'s default initialisation applied to hidden states
# with a large shared component, so `sigmoid(score)` does *not* start near 0.5. Every token of a
# layer gets about the same score, far from zero, and the sign of that shared part is chance.
# Where the gate starts small, each computed vision token gets only a fraction of the update the
# base model was trained with: the `learned` variant starts from a perturbed model, while
# `random` and `uniform` (gate 1) do not. Exercise 3 is about this.
#
# Now the trained MoD model: model and router fine-tuned together on clip QA for the study's
# budget (`lab.study_steps()` steps). With the shipped models it is loaded; with `RETRAIN` it is
# trained here (3 steps in quick mode, which only shows that training runs).

# %%
if shipped:
    mod = lab.shipped("mod")[0]  # its line says which command trained it
else:
    STEPS = 3 if info.quick else lab.study_steps()
    module.steps = STEPS
    mod = fine_tune(module, data, clip_cfg, lab.runs_folder("notebook09"), module.stage, STEPS, init=upper,
                    progress=progress)

mod.trace = True  # also keep every MoD layer's input and output hidden states
with torch.no_grad():
    out = mod(ids, [layout], pixels=pixels, mask="causal", use_cache=True)
for rec in mod.records:
    kept = set(rec.selected_of(0))
    gate = torch.sigmoid(rec.scores[0, sorted(kept)]).mean().item()
    print(f"layer {rec.layer}, trained: mean gate of the kept tokens {gate:.3f}; "
          f"{len(kept & untrained[rec.layer]) / len(kept):.0%} of them were also kept before training")
plot_mod_routing(clip, mod.records, layout)

# %% [markdown]
# **Which tokens does the trained router keep?** Compare the two figures. The choice changes as
# the router *and* the layers below it train, because the router scores hidden states, not
# pixels. With `RETRAIN` in quick mode (a few steps) this shows only that the machinery runs.
# The shipped model trained for the study's full budget (`make mod`: 1,600 steps on 8,000 clips)
# from the scene model tuned on clip-frame scenes, and learned the clip task (0.87 on its check,
# blind 0.25; `direction` 1.00). In the study below its learned routing keeps 0.93 of the full
# model's accuracy but is within noise of random and uniform routing (0.863 against 0.865 and
# 0.859), so do not read its choices as the patches the task needs. Look at the patches the
# router prefers. Are they the objects, or the cells where something moved between frames? Are
# they runs of neighbouring patches, which would mean the score mostly follows position? Does
# every frame get the same pattern?
#
# The ranking behind the choice, the router's scores scaled to [0, 1] within each frame:

# %%
plot_mod_routing(clip, mod.records, layout, scores=True)

# %% [markdown]
# ### Skipped tokens are untouched and write no K/V
#
# With `trace = True` each `LayerRecord` holds the hidden states before and after its layer.
# Below, per decoder layer: how many vision tokens were computed and skipped, the largest change
# of any skipped token (it must be exactly 0), the smallest change of any computed one, and the
# K/V entries each layer wrote. Those are counted from the real cache (`use_cache=True`) and
# predicted by `kv_tokens_per_layer`.

# %%
vision = set(layout.image_positions())
cache_kv = [layer.keys.shape[-2] for layer in out.past_key_values.layers]
predicted_kv = mod.kv_tokens_per_layer(layout)
records = {rec.layer: rec for rec in mod.records}
rows = []
for layer in range(L):
    row = {"layer": layer, "MoD": layer in records, "K/V entries (cache)": cache_kv[layer],
           "K/V entries (predicted)": predicted_kv[layer]}
    if layer in records:
        rec = records[layer]
        skipped = sorted(vision - set(rec.selected_of(0)))
        computed = [p for p in range(layout.length) if p not in skipped]
        change = (rec.after[0] - rec.before[0]).abs().amax(-1)  # largest change per position
        assert torch.equal(rec.after[0, skipped], rec.before[0, skipped])
        row |= {"vision computed": len(vision) - len(skipped), "vision skipped": len(skipped),
                "text computed": layout.length - len(vision), "max |Δh| skipped": change[skipped].max().item(),
                "min |Δh| computed": change[computed].min().item()}
    rows.append(row)
assert cache_kv == predicted_kv
print(f"{layout.length} tokens; K/V entries over all layers: {sum(cache_kv)} of {L * layout.length} "
      f"({sum(cache_kv) / (L * layout.length):.2f}x)")
pd.DataFrame(rows).set_index("layer")

# %% [markdown]
# **Notice** that the skipped tokens are *exactly* unchanged, not approximately. They are
# gathered out of the layer's input and written back as they were. Each MoD layer holds
# `text + T·k` keys instead of all `n`: the cache of a long stream shrinks in those layers by
# about the same factor as the compute.
#
# One more consequence of the causal layout: the vision tokens come *before* the question, and
# nothing at a vision position can see the question. So the router's choice cannot depend on
# what is asked. The same clip with another question gives the same routing. This is what makes
# MoD fit streaming, where frames arrive before any question. It also means the router learns
# what is generally worth computing, not what this question needs:

# %%
other = held.questions[CLIP][1]
ids2, layout2 = assemble(tok(other, add_special_tokens=False)["input_ids"], [], mod.special, frames=T,
                         image_tokens=V, voco_tokens=K, add_eos=False)
first = [rec.selected.clone() for rec in mod.records]
with torch.no_grad():
    mod(torch.tensor([ids2]), [layout2], pixels=pixels, mask="causal")
same = all(torch.equal(a, rec.selected) for a, rec in zip(first, mod.records))
print(f"{question!r} and {other!r}: same tokens kept in every MoD layer: {same}")
assert same

# %% [markdown]
# The two baselines of the ablation pick their k tokens without looking at the content:
# **random** draws k per frame (a seeded generator, a new draw every forward) and **uniform**
# takes the centre patch of each of k grid cells, the same every frame. Neither has a gate
# (w = 1). On the same clip, at the first MoD layer:

# %%
first_layer = mod.mod_layers[0]
rows, names = [records[first_layer]], [f"learned L{first_layer}"]
for selection in ("random", "uniform"):
    baseline = MoDVLM(mod.vlm, r=R, layers=LAYERS, selection=selection, seed=cfg.seed).eval()
    with torch.no_grad():
        baseline(ids, [layout], pixels=pixels, mask="causal")
    rows.append(baseline.records[0])
    names.append(f"{selection} L{first_layer}")
plot_mod_routing(clip, rows, layout, names=names)

# %% [markdown]
# ## 3. The study: learned against random against uniform
#
# `lab.run_mod_study` (the `vocolab mod` command) starts every variant from the same base model and
# fine-tunes it on clip QA for the same steps, with the same seed and the same data order:
#
# | variant | what the MoD layers compute |
# |---|---|
# | `full` | every token: the plain causal model, the reference |
# | `learned` | text + the top-k vision tokens per frame by a learned, gated router |
# | `random` | text + k random vision tokens per frame |
# | `uniform` | text + k spatially even vision tokens per frame |
#
# It reports held-out accuracy per family and four costs, each measured, not assumed:
#
# * **train FLOPs per step**: `FlopCounterMode` over forward + backward of one fixed training batch;
# * **activations**: the bytes autograd saves for that batch. This is the part of training memory
#   that MoD shrinks, and it is comparable on any device;
# * **step time**: the median wall-clock time of an optimiser step on this machine, the first step
#   left out as warm-up;
# * **K/V tokens**: the cache entries of one clip and question summed over the layers.
#
# Set `LOAD_COMMITTED = True` to read the study committed in `figures/mod/` (made by `make mod`)
# when it exists. Otherwise the study runs here. In quick mode (`VOCOLAB_QUICK=1`, as in the tests)
# it uses few clips and 3 steps per variant (the step time is the median of the last two), so its
# numbers only show that the machinery works.

# %%
LOAD_COMMITTED = False
OUT = lab.runs_folder("notebook09-study", fresh=info.quick)  # quick mode: always rerun; otherwise resume
body = lab.study_results("mod", lambda: lab.run_mod_study(info.preset, OUT, seed=info.seed, r=R, layers=LAYERS,
                                                           steps=3 if info.quick else None, progress=progress),
                         load_committed=LOAD_COMMITTED)
print(f"{body['mod']['steps']} training steps per variant")

# %%
display(Markdown(mod_markdown(body)))

# %%
plot_mod(body)

# %% [markdown]
# The costs relative to `full`. The prefill FLOPs of one clip are measured and also predicted by
# `mod_flops`, and the two must agree. The training FLOPs ratio is measured on a batch of
# several clips with padding and the projector, so it is close to, but not exactly,
# `mod_flops.mod_flops_ratio(..., training=True)` from section 1:

# %%
variants = [r for r in body["runs"] if "variant" in r]
full = next(r for r in variants if r["variant"] == "full")
study_cfg, m = Config.from_dict(body["config"]), body["mod"]


def analytic(variant):  # section 1's formula, training, for one clip and question of the study
    if variant == "full":
        return 1.0
    return mod_flops.mod_flops_ratio(study_cfg, vocab, full["cost"]["sequence_tokens"], study_cfg.data.frames,
                           study_cfg.image_slots, m["r"], m["layers"], router=variant == "learned", training=True)


costs = pd.DataFrame([{
    "variant": r["variant"],
    "train FLOPs (measured)": r["cost"]["train_flops_per_step"] / full["cost"]["train_flops_per_step"],
    "train FLOPs (mod_flops, 1 clip)": analytic(r["variant"]),
    "prefill FLOPs (measured)": r["cost"]["prefill_flops"] / full["cost"]["prefill_flops"],
    "prefill FLOPs (mod_flops)": r["cost"]["prefill_flops_analytic"] / full["cost"]["prefill_flops_analytic"],
    "activations": r["cost"]["saved_activation_bytes"] / full["cost"]["saved_activation_bytes"],
    "K/V": r["cost"]["kv_tokens"] / full["cost"]["kv_tokens"],
    "step time": r.get("step_time_ratio"),
    "router params": r["router_params"],
} for r in variants]).set_index("variant")
assert all(r["cost"]["prefill_flops"] == r["cost"]["prefill_flops_analytic"] for r in variants)
costs.round(3)

# %% [markdown]
# And the ablation: held-out accuracy with a rough ±2 standard-error band
# (`2·sqrt(p(1−p)/n)`, questions treated as independent):

# %%
n = body["eval"]["examples"]
pd.DataFrame([{"run": r["name"], "accuracy": r["accuracy"],
               "± 2 s.e.": 2 * math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / n),
               "vs full": r["accuracy"] - full["accuracy"]} for r in body["runs"]]).set_index("run").round(3)

# %% [markdown]
# ### Reading it honestly
#
# * **Quick mode means nothing for accuracy.** Three steps on a few dozen clips leave every
#   variant where the base model was, often at the majority answer (compare with `blind`).
#   Differences between learned, random and uniform at this size are noise. Read the
#   committed nano study (`LOAD_COMMITTED = True`), and even there check the ±2 s.e. band
#   before calling a difference real.
# * **What the FLOPs, activation and K/V columns measure is real at any size.** They depend
#   only on the shapes, and they match the formula of section 1. MoD at r = 0.2 interleaved
#   cuts this preset's training FLOPs to about two thirds, not to 0.2: half the layers are
#   full, and text and the LM head are always paid.
# * **The step time is one machine's wall clock.** It is measured, on whatever device ran the
#   study (printed in the provenance line), with whatever else was running there. At nano
#   size on a CPU, a step is mostly dense matmuls, so a MoD step may well be faster, loosely in
#   line with its FLOPs. The gather and scatter MoD adds, and the noise from other processes,
#   move the ratio by tens of percent between runs. Compare the `step time` and
#   `train FLOPs (measured)` columns above, and rerun before you trust a difference. None of
#   this is evidence for or against the paper's ~42 % shorter training time and ~1.5× faster
#   forward. Those were measured on GPUs, with a 7-8B model and long frame streams, and
#   reproducing them needs that scale.
# * **Memory**: on a CPU the study records the process's max-RSS growth, which is a high-water
#   mark and is not comparable between variants. The saved-activation bytes are comparable,
#   and they are the part MoD reduces (the paper reports ~30 % less training memory).
# * **Learned against random and uniform** is the paper's ablation. Learned routing won there.
#   Here, check whether it wins by more than the noise band. The comparison is not quite
#   even. `learned` starts with the gates of an untrained router (section 2), so its computed
#   vision tokens start with a scaled-down update, while `random` and `uniform` start from the
#   base model unchanged. If learned does not win, the clips may also be too easy to need a
#   choice (objects span several patches, and uniform covers the grid). Or the router has not
#   trained enough.
#
# ## Exercises
#
# 1. **The share r.** Predict from the table of section 1 the training FLOPs of r = 0.5 and
#    r = 0.1, then run `lab.run_mod_study(info.preset, lab.runs_folder("notebook09-r05"), r=0.5)` and check. Does the
#    accuracy of `learned` degrade gracefully as r shrinks, and do `random` and `uniform` fall
#    faster?
# 2. **Which layers.** Run the study with `layers="deep"`, `layers="all"` and `layers=[0]`. Why
#    is routing in layer 0 special? (What does the router see there: the vision features after
#    the projector, with no context at all.) The paper found `interleaved` the best trade-off.
#    Does the nano model agree?
# 3. **The router's initialisation.** Section 2 printed the gates of the untrained router: far
#    from 0.5, and different in each layer. Before `trainer.fit` in section 2, re-initialise
#    each router so that the base model is untouched at the start: a weight small enough
#    that the scores start near zero (`torch.nn.init.normal_(router.weight, std=1e-4)`, then
#    check the printed gates) and a bias of +4 (gate ≈ 0.98). Compare the first steps' loss,
#    the gates and the kept tokens with the default. Then freeze the routers
#    (`requires_grad_(False)`): is a frozen random router any better than `random`?
# 4. **Question-aware routing.** Section 2 showed that the routing cannot depend on the
#    question in this layout. Build a layout with the question *before* the clip by hand (or
#    argue on paper): would the router then choose differently per question, and what would
#    that cost a streaming system?
# 5. **The K/V budget of a stream.** With `mod.kv_tokens_per_layer` and
#    `vocolab.zoo.costs.kv_bytes`, compute the cache of an hour of video at one frame per second
#    for full computation and for MoD at r = 0.2 with `interleaved` and `all`. Compare with
#    VoCo's K tokens per frame (notebook 07). Which keeps more of the video, and which is smaller?

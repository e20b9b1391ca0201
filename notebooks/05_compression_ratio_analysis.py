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
# # 05 · How far can you compress an image? Every method, every token count
#
# VoCo-LLaMA is one answer to *"how many visual tokens does an LLM need?"*. There are
# others, and they cut cost in different places:
#
# * **before the LLM**, mapping the V patch features to K tokens: average pooling,
#   learned queries (Q-Former, Perceiver Resampler), query-conditioned queries (QueCC),
#   or simply dropping patches (random, uniform, PruMerge's attention outliers);
# * **inside the LLM**: VoCo (a mask: text may only read K VoCo tokens) and FastV
#   (drop the least-attended image tokens after a few layers).
#
# `vocolab sweep` trains and evaluates all of them at every K on the same data, seed,
# steps and schedule, and this notebook reads its results. You will:
#
# 1. see the methods and what each one needs (`vocolab.zoo`);
# 2. run a small sweep (quick mode) or load the committed nano sweep;
# 3. draw retention against K (the paper's Table 2), accuracy against FLOPs with the
#    Pareto front, and which question families survive K = 1;
# 4. add a method of your own in a dozen lines and sweep it.

# %%
from vocolab import lab

# minutes on this project's 2-core CPU; cpu estimated: the nano sweep ran 49 cells in 47-67 min, 17 of them here
info = lab.setup(minutes={"quick": 0.5, "cpu": 20})

# %%

import pandas as pd
import torch
from IPython.display import Markdown, display

from vocolab.reporting import (plot_accuracy_vs_flops, plot_family_heatmap, plot_retention_vs_tokens,
    sweep_markdown)
from vocolab.zoo import Compressor, MethodInfo, methods, register


# %% [markdown]
# ## 1. The zoo
#
# Every method is registered by name with tags that tell the sweep how to treat it
# fairly: trainable methods are fine-tuned from the upper-bound model for the same
# number of steps; training-free ones are evaluated on the upper-bound model itself. A
# method that **needs the query** cannot cache its compression (it must recompress for
# every question); one that **needs attention** reads attention weights (PruMerge: the
# vision tower's CLS attention; FastV: the LLM's).

# %%
pd.DataFrame([{"method": m.name, "where": m.where, "trainable": m.trainable, "needs query": m.needs_query,
               "needs attention": m.needs_attention, "adaptive K": m.adaptive, "what it does": m.summary}
              for m in methods().values()]).set_index("method")

# %% [markdown]
# ## 2. A sweep
#
# Set `LOAD_COMMITTED = True` to read the nano sweep committed in `figures/sweep/`
# (made by `make sweep`: 60 minutes on 2 CPU cores in the committed run). Otherwise a small
# sweep runs here: in quick mode (`VOCOLAB_QUICK=1`, as in the tests) with tiny data and a few
# steps per cell, so its numbers only show that the machinery works; outside quick mode
# with the preset's real settings at K = 1 and 4.
#
# The compressors train one model per K. VoCo trains ONE model for all the sweep's Ks, each
# batch at one K drawn from them (the same steps per K), and every VoCo cell asks it at its K:
# one model trained per K kept 0.48-0.61 of the upper bound at nano, the shared one 0.60 at K = 1
# rising to 1.00 at K = 16 (the committed run).
#
# Each finished cell is stored as a JSON file; running the cell again skips them.

# %%
LOAD_COMMITTED = False
OUT = lab.runs_folder("notebook05")
body = lab.study_results("sweep", lambda: lab.run_sweep(info.preset, OUT, seed=info.seed, ks=(1, 4),
                                                         limit=60 if info.quick else None, progress=not info.quick),
                         load_committed=LOAD_COMMITTED)

# %% [markdown]
# ## 3. Retention against K
#
# Retention puts every method on the same scale: 1 is the upper bound (all V tokens,
# causal attention), 0 is the lower bound (the upper-bound model forced to answer
# through K VoCo tokens it was never trained to use). The paper's Table 2: VoCo keeps
# 83.7% at 576 → 1 and rises with K; average pooling and Q-Former fall behind.

# %%
plot_retention_vs_tokens(body)

# %% [markdown]
# ## 4. Accuracy against cost
#
# The x axis is FLOPs per **answered question** when the image side is cached where the
# method allows it: VoCo's cache holds K tokens, pooling and dropping cache 1 + K, FastV
# caches fewer tokens only in the layers after it drops. QueCC's tokens depend on the
# question, so it pays its compressor and the whole prefill again for every question.
# The dashed line joins the points nothing else beats on both axes.

# %%
plot_accuracy_vs_flops(body)

# %% [markdown]
# ## 5. What survives K = 1?
#
# Per-family accuracy at one visual token. Existence and colour are global facts that
# one token can carry; counting and spatial relations need *where* things are, and are
# expected to suffer first.

# %%
plot_family_heatmap(body, k=1)

# %%
display(Markdown(sweep_markdown(body)))

# %% [markdown]
# ## 6. Add a method
#
# A method is a `Compressor` subclass registered by name. It receives each image's patch
# features `[N, V, Dv]` and returns `[N, K, Dv]`; the VLM's projector does the rest. Here
# is **max pooling** over the patch grid, training-free. (The name must be new: run the
# cell once per kernel session.)

# %%
from einops import rearrange

from vocolab.zoo.pooling import pool_grid


@register(MethodInfo("maxpool", "pre", trainable=False, summary="max over each region of the patch grid"))
class MaxPool(Compressor):
    def forward(self, features, query=None, extras=None):
        side = int(self.patches ** 0.5)
        grid = rearrange(features, "n (h w) d -> n d h w", h=side)
        pooled = torch.nn.functional.adaptive_max_pool2d(grid, pool_grid(self.k))
        return rearrange(pooled, "n d h w -> n (h w) d")


print(methods()["maxpool"])

# %% [markdown]
# Sweeping it reuses the base model and every finished cell: only the new cells run.

# %%
if not LOAD_COMMITTED:
    body = lab.run_sweep(info.preset, OUT, seed=info.seed, methods=tuple(body["sweep"]["methods"]) + ("maxpool",),
                         ks=(1, 4), limit=60 if info.quick else None, progress=not info.quick)
    plot_retention_vs_tokens(body)

# %% [markdown]
# ## Exercises
#
# 1. **Make K = 1 break.** Scenes get harder with more objects per image: sweep with
#    `overrides={"data.max_objects": 8, "data.grid": 4}` (or `vocolab sweep --set
#    data.max_objects=8`). Which families lose most at K = 1, and does VoCo's lead over
#    pooling grow or shrink?
# 2. **A trainable method.** Turn `MaxPool` into a trainable one: add an `nn.Linear(self.dim,
#    self.dim)` after pooling and register it with `trainable=True`. Compare it with
#    `avgpool` at K = 1 and K = 16.
# 3. **FastV's layer.** `vocolab.sweep.FASTV_LAYER` is 2 (of 4 LLM layers). Set it to 1 and
#    rerun the `fastv` cells: what happens to accuracy and to prefill FLOPs?
# 4. **Where does QueCC's query help?** Compare `quecc` and `avgpool` per family at K = 1:
#    which questions gain from knowing the question before compressing?

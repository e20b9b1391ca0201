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
# # 01 · Attention masks: who may look at whom
#
# VoCo-LLaMA compresses an image's many vision tokens into a handful of **VoCo tokens**
# without any new layer: the whole trick is an **attention mask**. The text after the
# VoCo tokens is simply not allowed to look at the image, so everything the answer needs
# must flow through the VoCo tokens. Get the mask wrong and the "compressed" model quietly
# reads the full image; get the backend wrong and the mask is silently ignored.
#
# In this notebook you will:
#
# 1. lay out one sample's sequence, `[BOS][IMG x V][VOCO x K][question][answer][EOS]`;
# 2. build the mask step by step: plain causal, then the VoCo rule, then why BOS is hidden
#    and why padding rows see themselves;
# 3. compare the three mask modes (`causal`, `voco`, `video`) for one image and for a clip;
# 4. see why the attention *backend* matters (a bool mask added to scores masks nothing);
# 5. play with an interactive mask explorer.
#
# Everything here is pure tensor code: no model, no training; it runs in seconds.

# %%
from vocolab import lab

# minutes on this project's 2-core CPU: quick mode under nbmake, real mode run once
info = lab.setup(minutes={"quick": 0.2, "cpu": 0.2})

# %%
import torch

from vocolab.core import masks
from vocolab.core.layout import build_layout
from vocolab.core.masks import build_mask, for_backend, sample_mask, to_additive
from vocolab.reporting import layout_segments, mask_explorer, plot_mask, plot_mask_modes


# %% [markdown]
# ## 1. The sequence layout
#
# Every sample carries a `Layout`: the start offset and length of each segment,
# **counted from the start of the sequence**. (The official VoCo-LLaMA code counted from
# the *end*, which broke as soon as sequences were truncated, decoded token by token, or
# mixed in a batch.)
#
# We use a toy size so that every cell of the mask is visible: V = 16 image tokens, K = 2
# VoCo tokens, a 5-token question and a 3-token answer (2 words + EOS; `answer_len`
# counts the EOS).

# %%
toy = build_layout(question_len=5, answer_len=3, image_tokens=16, voco_tokens=2)
print(toy, "\n")
for name, start, stop in layout_segments(toy):
    print(f"{name:5s} positions {start:2d}..{stop - 1:2d}   ({stop - start} tokens)")

# %% [markdown]
# The real `nano` preset has a 64 px image cut into 8 px patches, so V = 64; with K = 1
# the question and answer see 1 visual token instead of 64. Count the keys the first
# answer token may attend to under each mode:

# %%
cfg = info.config
real = build_layout(8, 3, image_tokens=cfg.data.image_tokens, voco_tokens=cfg.voco.tokens)
first_answer = real.answer.start
for mode in ("causal", "voco"):
    keys = int(sample_mask(real, mode)[first_answer].sum())
    print(f"{mode:6s}: the first answer token may attend to {keys:3d} of the {first_answer + 1} "
          f"positions up to itself")

# %% [markdown]
# ## 2. Building the mask step by step
#
# A mask is an `[L, L]` matrix of booleans: row *i* is a **query** (the token doing the
# looking), column *j* a **key** (the token looked at); `True` = may attend.
# `build_mask` returns the batch version `[B, 1, L, L]`; `sample_mask` one sample's `[L, L]`.
#
# ### 2.1 Plain causal
#
# Every token sees itself and everything before it. **Notice:** the Q and A rows are blue
# across the IMG columns — the answer can read every image token directly. The VoCo tokens
# are present, but nothing forces information through them.

# %%
causal = sample_mask(toy, "causal")
plot_mask(causal, toy, title="causal")

# %% [markdown]
# ### 2.2 What the text may see under `voco`
#
# The VoCo rule (paper Eq. 3) changes only the rows of the text *after* the last VoCo
# token: they may see the VoCo tokens and the text, nothing else. We rebuild it by hand
# from the per-position segment kinds and check it against the package.

# %%
kind, frame = masks.segments(toy, toy.length)
is_text = kind == masks.TEXT                                  # question + answer queries
text_may_see = (kind == masks.VOCO) | (kind == masks.TEXT)    # keys allowed for them
voco_by_hand = causal & (~is_text[:, None] | text_may_see[None, :])

voco = sample_mask(toy, "voco")
assert torch.equal(voco_by_hand, voco)
plot_mask(voco, toy, title="voco: the text's view of the image is cut")

# %% [markdown]
# **Notice:**
#
# * the IMG and VOCO rows are unchanged: the VoCo tokens still read the whole image
#   (and, being last, they see all of it);
# * the Q/A × IMG block is now grey, so the **only** path from pixels to the answer runs
#   through the VoCo tokens' keys and values, at every layer. Training under this mask
#   forces the model to pack what the questions need into K tokens: that is the compression;
# * the Q/A × BOS cell is grey too, although BOS carries no image information. Why?
#
# ### 2.3 Why BOS is hidden from the text: the attention sink
#
# Trained language models park a large share of their attention on the first token
# whenever no other token is useful (the "attention sink", Xiao et al. 2023,
# *StreamingLLM*). If the text could see BOS, it would learn to rely on it. But at
# inference the VoCo cache keeps **only the VoCo tokens'** keys and values; a model that
# leaned on BOS during training would find it missing. Hiding BOS makes the VoCo tokens
# the sink, so training matches what the cache can offer.

# %%
names = {masks.BOS: "BOS", masks.IMAGE: "IMG", masks.VOCO: "VOCO", masks.TEXT: "TEXT", masks.PAD: "PAD"}
q0 = toy.question.start
seen = [names[int(k)] for k in kind[voco[q0]]]
print("the first question token may attend to:", seen)
assert not voco[toy.text.start:, 0].any(), "no text query sees BOS"

# %% [markdown]
# ### 2.4 Padding: rows that see themselves
#
# A batch is right-padded to its longest sample. Real tokens must never attend to
# padding, and padding *queries* attend to themselves only. Why not to nothing at all?
# Because a row with no allowed key is a softmax over nothing:

# %%
print("softmax over all -inf:", torch.softmax(torch.full((3,), float("-inf")), dim=-1))

# %% [markdown]
# That `nan` then spreads through the next matmul into every later layer and into the loss.
# Some recent SDPA kernels special-case a fully masked row (returning zeros), others and
# older PyTorch versions do not, and an eager additive mask of `dtype.min` turns it into a
# uniform average over garbage. vocolab does not depend on any kernel's policy: no row is
# ever fully masked. Here is a batch of our toy sample and a shorter one (sample 1):

# %%
short = build_layout(question_len=3, answer_len=2, image_tokens=16, voco_tokens=2)
batch = build_mask([toy, short], "voco")
print("batch mask:", tuple(batch.shape), batch.dtype)
print("every row allows at least one key:", bool(batch.any(-1).all()))
pad = slice(short.length, toy.length)
print("real queries that see padding:", int(batch[1, 0, : short.length, pad].sum()))
plot_mask(batch, [toy, short], sample=1, title="sample 1 of the batch, right-padded")

# %% [markdown]
# **Notice** the PAD segment: an empty block except for its diagonal. The loss ignores
# those positions anyway; the diagonal only keeps the arithmetic finite.
#
# ## 3. The three modes side by side
#
# | mode | who may attend to what | used for |
# |---|---|---|
# | `causal` | plain causal | upper bound, teacher |
# | `voco` | text after the last VoCo token sees only VoCo tokens and later text | VoCo-LLaMA |
# | `video` | frame *t*'s tokens see BOS and frame *t* only; text sees every frame's VoCo | temporal tuning |
#
# For a single image, `video` and `voco` coincide (the image's tokens only have BOS and
# their own frame before them anyway):

# %%
assert torch.equal(sample_mask(toy, "video"), sample_mask(toy, "voco"))
plot_mask_modes(toy)

# %% [markdown]
# Now a 3-frame clip (V = 6 tokens per frame here, K = 1 VoCo token per frame).
#
# **Notice** in the `video` panel:
#
# * **block-diagonal frames**: frame 2's image and VoCo tokens cannot see frame 1. Each
#   frame is therefore compressed on its own, *streaming*: a new frame costs the same no
#   matter how long the clip is, and the per-frame caches, computed at the positions they
#   would have in the full sequence, concatenate into exactly the full forward's cache;
# * **the BOS column stays blue** for every frame: BOS is a shared attention sink, and its
#   keys/values are identical for every frame (it sees only itself), so sharing it does
#   not break the streaming argument;
# * **the text sees VOCO1, VOCO2, VOCO3** and nothing else before it, as in `voco`.
#
# Under `voco`, by contrast, VOCO3 sees all three frames: compressing the last frame needs
# the whole clip in memory.

# %%
clip = build_layout(question_len=5, answer_len=3, frames=3, image_tokens=6, voco_tokens=1)
video = sample_mask(clip, "video")
f0, f1 = clip.frames[0], clip.frames[1]
print("VOCO2 sees frame 1 under video:", bool(video[f1.voco.start, f0.image.start : f0.voco.stop].any()))
print("VOCO2 sees frame 1 under voco: ", bool(sample_mask(clip, "voco")[f1.voco.start, f0.image.start : f0.voco.stop].any()))
plot_mask_modes(clip)

# %% [markdown]
# ## 4. Why the attention backend matters
#
# The model never receives the bool mask directly: `for_backend` converts it into what the
# chosen attention implementation honours.
#
# * **SDPA** (`scaled_dot_product_attention`) honours a bool mask: `False` = blocked.
# * **eager** attention *adds* the mask to the scores before the softmax. Add a bool mask
#   and you add 0 or 1: nothing is blocked, the allowed keys merely get a small bonus.
#   Eager needs an additive float mask: 0 where allowed, a huge negative number where blocked.
#
# A tiny 4 × 4 score matrix with a causal mask shows the difference numerically:

# %%
torch.manual_seed(0)
scores = torch.randn(4, 4)
allowed = torch.tril(torch.ones(4, 4, dtype=torch.bool))

wrong = torch.softmax(scores + allowed, dim=-1)               # a bool mask added: +0 / +1
right = torch.softmax(scores + to_additive(allowed), dim=-1)  # 0 / dtype min

torch.set_printoptions(precision=3, sci_mode=False)
print("bool mask added to scores (eager with the wrong mask):\n", wrong)
print("additive mask (what for_backend gives eager):\n", right)
print(f"attention weight on blocked keys: wrong {wrong[~allowed].sum():.3f}, right {right[~allowed].sum():.3f}")

# %% [markdown]
# Row 0 should attend only to key 0. With the bool mask added it spreads much of its
# weight over keys 1–3 — keys it must never see (for a VoCo model: the image).
# Nothing crashes and the loss looks normal, which is exactly why this bug is dangerous.
#
# Here is what `for_backend` hands each backend, and proof that SDPA with the bool mask
# equals the softmax with the additive mask:

# %%
mask = build_mask([toy], "voco")
sdpa_mask, eager_mask = for_backend(mask, "sdpa"), for_backend(mask, "eager")
print("sdpa :", sdpa_mask.dtype, "values", sdpa_mask.unique().tolist())
print("eager:", eager_mask.dtype, "values", eager_mask.unique().tolist())

q, k, v = torch.randn(3, 1, 1, toy.length, 8).unbind(0)
by_sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask)
by_eager = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5 + eager_mask, dim=-1) @ v
print("SDPA(bool) == eager(additive):", torch.allclose(by_sdpa, by_eager, atol=1e-6))

# %% [markdown]
# FlexAttention gets a `BlockMask` (it cannot run backward on a CPU, so it is for GPUs).
# Any other backend, e.g. flash-attention, ignores custom masks altogether, so vocolab
# refuses it loudly instead of training a model that secretly reads the image:

# %%
try:
    for_backend(mask, "flash_attention_2")
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 5. Explore
#
# Move one knob at a time and predict the picture before it redraws. Try `K = 0` (no VoCo
# tokens), several frames in each mode, and a long question with a short answer. The
# caption counts how many positions the first answer token may attend to.

# %%
mask_explorer()

# %% [markdown]
# ## Exercises
#
# 1. Set K = 0 in the explorer. Why are all three modes plain causal now? What would a
#    `voco` mask with K = 0 and the Q/A × IMG block still grey mean for the answer?
# 2. For the `nano` preset (V = 64, K = 1) and an 8 + 3 token text, what fraction of the
#    (query, key) pairs that `causal` allows does `voco` still allow? Compute it with
#    `sample_mask(...).sum()` and compare with the explorer's caption.
# 3. Change `voco_by_hand` in section 2.2 so the text may see BOS. Which cells change?
#    Explain what would go wrong at inference with a cache holding only VoCo keys/values.
# 4. In `video` mode, frame *t*'s VoCo tokens cannot see frame *t − 1*. Which temporal
#    questions ("what moved?") can still be answered, and by which tokens?
# 5. Redo the 4 × 4 experiment with the scores multiplied by 10. Does the bool mask leak
#    less or more weight to blocked keys? Why is "it mostly works" no defence?

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
# # 04 · The VoCo cache: compress once, answer many
#
# Training under the `voco` mask (notebook 03) has a payoff that is easy to miss: since the
# text never attends to BOS or to the image tokens, everything an answer can ever read
# about the image sits in the **VoCo tokens' keys and values**, in every layer. So the
# image can be run through the model **once**, everything but those K tokens' K/V thrown
# away, and any number of questions answered later against that tiny *VoCo cache*. This
# is how VoCo-LLaMA is meant to be used, and the official code shipped none of it.
#
# In this notebook you will:
#
# 1. compress one held-out scene into a `VoCoCache` and look inside it;
# 2. ask it several questions, and check the cache is left untouched and reusable;
# 3. save it as safetensors and load it back;
# 4. check that cached decoding **equals** the full masked forward, token for token, for
#    answers of any length;
# 5. measure Table 7 in miniature (no caching / full caching / VoCo caching);
# 6. plot the cache size against K.
#
# It uses the trained nano VoCo model the repository ships (`trained/nano/voco`, made by
# `make models` with the quickstart's recipe), in quick mode too: what you see below are a
# trained model's answers, in seconds. About 1 minute on a laptop CPU in either mode.

# %%
from vocolab import lab

# minutes on this project's 2-core CPU: quick mode under nbmake, real mode run once (shipped model)
info = lab.setup(minutes={"quick": 0.2, "cpu": 0.2})

# %%
import torch
from IPython.display import Markdown, display

from vocolab.data import build_tokenizer
from vocolab.inference import VoCoCache, answer, answer_texts, compress, full_cache, greedy_generate, inference_costs
from vocolab.reporting import plot_cache_bytes, plot_images, plot_inference_costs, table7_markdown


# %% [markdown]
# ## 0. A model
#
# `lab.voco_model` loads the shipped VoCo model (a directory with `model.safetensors`,
# `config.json` and `meta.json`, written by `save_checkpoint`, in float16 and cast back to
# float32) and says what trained it and how it scored when it was shipped.
#
# **To train your own instead**, set `RETRAIN = True`: outside quick mode the VoCo model
# `make quickstart` saved is used when there is one, else the recipe is trained here (about
# 20 minutes on a CPU; notebook 03 explains the stages); in quick mode 10 steps per stage, a
# model whose answers are mostly wrong (the cache's *mechanics* are the same for any weights).

# %%
RETRAIN = False  # True: train from scratch instead of loading the shipped model

model, cfg, heldout = lab.voco_model(info, retrain=RETRAIN)
WORK = lab.runs_folder("notebook04-files")
model = model.to(info.device).eval()
tok = build_tokenizer(cfg.data)
V, K = cfg.data.image_tokens, cfg.voco.tokens
print(f"preset {cfg.preset}: V = {V} image tokens, trained with K = {K} VoCo token(s)")

# %% [markdown]
# ## 1. Compress one image
#
# `compress(model, pixels)` runs `[BOS][IMG x V][VOCO x K]` once (causal over that prefix,
# which is what the `voco` mask is there) and keeps, in every layer, only the keys and
# values of the K VoCo tokens, together with their **original positions**. Positions
# matter: RoPE has already rotated the cached keys by those positions, so the question
# must continue at the positions it would have had in the full sequence
# (`next_position`), not right after the K cached tokens.

# %%
i = 3  # a held-out scene: never seen in training
pixels = torch.from_numpy(heldout.images[[i]]).to(info.device)  # [1, H, W, 3] uint8
cache = compress(model, pixels)
print(cache)
print("positions of the cached tokens:", cache.positions.tolist(), "| the question starts at", cache.next_position)
print(f"{cache.layers} layers x (keys, values), each {tuple(cache.keys[0].shape)} = [batch, kv_heads, K, head_dim]")

m = cfg.llm
head_dim = m.hidden_size // m.heads
by_hand = m.layers * 2 * m.kv_heads * head_dim * cache.dtype.itemsize * K
print(f"nbytes = layers x 2 x kv_heads x head_dim x bytes x K = {m.layers} x 2 x {m.kv_heads} x {head_dim} x "
      f"{cache.dtype.itemsize} x {K} = {by_hand:,} bytes")
assert cache.nbytes == by_hand

# %% [markdown]
# **Notice** the positions: the VoCo token sits at position V + 1 (after BOS and the V
# image tokens: 65 for `nano`), and text continues right after it, as if the image tokens
# were still there, exactly as the model saw it during training. The whole image is now a few kilobytes of
# keys and values.
#
# ## 2. Many questions, one cache
#
# `answer_texts` tokenizes the questions, answers them greedily against the cache (one
# batch: a cache of one image is shared by all its questions) and decodes the answers. The
# scene and all its held-out questions:

# %%
questions, gold = heldout.questions[i], heldout.answers[i]
before = [t.clone() for t in (*cache.keys, *cache.values)]

predicted = answer_texts(model, tok, cache, questions)
width = max(map(len, questions))  # one column, however long the longest question
for q, p, g in zip(questions, predicted, gold):
    print(f"{'ok ' if p == g else '   '} {q:{width}s}  model: {p or '(nothing)':10s} gold: {g}")
print(f"\n{sum(p == g for p, g in zip(predicted, gold))} of {len(gold)} right")
plot_images([heldout.images[i]], [heldout.captions[i]], wrap=60)

# %% [markdown]
# The cache is never modified: `answer` hands the decoder a *copy* (`to_dynamic_cache`),
# which grows as tokens are generated, while the `VoCoCache` stays as compressed. So the
# same cache answers again, and gives the same answers:

# %%
again = answer_texts(model, tok, cache, questions[::-1])[::-1]  # other order, same cache
unchanged = all(torch.equal(a, b) for a, b in zip(before, (*cache.keys, *cache.values)))
print("cache unchanged after answering twice:", unchanged)
print("same answers the second time:", again == predicted)
assert unchanged and again == predicted

# %% [markdown]
# In quick mode the model has trained for a few dozen steps, so most answers are wrong, or
# empty (EOS straight away): that is the model, not the cache. Section 4 proves the cache answers exactly what the model would answer with the
# full sequence in front of it.
#
# ## 3. Save and load
#
# A cache is a set of tensors plus a little metadata (K, frames, positions, dtype), so it
# saves as one **safetensors** file: no pickle, memory-mappable, readable from other
# languages. `save` writes atomically and stores a sha256 of the data; `load` refuses a
# file that was altered or truncated.

# %%
path = cache.save(WORK / f"scene{i}.voco.safetensors")
size = path.stat().st_size
print(f"{path.name}: {size:,} bytes on disk for {cache.nbytes:,} bytes of keys and values "
      f"(+ positions and a JSON header)")

loaded = VoCoCache.load(path, device=info.device)
assert all(torch.equal(a, b) for a, b in zip((*cache.keys, *cache.values), (*loaded.keys, *loaded.values)))
assert loaded.positions.tolist() == cache.positions.tolist() and loaded.next_position == cache.next_position
print("loaded cache answers the same:", answer_texts(model, tok, loaded, questions) == predicted)

broken = WORK / "broken.voco.safetensors"
data = bytearray(path.read_bytes())
data[-1] ^= 0xFF  # flip the bits of the last byte of the data
broken.write_bytes(bytes(data))
try:
    VoCoCache.load(broken)
except ValueError as err:
    print("ValueError:", err)

# %% [markdown]
# ## 4. Cached decoding equals the full masked forward
#
# The reference decoder `greedy_generate(..., mode="voco")` rebuilds the whole sequence
# `[BOS][IMG][VOCO][question][answer so far]` at every step and runs it under the `voco`
# mask: no cache, no shortcut. The cached decoder must produce the same tokens. The
# official VoCo-LLaMA code did not: its mask slid into the prompt after the first
# generated token, so one-word answers hid the bug and longer ones drifted.
#
# To exercise multi-token decoding whatever the model learned, we also force both
# decoders to generate 6 tokens each (`eos_id=-1`: no token stops them) and compare the
# logits at every step.

# %%
q_ids = [tok(q, add_special_tokens=False)["input_ids"] for q in questions]
images = pixels.expand(len(q_ids), -1, -1, -1)  # the same image for every question

full = greedy_generate(model, model.special, q_ids, images, mode="voco", max_new_tokens=4)
cached = answer(model, cache, q_ids, 4)
print("same tokens with EOS stopping:", full == cached)

full_t, full_logits = greedy_generate(model, model.special, q_ids, images, mode="voco", max_new_tokens=6,
                                      eos_id=-1, return_logits=True)
cached_t, cached_logits = answer(model, cache, q_ids, 6, eos_id=-1, return_logits=True)
diff = max((a - b).abs().max().item() for a, b in zip(full_logits, cached_logits))
print(f"6 forced tokens per question: same tokens {full_t == cached_t}, "
      f"largest logit difference {diff:.1e} over {sum(len(l) for l in full_logits)} steps")
assert full == cached and full_t == cached_t and diff < 1e-3

# %% [markdown]
# The logits agree to float rounding (the two paths add the same numbers in a different
# order). The full forward needs the image for every generated token; the cached path
# never sees it again.
#
# ## 5. Table 7 in miniature
#
# The paper's Table 7 (one A100, one image, the same prompt; Vicuna-7B, 576 image tokens,
# fp16):
#
# | setting | cached tokens | cache size | CUDA time | FLOPs |
# |---|---|---|---|---|
# | no caching | - | - | 440.5 ms | 9.6 T |
# | full caching | 576 | 302.4 MB | 154.9 ms (-64.8%) | 1.2 T (-87.5%) |
# | VoCo caching | 1 | 0.525 MB (-99.8%) | 134.0 ms (-69.6%) | 0.5 T (-94.8%) |
#
# `inference_costs` measures the same three settings for our model, one image and one
# question, answering its first token:
#
# * **no caching**: the whole sequence, image through the vision tower included, every time;
# * **full caching**: every prefix token's K/V (BOS, V image, K VoCo) kept; the question
#   runs against all of them;
# * **VoCo caching**: only the K VoCo tokens' K/V kept.
#
# FLOPs are counted by `torch.utils.flop_counter` while the answer runs (the one-off cost of
# building a cache is reported separately as `precompute_flops`); latency is a median over
# repeated runs.

# %%
cost = inference_costs(model, pixels, q_ids[0], K, repeats=5 if info.quick else 20, warmup=1 if info.quick else 3)
display(Markdown(table7_markdown(cost)))
s = cost["settings"]
print(f"building a cache once: {s['voco_caching']['precompute_flops'] / 1e6:.1f} MFLOPs "
      f"(the price of the first question, paid once per image)")

# %%
plot_inference_costs(cost)

# %% [markdown]
# **Notice:**
#
# * **cache size** falls by K / (1 + V + K): with V = 64 and K = 1 that is 1/66, -98.5%
#   (the paper's 576 → 1 gives -99.8%). This is exact and does not depend on the machine;
# * **FLOPs**: no caching pays for the vision tower and the V image tokens at every
#   question; both cached settings pay only for the question's tokens, and VoCo caching
#   also attends to 1 key instead of 66. At `nano` scale the model is so small that the
#   LM head and the projections of the question tokens dominate, so the last step (full →
#   VoCo) saves little; in a 7B model with 576 image tokens attention over the cache is a
#   larger share (the paper's 1.2 T → 0.5 T);
# * **latency** at this scale is mostly Python and kernel-launch overhead, and on a shared
#   CPU it is noisy: trust the FLOPs and bytes, read the milliseconds as an order of
#   magnitude.
#
# ## 6. Cache size against K
#
# The cache holds `layers x 2 x kv_heads x head_dim x bytes` per cached token, so its size
# is linear in K. `compress` works for **any** K, even though this model was trained with
# K = 1: the VoCo tokens all share one learned embedding and differ only by position, so a
# cache of K tokens is always well formed. Whether the model answers well from a K it was
# not trained for is another question (the paper trained with K = 32 and tested with fewer:
# MMB 59.4 / 58.3 / 59.7 / 57.9 at 32 / 16 / 4 / 1; see the exercises).
#
# We build real caches for K = 1 ... 64 and the full cache, and check each size against
# the formula:

# %%
ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= V]
per_token = m.layers * 2 * m.kv_heads * head_dim * cache.dtype.itemsize
voco_bytes = []
for k in ks:
    c = compress(model, pixels, k)
    assert c.tokens == k and c.nbytes == per_token * k
    voco_bytes.append(c.nbytes)
full, _ = full_cache(model, pixels, K)
print(f"{per_token:,} bytes per cached token; full cache: {full.tokens} tokens (BOS + V + K) = {full.nbytes:,} bytes")
for k, b in zip(ks, voco_bytes):
    print(f"K = {k:2d}: {b:>9,} bytes, full / VoCo = {full.nbytes / b:4.1f}")
plot_cache_bytes(ks, voco_bytes, full.nbytes, image_tokens=V,
                 title=f"VoCo cache vs full cache ({cfg.preset}: V = {V}, {m.layers} layers, {cache.dtype})")

# %% [markdown]
# **Notice** the slope of 1 on the log-log axes: double K, double the bytes. The vertical
# distance to the dashed line is the compression factor, about V/K. At K = V the
# "compressed" cache is as large as the full one, minus BOS.
#
# For scale: Vicuna-7B has 32 layers and a hidden size of 4096 (32 heads x 128, no grouped
# keys), stored in fp16, so one cached token costs 32 x 2 x 4096 x 2 bytes = 0.52 MB, the
# paper's VoCo cache; 576 of them are the 302 MB of full caching.
#
# ## Exercises
#
# 1. **A batch of images.** Compress 8 held-out scenes in one call
#    (`compress(model, torch.from_numpy(heldout.images[:8]))`) and answer the first question
#    of each (`answer` pairs sample b of the cache with question b). Then answer 8 questions
#    about scene 2 alone with `cache.select(2)`.
# 2. **K the model was not trained for.** Compress with K = 4 and answer this scene's
#    questions. Then score held-out accuracy at K = 1, 2, 4 with
#    `vocolab.evaluate.predict(model, tok, heldout.images, qs, "voco", k)` on
#    `qs = vocolab.evaluate.Questions.of(heldout, 200)`. Does more K help a model trained
#    with K = 1? Compare with the paper's "train with 32, test with fewer".
# 3. **The base preset.** Compute the per-token cache size of the `base` preset from
#    `vocolab.config.preset("base").llm` with the formula above, and the full-cache size for
#    its V = 576. How close is the ratio to the paper's -99.8%?
# 4. **Where does the time go?** Time `answer(model, cache, q_ids, 4)` for 1, 4 and all of
#    this scene's questions (`vocolab.flops.latency_ms`). How does the cost per question
#    change with the batch size, and why?
# 5. **Video.** `vocolab.cache.compress_video(model, frames)` compresses a clip frame by frame
#    (streaming). Load a held-out clip (`vocolab.data.load_clips`) and check that the
#    cache's `tokens` is `T x K` and its `nbytes` grows linearly with T.

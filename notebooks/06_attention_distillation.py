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
# # 06 · VoCo as distillation: what the text reads, with and without the image
#
# The VoCo-LLaMA paper states its goal as a **distillation**. The *teacher* is the LLM
# reading every image token; the *student* is the same LLM whose text may only read the K
# VoCo tokens. The student should predict what the teacher predicts. The official code has
# no teacher, though: it trains plain next-token loss under the VoCo mask and leaves the
# distillation *implicit*. vocolab offers both, plus a middle road, so the question becomes
# one you can measure: **does telling the student what the teacher thinks help, compared with
# the answers alone?**
#
# In this notebook you will:
#
# 1. write down the four objectives vocolab can train (`vocolab.distill.OBJECTIVES`);
# 2. build a teacher and a student and look at each term of the loss on one batch, before and
#    after a little training;
# 3. look inside: where the teacher's text looks in the image, where the student's text
#    looks among its VoCo tokens, and where each VoCo token looks in the image;
# 4. compare the four objectives at K = 1 and K = 4 (`vocolab distill`), and read the table
#    honestly.

# %%
from vocolab import lab

# minutes on this project's 2-core CPU; cpu: one student fine-tuned here, then the distill study (24.9 min measured)
info = lab.setup(minutes={"quick": 0.5, "cpu": 25})

# %%
import math

import pandas as pd
import torch
from IPython.display import Markdown, display

from vocolab.data import make_batch
from vocolab.evaluation.attention import attention_maps, loss_report, mean_attention
from vocolab.reporting import distill_markdown, plot_distill, plot_distill_attention, plot_images
from vocolab.training import DistillModule, answer_kl, fine_tune


# %% [markdown]
# ## 1. The objective
#
# For one answer $y = (y_1, \dots, y_n)$ to a question $q$ about an image with patch tokens $V$:
#
# * **teacher** $p_T(y_t \mid y_{<t}, q, V)$: the upper-bound model, `causal` mask, every image token visible;
# * **student** $p_S(y_t \mid y_{<t}, q, \mathrm{VoCo}(V))$: the `voco` mask, the text sees only the
#   K VoCo tokens (which themselves saw the image).
#
# The paper's objective is $\min\ \mathbb{E}\,\mathrm{KL}\big(p_T \,\|\, p_S\big)$. Why does plain
# next-token loss count as distillation? Because the cross-entropy to the gold answer is the KL
# to a teacher that puts all its mass on the gold answer: the labels stand in for the teacher.
# An explicit teacher adds what labels cannot say: which wrong answers it found plausible
# (Hinton's "dark knowledge"), and how it got there.
#
# vocolab trains the student from the teacher's weights (K VoCo tokens added, `voco` mask) with
# one of four objectives. $\mathrm{CE}$ is the next-token loss under the `voco` mask; $A$ is the
# set of scored answer positions (every answer token and EOS, at the position that predicts it);
# $X$ the text positions (question, answer, EOS); $z$ logits, $h^\ell$ the hidden state after
# decoder layer $\ell$, $D$ the width.
#
# | `objective` | loss | what it asks |
# |---|---|---|
# | `implicit` | $\mathrm{CE}$ | answer right (the official code) |
# | `logits` | $\mathrm{CE} + \lambda_{KL}\,\tau^2\,\frac{1}{\lvert A\rvert}\sum_{t\in A}\mathrm{KL}\big(\mathrm{softmax}(z^T_t/\tau)\,\Vert\,\mathrm{softmax}(z^S_t/\tau)\big)$ | answer *like the teacher*, wrong answers included (`answer_kl`) |
# | `attention` | $\mathrm{CE} + \lambda_h\,\frac{1}{\lvert L\rvert}\sum_{\ell\in L}\frac{1}{\lvert X\rvert}\sum_{i\in X}\frac{1}{D}\big\lVert h^{S,\ell}_i - h^{T,\ell}_i\big\rVert^2$ | *read like the teacher*, layer by layer (`text_hidden_mse`) |
# | `logits+attention` | both terms | both |
#
# Defaults: temperature $\tau = 2$, $\lambda_{KL} = \lambda_h = 1$, $L$ = every layer
# (`DistillModule(temperature=..., kl_weight=..., hidden_weight=..., hidden_layers=...)`).
#
# Two details worth a second look:
#
# * the **$\tau^2$** factor: softening both distributions by $\tau$ shrinks the KL's gradients by
#   about $1/\tau^2$; multiplying back keeps the term's weight comparable across temperatures;
# * the `attention` term matches **hidden states, not attention weights**. The weights cannot be
#   compared: the teacher's text spreads its attention over V image keys, the student's over K
#   VoCo keys. But a text token's hidden state in layer $\ell$ is what it has *read* through
#   attention up to layer $\ell$; asking the student's text to end up in the same state asks it
#   to get from K VoCo tokens what the teacher's text got from V patches.
#
# The teacher is frozen and kept outside the student's parameters. One batch serves both: the
# upper bound was trained on the same sequences, VoCo slots included, and only the mask
# differs.
#
# The temperature at work, on made-up logits over a 5-word vocabulary (one scored position):

# %%
teacher_z = torch.tensor([[[4.0, 2.5, 0.0, -1.0, -2.0], [0.0] * 5]])  # the teacher: word 0, word 1 a runner-up
student_z = torch.tensor([[[4.0, -1.0, 0.0, 2.5, -2.0], [0.0] * 5]])  # same top word, word 3 the runner-up
labels = torch.tensor([[-100, 0]])  # the token at position 1 is scored: the logits at position 0 predict it
for tau in (0.5, 1.0, 2.0, 4.0):
    kl = answer_kl(student_z, teacher_z, labels, tau).item()
    print(f"tau = {tau:3}: KL = {kl / tau**2:.3f}, tau^2 * KL (the term) = {kl:.3f}")
print("a student that copies the teacher:", answer_kl(teacher_z, teacher_z, labels, 2.0).item())

# %% [markdown]
# Both distributions pick word 0, so next-token loss cannot tell the student from the teacher;
# the KL can, since they disagree on the runner-up. At a low temperature the top word swamps
# the rest and the disagreement almost vanishes; softened, the runner-ups weigh in. The raw KL
# falls again at high temperature (both distributions flatten), and that is what $\tau^2$
# compensates.
#
# ## 2. A teacher and a student
#
# The teacher is an upper-bound model (clip → pretrain → upper; the upper bound of notebook 05).
# For `nano` the repository ships one, trained by the quickstart's recipe (`trained/nano/upper`),
# and it is loaded in quick mode too. **To train your own**, set `RETRAIN = True`: then the
# studies' **base model** is used (`lab.study` trains it once per preset and seed and keeps it in
# the studies' cache folder; it already exists if you ran `vocolab sweep` or `vocolab distill`),
# trained here if needed, which takes a while on a CPU (5 steps per stage in quick mode).
#
# The student gets K = 4 VoCo tokens, so that there is more than one to look at in section 3,
# starts from the teacher's weights (exactly as `vocolab distill` does) and trains with
# `logits+attention`, so that every term shows.

# %%
RETRAIN = False  # True: the studies' base model (trained here if it is not in the cache)

cfg = lab.study_config(info)  # the preset, shrunk in quick mode as the studies do
shipped = lab.use_shipped(info, RETRAIN)
if shipped:
    teacher = lab.shipped("upper")[0]
    data = lab.data(cfg, progress=not info.quick)
else:
    study = lab.study(cfg, progress=not info.quick)
    data, teacher = study.data, study.upper

K = 4
student_cfg = cfg.override(**{"voco.tokens": K})
STEPS = lab.study_steps()  # the same budget as every cell of `vocolab distill`
torch.manual_seed(info.seed)
student = DistillModule(student_cfg, objective="logits+attention", stage="notebook06-student", steps=STEPS,
                        tokenizer=data.tokenizer)
student.model.load_backbone(teacher.state_dict())
student.set_teacher(teacher)
V = cfg.data.image_tokens
print(f"preset {cfg.preset}: V = {V} patches ({cfg.data.image_size} px / {cfg.data.patch_size} px), K = {K}, "
      f"{cfg.llm.layers} LLM layers; objective {student.objective!r}, tau = {student.temperature}, "
      f"weights KL {student.kl_weight} / hidden {student.hidden_weight}")

# %% [markdown]
# One batch: every question about one held-out scene (never seen in training), one question
# per sample, laid out by `make_batch` as `[BOS][IMG x V][VOCO x K][question][answer][EOS]`.
# `distill_losses` returns each term unweighted plus the weighted total. Next to them we put
# the teacher's own next-token loss (what the student could reach if it read as well as the
# teacher) and the hidden-state gap layer by layer.

# %%
held, tok = data.splits["heldout"], data.tokenizer
SCENE = 0
questions, answers = held.questions[SCENE], held.answers[SCENE]
batch = make_batch(tok, data.ids, questions, answers, [held.images[SCENE]] * len(questions),
                   image_tokens=V, voco_tokens=K)


before = loss_report(student, batch)
pd.Series(before, name="before training").to_frame().round(4)

# %% [markdown]
# **Before any training** the student *is* the teacher, run under the `voco` mask: the lower
# bound of notebook 05. So `ce` is how badly the upper-bound model answers when the image is
# hidden from its text, `kl` how far its answer distribution moved, and `hidden` how far its
# text's hidden states moved. `hidden` averages the per-layer rows below it, and they are not
# on one scale: layers 0 to N-2 are the raw residual stream, whose size typically grows with depth,
# while transformers returns the **last** layer after the final norm, so its gap is small
# whatever happened. An unweighted mean over layers is therefore mostly the middle layers'.
# Compare the terms' sizes too: with both weights at 1, whichever term is largest dominates the
# gradient (exercises 2 and 3).
#
# Now train the student for the same number of steps as a cell of `vocolab distill` (5 in quick
# mode, so expect small changes), and measure the same batch again:

# %%
fine_tune(student, data, student_cfg, lab.runs_folder("notebook06"), student.stage, STEPS, init=teacher,
          progress=not info.quick)
student.cpu()
teacher.cpu()  # the frozen teacher follows the student to an accelerator and back

after = loss_report(student, batch)
pd.DataFrame({"before training": before, f"after {STEPS} steps": after}).round(4)

# %% [markdown]
# The teacher's row does not move (it is frozen); the student's terms fall, the distillation
# terms fastest: at the start the student is far from the teacher in ways a few steps can
# repair. How close `ce` gets to the teacher's own is the whole question of VoCo: the distance
# that remains is the price of reading K tokens instead of V. (With a barely trained teacher,
# as in quick mode, the student can even end up *below* the teacher's `ce` on one batch: the
# teacher is a reference, not a bound.)
#
# ## 3. Attention: what the text reads
#
# `attention_maps(model, batch, mask)` runs one eager forward (the only attention backend
# that returns weights) and returns, for every layer and head, the text positions' attention
# to the image patches and to the VoCo tokens, and the VoCo tokens' attention to the patches,
# shaped to be drawn over the patch grid. We take one held-out question and run:
#
# * the **teacher** under `causal`: its text reads the image directly (`text_to_image`);
# * the **student** under `voco`: its text reads only the VoCo tokens (`text_to_voco`; its
#   `text_to_image` is exactly 0), and each VoCo token reads the image (`voco_to_image`).

# %%
question, answer = questions[0], answers[0]
one = make_batch(tok, data.ids, [question], [answer], held.images[[SCENE]], image_tokens=V, voco_tokens=K)
t_maps = attention_maps(teacher, one, mask="causal")
s_maps = attention_maps(student.model, one, mask="voco")
for name in ("text_to_image", "text_to_voco", "voco_to_image"):
    print(f"{name:14s} {tuple(t_maps[name].shape)}")
print("grid:", t_maps["grid"], "| student text -> image, largest weight:", s_maps["text_to_image"].abs().max().item())

t_att = mean_attention(t_maps)  # averaged over heads and the question's text positions, per layer
student_att = mean_attention(s_maps)
pd.DataFrame({"teacher text -> image": t_att["text_to_image"].sum(-1),
              "teacher text -> VoCo": t_att["text_to_voco"].sum(-1),
              "student text -> VoCo": student_att["text_to_voco"].sum(-1)},
             index=pd.Index(range(cfg.llm.layers), name="layer")).round(3)

# %% [markdown]
# The table is the **share** of the text's attention (averaged over heads and text positions)
# that goes to the image or to the VoCo tokens; the rest goes to BOS and the text itself. Two
# things to keep in mind before reading the maps:
#
# * under `voco` the student's text cannot see BOS, so the VoCo tokens also take over BOS's
#   job as the **attention sink** (where a head puts its attention when it has nothing to
#   read). A large text → VoCo share is partly that, not content;
# * the teacher's text reads the K VoCo tokens too (they are in its causal past): the upper
#   bound was trained with them in the sequence.
#
# The scene, and the maps layer by layer (rows): the teacher's text → image attention over the
# patch grid, the student's text → VoCo attention (one bar per VoCo token), and what each VoCo
# token reads in the image. Each heatmap has its own colour scale (its largest patch is
# brightest); the number in its title is the total share of attention on the image.

# %%
plot_images([held.images[SCENE]], [f"{question} {answer}"], wrap=40)

# %%
plot_distill_attention(held.images[SCENE], t_att, student_att)

# %% [markdown]
# The student above trained for only a few steps. The VoCo model the repository ships was trained
# by the whole recipe with K = 1: its one VoCo token must hold the whole scene. The same
# question, the same teacher, and what a trained VoCo token reads:

# %%
if shipped:
    voco = lab.shipped("voco")[0]
    one_k = make_batch(tok, data.ids, [question], [answer], held.images[[SCENE]], image_tokens=V,
                       voco_tokens=voco.cfg.voco.tokens)
    display(plot_distill_attention(held.images[SCENE], t_att, mean_attention(attention_maps(voco, one_k, mask="voco"))))

# %% [markdown]
# **How to read it.** Left column: where the teacher's text finds what it needs. Right
# columns: where the student's VoCo tokens look when they compress the scene, before any
# question is asked (they precede the text, so they are **query-blind**). The student's text
# can only get what its VoCo tokens gathered, weighted by the bars. Things to look for in a
# trained model (the shipped one above; the student trained here in quick mode is not):
#
# * does the teacher's text attend to the object the question is about, and in which layers?
# * do the VoCo tokens cover the objects of the scene, or spread evenly over the background?
#   With one VoCo token there is no choice but to summarise everything; with K = 4, do the
#   tokens divide the scene between them, or do they all look at the same place (they share
#   one learned embedding and differ only by position)?
# * are the bars even, or does one VoCo token carry the text's attention (a sink)?
#
# The `attention` objective never compares these maps directly (section 1): it compares the
# hidden states they produce. If the student's text ends up in the teacher's hidden state,
# the VoCo tokens must have gathered what the teacher's text read, whatever the maps look like.
#
# ## 4. The comparison: four objectives, same steps and seed
#
# `lab.run_distill_study` (the `vocolab distill` command) starts every run from the same base
# model, adds K VoCo tokens and trains under the `voco` mask for the same number of steps, with
# the same seed and data order; only the objective differs. It evaluates held-out exact-match
# accuracy, per question family, and **retention** = (acc − lower) / (upper − lower) against
# the upper and lower bound measured in the same run. Finished runs are stored as JSON cells,
# so an interrupted study resumes where it stopped.
#
# Set `LOAD_COMMITTED = True` to read the committed nano results in `figures/distill/`
# (made by `vocolab distill`), if your checkout has them. Otherwise a study runs here: in quick
# mode 5 steps per run and 40 held-out questions (machinery only), outside it the preset's real
# settings (then expect a long run on a CPU).

# %%
LOAD_COMMITTED = False
OUT = lab.runs_folder("notebook06-study", fresh=info.quick)  # quick mode: always rerun; otherwise resume
body = lab.study_results("distill", lambda: lab.run_distill_study(info.preset, OUT, seed=info.seed,
                                                                   limit=40 if info.quick else None,
                                                                   progress=not info.quick),
                         load_committed=LOAD_COMMITTED)
print(f"{body['distill']['steps']} training steps per run")

# %%
display(Markdown(distill_markdown(body)))

# %%
plot_distill(body)

# %% [markdown]
# A difference between two accuracies is only worth reading next to its noise. With $n$
# held-out questions an accuracy $p$ has a standard error of about $\sqrt{p(1-p)/n}$ (a poor
# approximation near 0 and 1, where it claims no noise at all), and every run here is **one
# seed**:

# %%
n = body["eval"]["examples"]
pd.DataFrame([{"run": r["name"], "accuracy": r["accuracy"],
               "± 2 s.e.": 2 * math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / n),
               "retention": r.get("retention")} for r in body["runs"]]).set_index("run").round(3)

# %% [markdown]
# **Reading it honestly.**
#
# * **Quick-mode numbers mean nothing.** Five training steps and 40 questions: the base model
#   has hardly learned, the upper bound may score *below* the lower bound, and then retention
#   is undefined: `-` in the table, `None` above. `plot_distill` draws an undefined retention
#   as a bar at 0.00, so read the figure next to the table. Quick mode only shows that the
#   machinery runs end to end.
# * **The committed results are real runs**: the full nano preset, every objective trained for
#   the same number of steps from the same base model, evaluated on the whole held-out split.
#   Their `provenance` block says which command, commit, device and how long.
# * **Whichever objective wins is reported**, including when it is `implicit`, the paper's own
#   code. There are good reasons the explicit terms may not help: a one-word answer leaves the
#   teacher little "dark knowledge" beyond the label, the teacher is itself imperfect (its
#   mistakes are distilled too), and the hidden-state term asks K tokens to reproduce what V
#   tokens gave, which may be impossible at K = 1 and pull the student away from simply
#   answering right. A gap smaller than the ± 2 s.e. column, with one seed, is not a result.
# * Retention at K = 4 is measured against the same lower bound as K = 1 (the upper-bound
#   model read through **one** VoCo token), as in `vocolab sweep`.
#
# ## Exercises
#
# 1. **Temperature.** Train the section 2 student with `objective="logits"` and
#    `temperature=1.0`, then `4.0` (same steps and seed), and compare `loss_report` on the batch
#    and held-out accuracy (`vocolab.evaluate.model_run(student.model, tok, held,
#    vocolab.evaluate.Questions.of(held), vocolab.data.FAMILIES, name="t4", method="voco",
#    mask="voco", k=K)`). Predict first, from the toy example in section 1: which temperature
#    transfers more about the runner-up answers?
# 2. **Weights.** In section 2, `hidden` and `ce` can differ by an order of magnitude. Choose
#    `hidden_weight` so that the two weighted terms start about equal, retrain, and compare with
#    the default. Is a term that dominates the loss helping or just loud?
# 3. **Which layers to align.** `hidden_layers=[-1]` aligns only the last layer (after the
#    final norm: close to aligning the logits), `[0]` only the first (how the text reads the
#    VoCo tokens right away), `[1, 2]` the middle ones that dominate the default mean. Which one
#    lowers `ce` most in the same steps? Does the per-layer gap of section 2 predict it?
# 4. **K.** `lab.run_distill_study(info.preset, OUT, ks=(1, 2, 4, 8))`: does explicit distillation
#    help more where the bottleneck is tightest (K = 1) than at K = 8? Redraw section 3's maps
#    for a student trained with K = 8: do the VoCo tokens divide the scene?
# 5. **The question matters to the teacher, not to the VoCo tokens.** Draw section 3's maps
#    for two questions about the same scene (a colour and a spatial one). The teacher's text →
#    image maps change with the question; why can the VoCo → image maps not change at all?

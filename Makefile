# vocolab: one command to install, one to test, one to run the main job.
# `make quickstart` and `make test` create .venv with pinned versions on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CACHE  := $(CURDIR)/.cache
PRESET ?= nano
SEED   ?= 0
# the temporal and MoD studies' clip models: 1,600 steps on 8,000 clips each (400 steps on 2,000 left video unlearned);
# the temporal cell, distilled from the video upper bound through its answer logits, 2,600 steps in batches of 16
# clips from that upper bound plus the image VoCo model's change from the scene model (task arithmetic; validation
# 0.728 at 850 steps of 32 against 0.672 from the upper bound alone and 0.617 from the image VoCo model), with 10
# questions per training clip, the teacher's answers kept per clip after the first epoch (on a 2-core CPU 2,300
# steps of 16 took 17.9 min, 1,150 of 32 18.5: validation 0.813 against 0.783; 4,600 of 8 0.792 in 19.9 min;
# held-out 0.787), under the `sdpa_frames` attention (the same numbers, a step ~12% cheaper, so 2,600 steps in the
# minutes 2,300 took: validation 0.823), the KL at temperature 1 (validation 0.831 against 0.823 at 2);
# every clip model of both studies from the scene model tuned 550 steps on scenes half drawn as clip frames (video
# upper bound 0.693 on validation against 0.551 from the untuned one)
CLIPS    ?= --steps 1600 --train-clips 8000 --off-lattice-steps 550
TEMPORAL ?= $(CLIPS) --temporal-steps 2600 --temporal-batch 16 --temporal-objective logits --temporal-init merged \
            --temporal-merge 1 --temporal-questions 10 --temporal-teacher-cache --temporal-attention sdpa_frames \
            --temporal-temperature 1
MOD      ?= $(CLIPS)

# Everything a run writes besides its results stays inside the ignored .cache folder.
export VOCOLAB_CACHE           := $(CACHE)
export HF_HOME                 := $(CACHE)/hf
export MPLCONFIGDIR            := $(CACHE)/mpl
export TORCHINDUCTOR_CACHE_DIR := $(CACHE)/inductor
export HF_HUB_OFFLINE          := 1
export HF_DATASETS_OFFLINE     := 1
export TOKENIZERS_PARALLELISM  := false

.PHONY: help env quickstart sweep distill temporal mod scaling bench models test gpu-check lab clean

help:
	@echo "make quickstart   create .venv (first time) and run the main job (preset $(PRESET))"
	@echo "make sweep        every compression method x token count -> figures/sweep (resumable)"
	@echo "make distill      the VoCo training objectives compared -> figures/distill (resumable)"
	@echo "make temporal     temporal tuning on video clips -> figures/temporal (resumable)"
	@echo "make mod          mixture-of-depths on video clips vs full computation -> figures/mod (resumable)"
	@echo "make scaling      LLM size x visual tokens grid and the scaling law -> figures/scaling (resumable)"
	@echo "make bench        step time, tokens/s, MFU and memory per training stage -> figures/bench-$(PRESET)"
	@echo "make models       train (quickstart, temporal, mod; seed 0) and ship the nano models to trained/nano"
	@echo "make test         create .venv (first time), run unit tests and every notebook (quick mode)"
	@echo "make gpu-check    unit tests, every command and every notebook on this machine's GPU: one line each"
	@echo "make lab          open JupyterLab on notebooks/"
	@echo "make clean        remove .venv and .cache"

env: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "vocolab needs Python 3.10+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/vocolab quickstart --preset $(PRESET) --seed $(SEED) --out figures/quickstart

sweep: $(STAMP)
	$(VENV)/bin/vocolab sweep --preset $(PRESET) --seed $(SEED) --out figures/sweep

distill: $(STAMP)
	$(VENV)/bin/vocolab distill --preset $(PRESET) --seed $(SEED) --out figures/distill

temporal: $(STAMP)
	$(VENV)/bin/vocolab temporal --preset $(PRESET) --seed $(SEED) $(TEMPORAL) --out figures/temporal

mod: $(STAMP)
	$(VENV)/bin/vocolab mod --preset $(PRESET) --seed $(SEED) $(MOD) --out figures/mod

scaling: $(STAMP)
	$(VENV)/bin/vocolab scaling --preset $(PRESET) --seed $(SEED) --out figures/scaling

bench: $(STAMP)
	$(VENV)/bin/vocolab bench --preset $(PRESET) --seed $(SEED) --out figures/bench-$(PRESET)

models: $(STAMP)
	$(VENV)/bin/vocolab quickstart --preset nano --seed 0 --out figures/quickstart
	$(VENV)/bin/vocolab temporal --preset nano --seed 0 $(TEMPORAL) --out figures/temporal
	$(VENV)/bin/vocolab mod --preset nano --seed 0 $(MOD) --out figures/mod
	$(VENV)/bin/vocolab ship --preset nano --seed 0

test: $(STAMP)
	VOCOLAB_QUICK=1 $(PY) -m pytest -q tests --nbmake notebooks

gpu-check: $(STAMP)
	$(PY) tools/device_check.py

lab: $(STAMP)
	$(PY) -m pip install --quiet "jupyterlab==4.6.6"
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf $(VENV) $(CACHE)

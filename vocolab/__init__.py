"""vocolab: a workbench for vision-token compression in vision-language models.

The folders are the architecture, in the order data flows through it:

    core/        config, sequence layouts, attention masks, device and seeding
    data/        scenes and clips -> tokens + layout -> batches
    models/      mini CLIP, projector, mini LLaMA, the VoCo VLM, checkpoints
    zoo/         every other way to cut visual cost (pooling, queries, dropping, MoD)
    inference/   the VoCo cache, greedy decoding, FLOPs and latency
    training/    LightningModules, distillation, the Trainer, the recipe
    evaluation/  held-out runs, metrics, baselines, the scaling-law fit
    studies/     the jobs behind the `vocolab` command (quickstart, sweep, ...)
    reporting/   every figure and table, results files, widgets
    lab.py       the few calls a notebook needs

`docs/architecture.md` walks the data path file by file.
"""

__version__ = "0.1.0"

"""`vocolab eval`: the miniature Table 1 for saved checkpoints (Lightning `.ckpt` files or
vocolab checkpoint folders): upper, lower, blind and every VoCo model on the same
held-out questions, written to `results.json` and `table1.md`; with `--confusion FAMILY`,
also which answers each model gave in that family (`confusion_<family>.png`).
"""

from __future__ import annotations

from vocolab.data.split import Split
from vocolab.evaluation.heldout import standard_runs


def run_eval(upper_path: str, voco_paths: list[str], out: str, limit: int | None = None,
             command: str = "vocolab eval", confusion: tuple[str, ...] = ()) -> dict:
    """`vocolab eval`: held-out Table 1 for saved checkpoints, written to `out/results.json`."""
    import time

    from vocolab.core.outputs import staged_output, write_json
    from vocolab.data.scenes import FAMILIES
    from vocolab.data.tokenizer import build_tokenizer
    from vocolab.reporting.confusion import plot_confusion
    from vocolab.reporting.provenance import provenance
    from vocolab.reporting.results import results
    from vocolab.reporting.style import save_figure
    from vocolab.reporting.tables import table1_markdown
    from vocolab.training.loading import load_model

    start = time.perf_counter()
    unknown = sorted(set(confusion) - set(FAMILIES))
    if unknown:
        raise ValueError(f"--confusion: unknown families {unknown}; choose from {list(FAMILIES)}")
    upper = load_model(upper_path)
    vocos = {}
    for path in voco_paths:
        model = load_model(path)
        if model.cfg.preset != upper.cfg.preset or model.cfg.data != upper.cfg.data:
            raise ValueError(f"{path} was trained for another preset or data than {upper_path}")
        vocos[f"voco-k{model.cfg.voco.tokens}"] = model
    cfg = upper.cfg
    tokenizer = build_tokenizer(cfg.data)
    with staged_output(out) as stage:
        train, heldout = Split.load(cfg, "scenes", "train"), Split.load(cfg, "scenes", "heldout")
        runs, qs = standard_runs(upper, vocos, tokenizer, train, heldout, FAMILIES, limit, confusion=confusion)
        body = results(provenance(command, cfg.preset, cfg.seed, time.perf_counter() - start, out),
                       {"split": "heldout", "examples": len(qs), "families": list(FAMILIES)}, runs)
        write_json(stage / "results.json", body)
        (stage / "table1.md").write_text(table1_markdown(runs, FAMILIES) + "\n")
        for family in confusion:
            save_figure(plot_confusion({r["name"]: r["confusion"][family] for r in runs if "confusion" in r}, family),
                        stage / f"confusion_{family}.png")
    print(table1_markdown(runs, FAMILIES))
    return body

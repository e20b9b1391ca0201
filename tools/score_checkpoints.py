"""Score saved checkpoints on the VALIDATION split, per question family (never the held-out one).

Why: a stage's quarter checkpoints show how a run got where it ended (when colour bound,
whether `spatial` ever left chance), and a finished quickstart's stages are worth comparing
with an experiment's without training anything again:

    python tools/score_checkpoints.py RUNS/quickstart-nano-seed0/upper/checkpoints/*.ckpt
    python tools/score_checkpoints.py --mask voco RUNS/quickstart-nano-seed0/voco/checkpoints/*.ckpt

`--mask voco` scores VoCo models (K from each checkpoint's config). The split is read from
the first checkpoint's config; checkpoints are scored in step order (`last.ckpt` last).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plateau_screen import step_order, validation  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--mask", choices=("causal", "voco"), default="causal",
                    help="causal: an upper bound (every image token); voco: a VoCo model")
    args = ap.parse_args(argv)
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        raise SystemExit(f"score_checkpoints: no such checkpoint: {', '.join(missing)}")
    for ckpt, scores in validation(sorted(args.checkpoints, key=step_order), mask=args.mask):
        print(f"{ckpt}: validation {scores}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

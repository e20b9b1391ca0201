"""Markdown tables of the main job, rendered from its results body (never typed by
hand): Table 1 (held-out exact match per run and family, with retention) and Table 7
(what answering costs with no, full and VoCo caching).
"""

from __future__ import annotations

from typing import Sequence


def pct(x: float | None, unit: str = "%") -> str:
    """A share as a percentage with one decimal (`unit` after it); "-" for a missing value."""
    return "-" if x is None else f"{100 * x:.1f}{unit}"


def table1_markdown(runs: Sequence[dict], families: Sequence[str]) -> str:
    """Miniature Table 1: held-out exact match per run and family, with retention."""
    head = ["run", "method", "tokens", "mask", "accuracy", *families, "retention"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        cells = [r["name"], r["method"], str(r["tokens"]), r.get("mask", "-"), pct(r["accuracy"]),
                 *(pct(r.get("per_family", {}).get(f)) for f in families), pct(r.get("retention"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table7_markdown(cost: dict) -> str:
    """Miniature Table 7: one image, one question; FLOPs, latency and cache size per setting."""
    names = {"no_caching": "no caching", "full_caching": "full caching", "voco_caching": "VoCo caching"}
    lines = ["| setting | cached tokens | cache size | FLOPs (answering) | latency (median) |",
             "|---|---|---|---|---|"]
    for key, label in names.items():
        row = cost["settings"][key]
        size = "-" if not row["cache_bytes"] else f"{row['cache_bytes']:,} B"
        if "cache_bytes_reduction" in row:
            size += f" ({-100 * row['cache_bytes_reduction']:.1f}% vs full)"
        flops = f"{row['flops'] / 1e6:.2f} M"
        latency = f"{row['latency_ms']['median']:.2f} ms"
        if key != "no_caching":
            flops += f" ({-100 * row['flops_reduction']:.1f}%)"
            latency += f" ({-100 * row['latency_reduction']:.1f}%)"
        lines.append(f"| {label} | {row['cached_tokens'] or '-'} | {size} | {flops} | {latency} |")
    return "\n".join(lines)

"""The bench's table: per training stage the step time, throughput, FLOPs and MFU, then
the evaluation's questions per second, with the device and the peak the MFU divides by."""

from __future__ import annotations


def bench_markdown(body: dict) -> str:
    b = body["bench"]
    lines = ["| stage | batch | step ms | tokens / step | tokens / s | GFLOP / step | MFU | peak memory |",
             "|---|---|---|---|---|---|---|---|"]
    for r in body["runs"]:
        if "step_ms" not in r:
            continue
        memory = "-" if r.get("peak_mem_bytes") is None else f"{r['peak_mem_bytes'] / 2**30:.2f} GiB"
        lines.append(f"| {r['stage']} | {r['batch']} | {r['step_ms']:.1f} | {r['tokens_per_step']:.0f} | "
                     f"{r['tokens_per_s']:,.0f} | {r['flops_per_step'] / 1e9:.2f} | {100 * r['mfu']:.2f}% | {memory} |")
    lines += ["", "| evaluation | questions | seconds | questions / s |", "|---|---|---|---|"]
    for r in body["runs"]:
        if "questions_per_s" in r:
            lines.append(f"| {r['stage']} | {r['questions']} | {r['seconds']:.2f} | {r['questions_per_s']:,.1f} |")
    p = body["provenance"]
    lines += ["", f"{p['device']} ({b['device']}, {b['precision']}, {b['threads']} threads); peak "
                  f"{b['peak_flops'] / 1e12:.3g} TFLOP/s ({b['peak_source']}); {b['steps']} timed steps after "
                  f"{b['warmup']} warm-up steps per stage."]
    return "\n".join(lines)


__all__ = ["bench_markdown"]

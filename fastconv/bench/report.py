"""Ratio tables (fastconv throughput / best peer's throughput) and an optional bar chart."""
import math

NHWC_PEERS = ("torch_nchw", "torch_nhwc", "onnxruntime", "numpy")
NCHW_PEERS = ("torch_nchw", "onnxruntime")
POOL_PEERS = ("torch_nchw", "torch_nhwc", "numpy")


def _best(seconds, names):
    present = [(seconds[n], n) for n in names if n in seconds]
    return min(present) if present else (None, None)


def conv_table(rows, sgemm):
    lines = [f"{'layer':<12} {'op':<11} {'GFLOP':>6} {'fc GF/s':>8} {'best peer':>17} {'ratio':>6} "
             f"{'%sgemm':>6} {'fc-nchw':>8} {'ratio':>6}"]
    for row in rows:
        s, g = row["seconds"], row["gflop"]
        fc = s["fastconv_nhwc"]
        peer_s, peer = _best(s, NHWC_PEERS)
        row["ratio_nhwc"] = peer_s / fc if peer else None
        row["ratios"] = _ratios(s, fc, NHWC_PEERS)
        nchw_peer_s, _ = _best(s, NCHW_PEERS)
        row["ratio_nchw"] = nchw_peer_s / s["fastconv_nchw"] if nchw_peer_s else None
        peer_txt = f"{peer} {g / peer_s:6.1f}" if peer else "-"
        ratio = f"{row['ratio_nhwc']:.2f}" if peer else "-"
        ratio_nchw = f"{row['ratio_nchw']:.2f}" if row["ratio_nchw"] else "-"
        lines.append(f"{row['case']:<12} {row['op']:<11} {g:6.2f} {g / fc:8.1f} {peer_txt:>17} {ratio:>6} "
                     f"{100 * g / fc / sgemm:5.0f}% {g / s['fastconv_nchw']:8.1f} {ratio_nchw:>6}")
    for op in sorted({r["op"] for r in rows}):
        ratios = [r["ratio_nhwc"] for r in rows if r["op"] == op and r["ratio_nhwc"]]
        nchw = [r["ratio_nchw"] for r in rows if r["op"] == op and r["ratio_nchw"]]
        if ratios:
            nchw_text = f"; channels_first vs NCHW peers {geomean(nchw):.2f}" if nchw else ""
            lines.append(f"{op}: geometric mean ratio {geomean(ratios):.2f} (min {min(ratios):.2f}){nchw_text}")
        lines.extend(_per_peer_lines(op, [r for r in rows if r["op"] == op]))
    return "\n".join(lines)


def _ratios(seconds, fastconv_seconds, names):
    """fastconv's throughput over each present peer's (> 1: fastconv is faster)."""
    return {n: seconds[n] / fastconv_seconds for n in names if n in seconds}


def _per_peer_lines(op, rows):
    peers = list(dict.fromkeys(p for r in rows for p in r.get("ratios", {})))
    parts = []
    for peer in peers:
        values = [r["ratios"][peer] for r in rows if peer in r.get("ratios", {})]
        parts.append(f"{peer} {geomean(values):.2f}")
    return [f"  {op} vs each peer (geometric mean over layers): {', '.join(parts)}"] if parts else []


def pool_table(rows, copy_bw):
    lines = [f"{'case':<22} {'op':<17} {'fc ms':>7} {'peer ms':>9} {'ratio':>6} {'fc GB/s':>8} {'%copy':>6}"]
    for row in rows:
        s = row["seconds"]
        fc = s["fastconv_nhwc"]
        peer_s, _ = _best(s, POOL_PEERS)
        row["ratio"] = peer_s / fc if peer_s else None
        row["ratios"] = _ratios(s, fc, POOL_PEERS)
        gbs = row["bytes"] / fc / 1e9
        peer_txt = f"{1e3 * peer_s:9.2f}" if peer_s else f"{'-':>9}"
        ratio = f"{row['ratio']:6.2f}" if peer_s else f"{'-':>6}"
        lines.append(f"{row['case']:<22} {row['op']:<17} {1e3 * fc:7.2f} {peer_txt} {ratio} {gbs:8.2f} "
                     f"{100 * gbs / copy_bw:5.0f}%")
    return "\n".join(lines)


def training_table(rows):
    """Steps per second of one training step (forward, backward, SGD update) and fastconv / best PyTorch."""
    lines = [f"{'model':<14} {'batch':>5} {'fc step/s':>10} {'nchw step/s':>12} {'nhwc step/s':>12} {'ratio':>6}"]
    for row in rows:
        s = row["seconds"]
        fc = s["fastconv_nhwc"]
        peer_s, _ = _best(s, ("torch_nchw", "torch_nhwc"))
        row["ratio"] = peer_s / fc if peer_s else None
        cells = [f"{1 / s[n]:12.2f}" if n in s else f"{'-':>12}" for n in ("torch_nchw", "torch_nhwc")]
        ratio = f"{row['ratio']:6.2f}" if peer_s else f"{'-':>6}"
        lines.append(f"{row['case']:<14} {row['batch']:>5} {1 / fc:10.2f} {cells[0]} {cells[1]} {ratio}")
    lines.append("training step: ratio = fastconv steps/s / PyTorch's in its faster layout (target >= 1.3)")
    return "\n".join(lines)


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def plot(rows, path):
    """Bar chart of the per-layer ratios (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conv = [r for r in rows if r.get("ratio_nhwc")]
    ops = sorted({r["op"] for r in conv})
    cases = list(dict.fromkeys(r["case"] for r in conv))
    fig, ax = plt.subplots(figsize=(max(6, len(cases) * 0.9), 4))
    width = 0.8 / max(1, len(ops))
    for i, op in enumerate(ops):
        values = [next((r["ratio_nhwc"] for r in conv if r["case"] == c and r["op"] == op), 0) for c in cases]
        ax.bar([j + i * width for j in range(len(cases))], values, width, label=op)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + width * (len(ops) - 1) / 2 for j in range(len(cases))])
    ax.set_xticklabels(cases, rotation=30, ha="right")
    ax.set_ylabel("fastconv / best peer (throughput)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

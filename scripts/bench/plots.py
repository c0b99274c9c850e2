"""PNG plots with matplotlib's Agg backend (no display needed): one benchmark's speed against length,
parallelism and context depth (with the memory-bandwidth ceiling and the engine's own tool), and the same
curves of several benchmarks side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100


def _log2_axis(ax, values: list[int], label: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([str(v) for v in values])
    ax.set_xlabel(label)
    ax.grid(True, alpha=0.3)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _title(s: dict) -> str:
    return f"{s['label']} ({'remote API' if s.get('remote') else s['engine']})"


def single_stream(summary: dict, path: Path) -> Path | None:
    points = [x for x in summary["single_stream"] if x["tokens_per_s"] is not None]
    if not points:
        return None
    n = [x["max_tokens"] for x in points]
    fig, (speed, ttft) = plt.subplots(1, 2, figsize=(9, 3.6))
    rate = [x["tokens_per_s"] for x in points]
    low = [r - x["tokens_per_s_min"] for r, x in zip(rate, points, strict=True)]
    high = [x["tokens_per_s_max"] - r for r, x in zip(rate, points, strict=True)]
    speed.errorbar(n, rate, yerr=[low, high], marker="o", capsize=3, label="tokens/s (prefill included)")
    decode = [x["decode_tokens_per_s"] for x in points]
    ceilings = [x.get("ceiling_tokens_per_s") for x in points]
    if all(ceilings):
        speed.plot(n, decode, marker="s", color="tab:green", label="decode tokens/s")
        speed.plot(n, ceilings, linestyle="--", color="tab:red", label="memory-bandwidth ceiling")
        for x, y, pct in zip(n, decode, (x.get("percent_of_ceiling") for x in points), strict=True):
            if y is not None and pct is not None:
                speed.annotate(f"{pct:.0f}%", (x, y), textcoords="offset points", xytext=(0, 5), fontsize=7,
                               ha="center")
        speed.legend(fontsize=7)
    speed.set_ylabel("tokens/s (median, min–max)")
    speed.set_ylim(bottom=0)
    _log2_axis(speed, n, "generated tokens")
    ttft.plot(n, [x["ttft_ms"] for x in points], marker="o", color="tab:orange")
    ttft.set_ylabel("time to first token, ms (median)")
    ttft.set_ylim(bottom=0)
    _log2_axis(ttft, n, "generated tokens")
    fig.suptitle(f"Single stream: {_title(summary)}")
    return _save(fig, path)


def parallel(summary: dict, path: Path) -> Path | None:
    points = [x for x in summary["parallel"] if x["total_tokens_per_s"] is not None]
    if not points:
        return None
    n = [x["parallel"] for x in points]
    fig, (total, session) = plt.subplots(1, 2, figsize=(9, 3.6))
    total.plot(n, [x["total_tokens_per_s"] for x in points], marker="o")
    total.set_ylabel("total tokens/s")
    total.set_ylim(bottom=0)
    _log2_axis(total, n, "parallel streams")
    session.plot(n, [x["per_session_tokens_per_s"] for x in points], marker="o", color="tab:green",
                 label="per session (median)")
    session.axhline(summary["threshold"]["tokens_per_s"], color="tab:red", linestyle="--",
                    label=f"{summary['threshold']['tokens_per_s']:g} tokens/s")
    session.set_ylabel("tokens/s per session")
    session.set_ylim(bottom=0)
    session.legend(fontsize=8)
    _log2_axis(session, n, "parallel streams")
    fig.suptitle(f"Parallel, {summary['parallel_tokens']} tokens per stream: {_title(summary)}")
    return _save(fig, path)


def depth(summary: dict, path: Path) -> Path | None:
    """pp and tg tokens/s against the context depth: ours, each engine tool's, and (tg) the ceiling."""
    points = [d for d in summary.get("depth", []) if d["tokens_per_s"] is not None]
    if not points:
        return None
    kinds = [k for k in ("pp", "tg") if any(d["test"] == k for d in points)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.8 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for size in sorted({d["tokens"] for d in points if d["test"] == kind}):
            series = sorted((d for d in points if d["test"] == kind and d["tokens"] == size), key=lambda d: d["depth"])
            depths = [d["depth"] for d in series]
            line = ax.plot(depths, [d["tokens_per_s"] for d in series], marker="o", label=f"{kind}{size}: ours")[0]
            for tool in sorted({t for d in series for t in d["anchors"]}):
                ax.plot(depths, [d["anchors"].get(tool, {}).get("tokens_per_s") for d in series], marker="x",
                        linestyle=":", color=line.get_color(), label=f"{kind}{size}: {tool}")
            if kind == "tg" and all(d["ceiling_tokens_per_s"] for d in series):
                ax.plot(depths, [d["ceiling_tokens_per_s"] for d in series], linestyle="--", color="tab:red",
                        label=f"tg{size}: ceiling")
                for d in series:
                    if d["percent_of_ceiling"] is not None:
                        ax.annotate(f"{d['percent_of_ceiling']:.0f}%", (d["depth"], d["tokens_per_s"]),
                                    textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
        ax.set_title("prefill (pp)" if kind == "pp" else "decode (tg)")
        ax.set_xlabel("context depth (tokens in the KV cache)")
        ax.set_ylabel("tokens/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"By context depth: {_title(summary)}")
    return _save(fig, path)


def comparison(summaries: list[dict], section: str, x_key: str, y_key: str, ylabel: str, xlabel: str, title: str,
               path: Path, threshold: float | None = None) -> Path | None:
    """One line per benchmark: `y_key` against `x_key` of each entry in its `section` list."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs: set[int] = set()
    for s in summaries:
        points = [p for p in s[section] if p.get(y_key) is not None]
        if not points:
            continue
        xs.update(p[x_key] for p in points)
        ax.plot([p[x_key] for p in points], [p[y_key] for p in points], marker="o",
                linestyle="--" if s.get("remote") else "-", label=_title(s))
    if not xs:
        plt.close(fig)
        return None
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle=":", label=f"{threshold:g} tokens/s")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    _log2_axis(ax, sorted(xs), xlabel)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def proxies(series: dict[str, dict[str, dict[int, float | None]]], path: Path, title: str) -> Path | None:
    """Per engine (a column each): streamed tokens/s against concurrency, one line per target (direct, router,
    ...), and below it each proxy's ratio to direct. `series` is {engine: {target: {streams: tokens/s}}}."""
    engines = [e for e, by_target in series.items() if any(v for pts in by_target.values() for v in pts.values())]
    if not engines:
        return None
    fig, axes = plt.subplots(2, len(engines), figsize=(4.6 * len(engines), 6.4), squeeze=False)
    for column, engine in enumerate(engines):
        rates_ax, ratio_ax = axes[0][column], axes[1][column]
        direct = series[engine].get("direct", {})
        xs: set[int] = set()
        for target, points in series[engine].items():
            pts = sorted((n, v) for n, v in points.items() if v is not None)
            xs.update(n for n, _ in pts)
            style = {"marker": "o", "label": target, "linestyle": ":" if target == "direct" else "-"}
            rates_ax.plot([n for n, _ in pts], [v for _, v in pts], **style)
            style["color"] = rates_ax.lines[-1].get_color()  # the same colour for the target in both panels
            ratios = [(n, v / direct[n]) for n, v in pts if direct.get(n)]
            if target == "direct":
                ratio_ax.axhline(1.0, linestyle=":", color=style["color"], label="direct")
            elif ratios:
                ratio_ax.plot([n for n, _ in ratios], [r for _, r in ratios], **style)
        rates_ax.set_title(engine)
        rates_ax.set_ylabel("streamed tokens/s (all clients)")
        ratio_ax.set_ylabel("ratio to direct")
        for ax in (rates_ax, ratio_ax):
            ax.set_ylim(bottom=0)
            _log2_axis(ax, sorted(xs), "concurrent streams")
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)

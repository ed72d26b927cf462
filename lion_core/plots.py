"""PNG charts of an iteration, drawn with matplotlib's object API (no pyplot state, safe in threads)."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lion_core import stages
from lion_core.report import leading_word
from lion_core.store import RunStore, join_uri, read_table, write_bytes_atomic


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def gap_histogram(gaps: Sequence[float], tau: float, iteration: int) -> bytes:
    """Distribution of d = score_T - score_S over resolved items, with the hard threshold tau."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    if gaps:
        lo, hi = min(min(gaps), -1.0), max(max(gaps), tau + 1.0)
        bins = [lo + i * 0.5 for i in range(int((hi - lo) / 0.5) + 2)]
        ax.hist(gaps, bins=bins, color="#4878a8", edgecolor="white")
    ax.axvline(tau, color="#c0392b", linestyle="--", label=f"tau = {tau:g} (hard at or above)")
    ax.set_xlabel("score gap d = teacher - student (mean of both orders)")
    ax.set_ylabel("items")
    ax.set_title(f"Iteration {iteration}: referee score gap ({len(gaps)} resolved items)")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def hard_fraction(series: Sequence[tuple[int, float]]) -> bytes:
    """Fraction of resolved Cache Pool items judged hard, per iteration."""
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    xs, ys = [k for k, _ in series], [v for _, v in series]
    ax.plot(xs, ys, marker="o", color="#4878a8")
    for x, y in series:
        ax.annotate(f"{y:.0%}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("iteration")
    ax.set_ylabel("hard fraction")
    ax.set_title("Hard instructions per iteration")
    return _png(fig)


def leading_words(hard: Sequence[str], pool: Sequence[str], top: int = 15) -> bytes:
    """Share of each leading word (the verb of an imperative, the wh-word of a question) among hard
    instructions and the whole Cache Pool, as in the paper's Figure 3."""
    h = Counter(leading_word(t) for t in hard)
    p = Counter(leading_word(t) for t in pool)
    words = [w for w, _ in (h + p).most_common(top)]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ys = range(len(words))
    nh, np_ = max(sum(h.values()), 1), max(sum(p.values()), 1)
    ax.barh([y + 0.2 for y in ys], [h[w] / nh for w in words], height=0.4, label=f"hard ({sum(h.values())})",
            color="#c0392b")
    ax.barh([y - 0.2 for y in ys], [p[w] / np_ for w in words], height=0.4, label=f"cache pool ({sum(p.values())})",
            color="#4878a8")
    ax.set_yticks(list(ys), words)
    ax.invert_yaxis()
    ax.set_xlabel("share of instructions")
    ax.set_title("Leading words: hard instructions vs the whole Cache Pool")
    ax.legend(fontsize=8)
    return _png(fig)


def write_iteration_plots(store: RunStore, k: int, tau: float) -> dict[str, str]:
    """Draw iteration k's charts from its committed judgments and Cache Pool; save them with the run."""
    judgments = read_table(store.ref(k, "judgments")).to_pylist()
    pool = read_table(store.ref(k, "cache_pool")).column("instruction").to_pylist()
    series = []
    for i in store.iterations():
        if i <= k and stages.committed(store, i, "judgments") is not None:
            series.append((i, judgments_hard_fraction(read_table(store.ref(i, "judgments")).to_pylist())))
    charts = {
        "score_gap": gap_histogram([r["d"] for r in judgments if r["d"] is not None], tau, k),
        "hard_fraction": hard_fraction(series),
        "leading_words": leading_words([r["instruction"] for r in judgments if r["label"] == "hard"], pool),
    }
    out = {}
    for name, png in charts.items():
        uri = join_uri(store.iteration_uri(k), "plots", f"{name}.png")
        write_bytes_atomic(uri, png)
        out[name] = uri
    return out


def judgments_hard_fraction(rows: Sequence[dict]) -> float:
    resolved = [r for r in rows if r["label"] in ("hard", "easy")]
    return sum(r["label"] == "hard" for r in resolved) / len(resolved) if resolved else 0.0


def relative_by_category(scores: dict[str, dict]) -> bytes:
    """Relative score per category (and overall), one bar per checkpoint."""
    cats = ["all", *sorted({c for s in scores.values() for c in s["categories"]})]
    names = list(scores)
    fig = Figure(figsize=(max(6, 1.1 * len(cats) * max(1, len(names)) / 2), 4))
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        s = scores[name]
        vals = [(s if c == "all" else s["categories"].get(c, {})).get("relative_score") for c in cats]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(cats))]
        ax.bar(xs, [100 * v if v is not None else 0 for v in vals], width=width, label=name)
    ax.axhline(100, color="#555", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    ax.set_ylabel("relative score (% of reference)")
    ax.set_title("Relative score per category")
    ax.legend(fontsize=8)
    return _png(fig)


def relative_by_checkpoint(scores: dict[str, dict]) -> bytes:
    """Relative score per checkpoint in the order given (base, then each iteration), both orders."""
    names = list(scores)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    for key, label, style in (("relative_score", "mean of both orders", "o-"),
                              ("relative_score_reference_first", "reference first", "s--"),
                              ("relative_score_student_first", "student first", "^--")):
        ys = [100 * scores[n][key] if scores[n][key] is not None else float("nan") for n in names]
        ax.plot(range(len(names)), ys, style, label=label)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("relative score (%)")
    ax.set_title("Relative score per checkpoint")
    ax.legend(fontsize=8)
    return _png(fig)

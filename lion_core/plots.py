"""PNG charts of an iteration, drawn with matplotlib's object API (no pyplot state, safe in threads)."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import PercentFormatter

from lion_core.errors import LionError
from lion_core.files import join_uri, write_bytes_atomic
from lion_core.instruction_types import TypeCounts, sample, type_counts_in_child
from lion_core.report import leading_word
from lion_core.shards import committed
from lion_core.store import RunStore

log = logging.getLogger("lion.plots")

if TYPE_CHECKING:
    from matplotlib.axes import Axes


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
    judgments = store.read_table(store.ref(k, "judgments")).to_pylist()
    pool = store.read_table(store.ref(k, "cache_pool")).column("instruction").to_pylist()
    series = []
    for i in store.iterations():
        if i <= k and committed(store, i, "judgments") is not None:
            series.append((i, judgments_hard_fraction(store.read_table(store.ref(i, "judgments")).to_pylist())))
    hard = [r["instruction"] for r in judgments if r["label"] == "hard"]
    charts = {
        "score_gap": gap_histogram([r["d"] for r in judgments if r["d"] is not None], tau, k),
        "hard_fraction": hard_fraction(series),
        "leading_words": leading_words(hard, pool),
    }
    try:
        charts["instruction_types"] = iteration_instruction_types(store, k, pool, hard)
    except LionError as err:  # the optional spaCy extra is missing: every other chart still comes
        log.warning("iteration %d: no instruction-types chart: %s", k, err)
    out = {}
    for name, png in charts.items():
        uri = join_uri(store.iteration_uri(k), "plots", f"{name}.png")
        write_bytes_atomic(uri, png)
        out[name] = uri
    return out


TYPES_SAMPLE = 2000
"""Cache Pool instructions parsed for the instruction-types chart (a 64K pool would take about a minute)."""


def iteration_instruction_types(store: RunStore, k: int, pool: Sequence[str], hard: Sequence[str]) -> bytes:
    """Figure 3 for iteration k: the Cache Pool (a sample when large), its hard items, and the new
    instructions generated from hard seeds that the filter accepted."""
    candidates = committed(store, k, "candidates")
    new_hard = [c["instruction"] for c in (store.read_table(candidates).to_pylist() if candidates else ())
                if c["status"] == "accepted" and c["origin"] == "hard"]
    shown = sample(pool, TYPES_SAMPLE, seed=k)
    note = f"Cache Pool: a random sample of {len(shown):,} of {len(pool):,} instructions" if len(shown) < len(pool) else ""
    return instruction_types([("Cache Pool", shown), ("hard items", hard), ("new hard instructions", new_hard)],
                             k, note=note)


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
    cis = [scores[n].get("relative_score_ci95") for n in names]
    if any(cis):  # the headline's 95% bootstrap interval over questions
        lo = [100 * c[0] if c else float("nan") for c in cis]
        hi = [100 * c[1] if c else float("nan") for c in cis]
        ax.fill_between(range(len(names)), lo, hi, alpha=0.2, label="95% interval (bootstrap)")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("relative score (%)")
    ax.set_title("Relative score per checkpoint")
    ax.legend(fontsize=8)
    return _png(fig)


_OBJECT_COLOURS = ("#2f5f8a", "#5b8fc0", "#9cc0e0")  # a verb's 1st, 2nd, 3rd most common object
_OTHER_OBJECTS = "#d0d0d0"


def instruction_types(sets: Sequence[tuple[str, Sequence[str]]], iteration: int, top: int = 12,
                      note: str = "") -> bytes:
    """The paper's Figure 3 as Self-Instruct draws it: instruction types as (root verb, direct object).

    One panel per named set (e.g. Cache Pool, hard items, new hard instructions), side by side. Each bar
    is one of the `top` most common verbs; its length is the share of the set's instructions with that
    verb, split into the verb's three most common objects (darkest first, named right of the bar) and
    its other objects. Shares are out of every instruction in the set, so those without a verb-object
    pair (questions, verbs without an object) are the part no bar shows; the panel title counts them.
    `note` goes under the figure title: a caller that charts a sample says so there. Parsing needs the
    optional spaCy extra (see lion_core.instruction_types), loaded only when this chart is drawn."""
    counts = list(zip([name for name, _ in sets], type_counts_in_child([texts for _, texts in sets])))
    height = 1.9 + 0.38 * max(top, 1)
    fig = Figure(figsize=(5.4 * max(len(counts), 1), height), layout="constrained")
    axes = fig.subplots(1, max(len(counts), 1), squeeze=False)[0]
    for ax, (name, c) in zip(axes, counts):
        _type_panel(ax, name, c, top)
    title = f"Iteration {iteration}: instruction types (root verb and its direct object)"
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=11)
    handles = [Rectangle((0, 0), 1, 1, color=col) for col in (*_OBJECT_COLOURS, _OTHER_OBJECTS)]
    fig.legend(handles, ["verb's most common object", "2nd", "3rd", "other objects"],
               loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return _png(fig)


def _type_panel(ax: Axes, name: str, c: TypeCounts, top: int) -> None:
    """One set's panel: stacked bars of its top verbs by object, or a note when the set is empty."""
    if c.total == 0:
        ax.set_title(f"{name}\n0 instructions", fontsize=9)
        ax.text(0.5, 0.5, "no instructions", ha="center", va="center", transform=ax.transAxes, color="#777")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    paired = c.total - c.no_pair
    ax.set_title(f"{name}\n{c.total:,} instructions; {c.no_pair:,} ({c.no_pair / c.total:.0%}) without a "
                 f"verb-object pair", fontsize=9)
    rows = c.top_verbs(top, objects=len(_OBJECT_COLOURS))
    if not rows:
        ax.text(0.5, 0.5, "no verb-object pairs", ha="center", va="center", transform=ax.transAxes, color="#777")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    widest = max(n for _, n, _ in rows) / c.total
    for y, (_, n, objs) in enumerate(rows):
        left = 0.0
        for (_, k), colour in zip(objs, _OBJECT_COLOURS):
            ax.barh(y, k / c.total, left=left, color=colour, height=0.7)
            left += k / c.total
        ax.barh(y, (n - sum(k for _, k in objs)) / c.total, left=left, color=_OTHER_OBJECTS, height=0.7)
        label = f"{n / c.total:.1%}: " + ", ".join(o for o, _ in objs)
        ax.text(n / c.total + widest * 0.02, y, label, va="center", fontsize=7, clip_on=False)
    ax.set_yticks(range(len(rows)), [v for v, _, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # most common verb on top, same spacing whatever the count
    ax.set_xlim(0, widest * 1.9)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"share of all {c.total:,} instructions ({paired:,} with a pair)", fontsize=8)


def compared_runs(runs: Sequence[dict]) -> bytes:
    """`lion compare`: each run's relative score with its 95% interval, and the API requests it made beside it
    (answered by a call or from the store: runs sharing a store pay only for what another did not ask)."""
    names = [r["run"] for r in runs]
    scores = [100 * r["relative_score"] if r.get("relative_score") is not None else float("nan") for r in runs]
    err = [[s - 100 * r["relative_score_ci95"][0] if r.get("relative_score_ci95") else 0 for s, r in zip(scores, runs)],
           [100 * r["relative_score_ci95"][1] - s if r.get("relative_score_ci95") else 0 for s, r in zip(scores, runs)]]
    fig = Figure(figsize=(7, 3.5))
    ax, cost = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ax.bar(range(len(names)), scores, yerr=err, capsize=4, color="#5b8fc0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("relative score (%), 95% interval")
    ax.set_title("Final students")
    cost.bar(range(len(names)), [r.get("api_requests", 0) for r in runs], color="#9cc0e0")
    cost.set_xticks(range(len(names)), names, rotation=30, ha="right")
    cost.set_ylabel("API requests")
    cost.set_title("What each run asked")
    fig.tight_layout()
    return _png(fig)

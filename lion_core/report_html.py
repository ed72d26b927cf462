"""A finished (or unfinished) run as one self-contained HTML page: the iterations' figures, the evaluation's
scores, the final checkpoint and every chart, each embedded as a `data:` PNG (no Prefect here).

The page loads nothing: its styles are inline and its Content-Security-Policy allows images from `data:`
URIs only, so it reads the same when mailed, attached to a ticket or opened years later without the run
folder. Every string taken from the run is HTML-escaped: instructions, reasons and paths are user data.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lion_core.evaluation import run_scores
from lion_core.files import exists, filesystem, join_uri, read_bytes
from lion_core.report import read_final_report, read_summaries
from lion_core.results import IterationSummary, UsageRow, per_role
from lion_core.store import RunStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def run_evaluation_id(run_id: str) -> str:
    """The evaluation `lion run` makes of a run when `evaluation.after_run` is set (flows/lion.py names it so)."""
    return f"{run_id}-eval"


def stored_evaluation_root(run_info: Mapping[str, Any], runs_root: str) -> str:
    """Where the run's evaluations live by the config it was made with (run.json), for a report asked for
    without a config: its `evaluation.output_root`, else the default beside the runs."""
    output_root = ((run_info.get("config") or {}).get("evaluation") or {}).get("output_root")
    return output_root or f"{runs_root.rstrip('/')}/evaluations"


@dataclass(frozen=True)
class Chart:
    name: str
    source: str
    png: bytes | None
    """None when the file is gone or is not a PNG: the page says so instead of showing a broken image."""
    problem: str = ""


@dataclass(frozen=True)
class EvaluationScores:
    eval_id: str
    uri: str
    scores: dict[Any, dict[str, Any]]
    """Keyed "base", iteration number and "final" (lion_core.evaluation.run_scores), in the evaluation's order."""
    charts: list[Chart] = field(default_factory=list)


@dataclass(frozen=True)
class RunReport:
    run_id: str
    run_uri: str
    info: dict[str, Any]
    summaries: list[IterationSummary]
    iteration_charts: dict[int, list[Chart]]
    run_charts: list[Chart]
    final: dict[str, Any] | None
    evaluation: EvaluationScores | None
    evaluation_root: str


def load_chart(name: str, uris: Sequence[str]) -> Chart:
    """The first of `uris` that exists; later ones are where the file is when the run folder was moved."""
    for uri in uris:
        if exists(uri):
            data = read_bytes(uri)
            if not data.startswith(PNG_SIGNATURE):
                return Chart(name, uri, None, "not a PNG file")
            return Chart(name, uri, data)
    return Chart(name, uris[0], None, "file not found")


def folder_charts(folder: str) -> list[Chart]:
    """Every PNG in a folder, by name."""
    fs, path = filesystem(folder)
    if not fs.isdir(path):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.glob(path.rstrip("/") + "/*.png"))
    return [load_chart(n[:-4], [join_uri(folder, n)]) for n in names]


def iteration_charts(store: RunStore, s: IterationSummary) -> list[Chart]:
    plots_dir = join_uri(store.iteration_uri(s.iteration), "plots")
    return [load_chart(name, [store.resolve(uri), join_uri(plots_dir, f"{name}.png")])
            for name, uri in s.plots.items()]


def read_evaluation(eval_store: RunStore, run_id: str) -> EvaluationScores | None:
    """The run's evaluation scores read back from its `scores` table, None until they are committed."""
    if not eval_store.exists():
        return None
    manifest = eval_store.manifest(0)
    if manifest is None or "scores" not in manifest.files:
        return None
    all_scores: dict[str, dict[str, Any]] = {}
    for r in eval_store.table(0, "scores").to_pylist():
        if r["category"] != "all":
            continue
        low, high = r["relative_score_ci95_low"], r["relative_score_ci95_high"]
        all_scores[r["checkpoint"]] = {
            "relative_score": r["relative_score"], "relative_score_ci95": None if low is None else [low, high],
            "wins": r["wins"], "ties": r["ties"], "losses": r["losses"]}
    return EvaluationScores(eval_store.run_id, eval_store.run_uri, run_scores(all_scores, run_id),
                            folder_charts(join_uri(eval_store.iteration_uri(0), "plots")))


def load_report(store: RunStore, evaluation_root: str | None = None) -> RunReport:
    """Everything the page shows, read from the run's folder (and its evaluation's); a run that does not
    exist is a StoreError naming it. `evaluation_root` None: the one recorded in the run's config."""
    info = store.read_run_info()
    root = evaluation_root or stored_evaluation_root(info, store.runs_root)
    summaries = read_summaries(store)
    return RunReport(
        run_id=store.run_id, run_uri=store.run_uri, info=info, summaries=summaries,
        iteration_charts={s.iteration: iteration_charts(store, s) for s in summaries},
        run_charts=folder_charts(join_uri(store.run_uri, "plots")), final=read_final_report(store),
        evaluation=read_evaluation(RunStore(root, run_evaluation_id(store.run_id)), store.run_id),
        evaluation_root=root)


# -- rendering -----------------------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """A table of escaped cells; numbers right-aligned by the stylesheet (`td.n`)."""
    def cell(v: Any) -> str:
        return f'<td class="n">{esc(v)}</td>' if isinstance(v, (int, float)) or _numeric(v) else f"<td>{esc(v)}</td>"

    out = [f'<table class="{esc(cls)}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    out += ["<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows]
    out.append("</tbody></table>")
    return "".join(out)


def _numeric(v: Any) -> bool:
    return isinstance(v, str) and bool(v) and v.replace(".", "").replace("%", "").replace("-", "").replace(",", "").isdigit()


SUMMARY_HEAD = ("iteration", "Train Pool", "Cache Pool", "hard", "easy", "unresolved", "hard %", "order inconsistency",
                "new instructions accepted", "next Cache Pool", "cost (USD)")


def summary_section(summaries: Sequence[IterationSummary], final: Mapping[str, Any] | None,
                    one_shot: bool = False) -> str:
    if one_shot:  # no loop: its generation rounds and the teacher's answers are in the final's usage
        cost = float((final or {}).get("cost_usd") or 0.0)
        return ("<h2>One-shot baseline</h2><p>No iterations (<code>loop.selection: one_shot</code>): generation "
                "rounds from random examples without a referee, then one fine-tune on every instruction. Total API "
                f"cost: <b>{esc(f'{cost:.4f}')} USD</b>.</p>")
    if not summaries:
        return "<h2>Iterations</h2><p class=\"note\">No iteration has finished yet.</p>"
    rows = [(s.iteration, s.train_pool, s.cache_pool, s.hard, s.easy, s.unresolved, pct(s.hard_fraction, 0),
             pct(s.order_inconsistency_rate, 0), s.accepted, s.next_cache_pool, f"{s.cost_usd:.4f}") for s in summaries]
    final_cost = float((final or {}).get("cost_usd") or 0.0)
    total = sum(s.cost_usd for s in summaries) + final_cost
    foot = (f"<p>Total API cost: <b>{esc(f'{total:.4f}')} USD</b> ({esc(len(summaries))} iteration(s)"
            + (f" and the final imitation, {esc(f'{final_cost:.4f}')} USD" if final else "") + ").</p>")
    return "<h2>Iterations</h2>" + table(SUMMARY_HEAD, rows, "summary") + foot


def checkpoint_name(key: Any) -> str:
    return f"iteration {key}" if isinstance(key, int) else str(key)


def evaluation_section(ev: EvaluationScores | None, root: str, run_id: str) -> str:
    if ev is None:
        return (f"<h2>Evaluation</h2><p class=\"note\">No evaluation of this run ({esc(run_evaluation_id(run_id))}) "
                f"under {esc(root)}.</p>")
    rows = []
    for key, s in ev.scores.items():
        ci = s.get("relative_score_ci95")
        rows.append((checkpoint_name(key), pct(s.get("relative_score")),
                     f"{ci[0]:.1%} to {ci[1]:.1%}" if ci else "n/a",
                     f"{s.get('wins')} / {s.get('ties')} / {s.get('losses')}"))
    return (f"<h2>Evaluation</h2><p>Evaluation <code>{esc(ev.eval_id)}</code> at <code>{esc(ev.uri)}</code>. "
            "Relative score = student score sum / reference score sum, judged in both orders and averaged; "
            "the interval is a 95% bootstrap interval over questions.</p>"
            + table(("checkpoint", "relative score", "95% interval", "win / tie / loss"), rows, "evaluation"))


def usage_table(usage: Sequence[UsageRow]) -> str:
    rows = [(r.role, r.mode, r.requests, r.cached, r.calls, r.prompt_tokens, r.completion_tokens, f"{r.cost_usd:.4f}")
            for r in per_role(usage)]
    return table(("role", "mode", "requests", "from store", "calls", "prompt tokens", "completion tokens",
                  "cost (USD)"), rows) if rows else "<p class=\"note\">No API requests.</p>"


def final_section(final: Mapping[str, Any] | None, one_shot: bool = False) -> str:
    if final is None:
        return "<h2>Final checkpoint</h2><p class=\"note\">Not published yet: the run has no final.json.</p>"
    if one_shot:
        what = (f"trained once, from the base model, on the teacher's answers to all {final.get('train_rows')} "
                "instructions (the seeds and every generation round's)")
    elif final.get("status") == "trained":
        what = (f"trained after the last iteration on the final Train Pool of iteration {final.get('iteration')} "
                f"({final.get('train_rows')} teacher answers)")
    else:
        what = f"carried from iteration {final.get('source_iteration')}: {final.get('reason')}"
    usage = [UsageRow.model_validate(u) for u in final.get("usage") or ()]
    items = [("checkpoint", final.get("final_checkpoint")), ("status", final.get("status")), ("what", what),
             ("cost of the whole run (USD)" if one_shot else "cost of the final imitation (USD)",
              f"{float(final.get('cost_usd') or 0.0):.4f}")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    usage_title = "API usage of the run" if one_shot else "API usage of the final imitation"
    return f"<h2>Final checkpoint</h2><dl>{dl}</dl><h3>{usage_title}</h3>{usage_table(usage)}"


def chart_html(c: Chart) -> str:
    title = c.name.replace("_", " ")
    if c.png is None:
        return (f'<figure class="missing"><figcaption>{esc(title)}</figcaption><p class="note">Chart not shown: '
                f"{esc(c.problem)} ({esc(c.source)}).</p></figure>")
    data = base64.b64encode(c.png).decode("ascii")
    return (f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(title)} <span class=\"src\">{esc(c.source)}</span></figcaption></figure>")


def charts_section(report: RunReport) -> str:
    parts = ["<h2>Charts</h2>"]
    run_level = [*(report.evaluation.charts if report.evaluation else []), *report.run_charts]
    if run_level:
        parts += ["<h3>Run</h3>", *map(chart_html, run_level)]
    for k, charts in report.iteration_charts.items():
        if charts:
            parts += [f'<h3 id="iter-{esc(k)}">Iteration {esc(k)}</h3>', *map(chart_html, charts)]
    if len(parts) == 1:
        parts.append('<p class="note">The run saved no charts.</p>')
    return "".join(parts)


STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .6em 0; } th, td { border: 1px solid #ddd; padding: .25em .6em; }
th { background: #f3f5f8; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; } code { background: #f3f3f3; padding: 0 .2em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; } dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; } .note { color: #777; } .meta { color: #555; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: .9em; } .src { color: #999; word-break: break-all; }
"""


def render_html(report: RunReport) -> str:
    """The page: a header with the run's identity, then iterations, evaluation, final checkpoint, charts."""
    info = report.info
    meta = [("run folder", report.run_uri), ("created", info.get("created_at")),
            ("code version", info.get("code_version")), ("config hash", str(info.get("config_hash") or "")[:12])]
    head = " &middot; ".join(f"{esc(k)} <code>{esc(v)}</code>" for k, v in meta if v)
    one_shot = ((info.get("config") or {}).get("loop") or {}).get("selection") == "one_shot"
    body = [f"<h1>Lion run <code>{esc(report.run_id)}</code></h1>", f'<p class="meta">{head}</p>',
            summary_section(report.summaries, report.final, one_shot),
            evaluation_section(report.evaluation, report.evaluation_root, report.run_id),
            final_section(report.final, one_shot), charts_section(report)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Lion run {esc(report.run_id)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")

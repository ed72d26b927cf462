"""Does distillation work? The demo config end to end, with what each iteration found and the effect.

Runs `lion run` on the config (default: the embedded demo) under a sampler of its whole process tree,
or reads a finished run (`--run RUN_ID`), and prints per iteration the hard and easy items, the
accepted new instructions and the pool sizes; the relative score (student / teacher, judged in both
orders, with its 95% bootstrap interval over questions) of the base student, every checkpoint and the
final one, from the evaluation that `evaluation.after_run` ends the run with; the referee's resolved
fraction; the wall time and the peak memory (summed PSS and RSS) over the whole process tree. The
baseline is the base student, measured in the same run by the same referee on the same questions.

    python bench/distill_effect.py [--config configs/embedded.yaml] [--run RUN_ID] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proc_memory import TreeSampler  # noqa: E402

from lion_core.config import load_config  # noqa: E402
from lion_core.report import read_summaries  # noqa: E402
from lion_core.store import RunStore  # noqa: E402


def run_demo(config: str, run_id: str) -> dict:
    lion = Path(sys.executable).parent / "lion"
    start = time.monotonic()
    proc = subprocess.Popen([str(lion), "run", "--config", config, "--run-id", run_id])
    with TreeSampler(proc.pid) as sampler:
        rc = proc.wait()
    if rc != 0:
        raise SystemExit(f"lion run exited with {rc}")
    return {"demo_seconds": round(time.monotonic() - start, 1), **sampler.figures()}


def eval_scores(config, run_id: str) -> dict:
    """{"base" | iteration | "final": (relative score, [low, high])} from the run's evaluation."""
    store = RunStore(config.evaluation.root(config.storage.runs_root), f"{run_id}-eval", None)
    rows = [r for r in store.read_table(store.ref(0, "scores")).to_pylist() if r["category"] == "all"]
    out = {}
    for r in rows:
        label = r["checkpoint"]
        key = "base" if label == "base" else "final" if label.endswith("-final") else int(label.rsplit("-", 1)[1])
        out[key] = {"relative_score": r["relative_score"],
                    "ci95": [r["relative_score_ci95_low"], r["relative_score_ci95_high"]]}
    return out


def figures(config_path: str, run_id: str) -> dict:
    config = load_config(config_path)
    summaries = read_summaries(RunStore(config.storage.runs_root, run_id, config))
    scores = eval_scores(config, run_id)
    per_iteration = [{
        "iteration": s.iteration, "hard": s.hard, "easy": s.easy, "unresolved": s.unresolved,
        "accepted": s.accepted, "train_pool": s.train_pool, "cache_pool": s.cache_pool,
        "next_train_pool": s.next_train_pool, "next_cache_pool": s.next_cache_pool,
        "relative_score": scores.get(s.iteration, {}).get("relative_score"),
        "relative_score_ci95": scores.get(s.iteration, {}).get("ci95"),
    } for s in summaries]
    judged = sum(s.judged - s.hard_empty_answer for s in summaries)
    resolved = sum(s.hard + s.easy - s.hard_empty_answer for s in summaries)
    return {
        "run_id": run_id,
        "base_relative_score": scores.get("base", {}).get("relative_score"),
        "base_relative_score_ci95": scores.get("base", {}).get("ci95"),
        "final_relative_score": scores.get("final", {}).get("relative_score"),
        "final_relative_score_ci95": scores.get("final", {}).get("ci95"),
        "per_iteration": per_iteration,
        "referee_resolved_fraction": resolved / judged if judged else None,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/embedded.yaml")
    ap.add_argument("--run", help="a finished run's id (its evaluation included) instead of a new run")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)
    measured: dict = {"demo_seconds": None}
    run_id = args.run
    if run_id is None:
        run_id = f"distill-effect-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        measured = run_demo(args.config, run_id)
    out = {**figures(args.config, run_id), **measured}
    print(f"run {run_id}")
    print(f"{'':>6} {'hard':>5} {'easy':>5} {'new':>4} {'train':>6} {'cache':>6} {'next cache':>10} "
          f"{'rel. score':>11}  95% interval")
    def row(name, it, rel, ci):
        cells = [str(it.get(k, "")) for k in ("hard", "easy", "accepted", "train_pool", "cache_pool", "next_cache_pool")]
        score = f"{rel:.1%}" if rel is not None else "-"
        interval = f"{ci[0]:.1%} to {ci[1]:.1%}" if ci and ci[0] is not None else "-"
        print(f"{name:>6} {cells[0]:>5} {cells[1]:>5} {cells[2]:>4} {cells[3]:>6} {cells[4]:>6} {cells[5]:>10} "
              f"{score:>11}  {interval}")
    row("base", {}, out["base_relative_score"], out["base_relative_score_ci95"])
    for it in out["per_iteration"]:
        row(str(it["iteration"]), it, it["relative_score"], it["relative_score_ci95"])
    row("final", {}, out["final_relative_score"], out["final_relative_score_ci95"])
    print(f"baseline (base student, same referee and questions): {out['base_relative_score']}; "
          f"final: {out['final_relative_score']}; referee resolved {out['referee_resolved_fraction']:.1%}")
    if measured.get("demo_seconds") is not None:
        print(f"wall time {out['demo_seconds']} s; peak memory of the whole process tree: PSS {out['peak_pss_mb']} MB, "
              f"RSS sum {out['peak_rss_sum_mb']} MB")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()

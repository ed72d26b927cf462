"""Does the loop pay for itself? Lion against a control at the same budget, on the embedded default.

For each seed (`--seeds`, default 1; `loop.random_seed` 42, 43, ...) three runs of the demo config through the
real `lion run`, each with a response store of its own (so each pays for everything it asks):

- `adversarial`: the paper's loop (`loop.selection: adversarial`);
- `random`: the control (`loop.selection: random`): the generator's examples drawn from the whole Cache Pool
  whatever the referee said, the same prompts, ratio and number of new instructions;
- `oneshot`: the baseline (`loop.selection: one_shot`): as many generation rounds from random examples, no
  referee, the teacher's answers for everything and one fine-tune of the loop's optimizer steps.

Then one `lion compare` of every run: the final students judged on the demo's questions by the same judge,
in both orders. Printed: each variant's relative score with its 95% interval, the paired differences
adversarial - random and adversarial - oneshot (and random - oneshot) with their intervals, each run's API
requests per role (adversarial and random: within 2%), wall times; the last line is one JSON object. The
baselines are the controls, measured in the same invocation.

    python bench/loop_vs_control.py [--seeds 1] [--iterations N] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lion_core.config import load_config  # noqa: E402

VARIANTS = {"adversarial": "adversarial", "random": "random", "oneshot": "one_shot"}  # run id prefix: selection
LION = Path(sys.executable).parent / "lion"


def write_config(work: Path, variant: str, seed: int, iterations: int | None) -> Path:
    data = load_config(REPO / "configs" / "embedded.yaml").to_json_dict()
    data["loop"].update(selection=VARIANTS[variant], random_seed=42 + seed)
    if iterations:
        data["loop"]["iterations"] = iterations
    data["storage"] = {"runs_root": str(work / "runs"), "response_store": str(work / f"{variant}-{seed}.sqlite")}
    data["evaluation"]["after_run"] = False  # the comparison judges the final students, once, for all
    path = work / f"{variant}-{seed}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def lion(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([str(LION), *args], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise SystemExit(f"lion {' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=1, help="runs per variant (loop.random_seed 42, 43, ...)")
    ap.add_argument("--iterations", type=int, default=None, help="loop.iterations (default: the demo's)")
    ap.add_argument("--work", default=None, help="folder for the runs (default: a temporary one, kept); runs "
                    "already in it are resumed, so an invocation that stopped goes on where it was")
    ap.add_argument("--json", action="store_true", help="end with one JSON line (always printed)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="lion-loop-vs-control-"))
    work.mkdir(parents=True, exist_ok=True)
    runs, configs, wall, resumed = [], {}, {}, {}
    for seed in range(args.seeds):
        for variant in VARIANTS:
            run_id = f"{variant}-{seed}"
            configs[run_id] = write_config(work, variant, seed, args.iterations)
            t0 = time.monotonic()
            again = (work / "runs" / run_id / "run.json").exists()  # a --work kept from a run that stopped
            lion("run", "--config", str(configs[run_id]), *(("--resume", run_id) if again else ("--run-id", run_id)))
            wall[run_id] = round(time.monotonic() - t0, 1)
            resumed[run_id] = again
            runs.append(run_id)
            print(f"{run_id}: {wall[run_id]} s{' (resumed: the time of this invocation only)' if again else ''}",
                  flush=True)
    t0 = time.monotonic()
    compared = json.loads(lion("compare", *runs, "--config", str(configs[runs[0]]), "--name", "loop-vs-control",
                               "--json").stdout.strip().splitlines()[-1])
    compare_s = round(time.monotonic() - t0, 1)
    config = load_config(configs[runs[0]])
    requests = {r["run"]: r["api_requests_by_role"] for r in compared["runs"]}  # iterations and final imitation
    pairs = [p for p in compared["pairs"] if p["a"].rsplit("-", 1)[1] == p["b"].rsplit("-", 1)[1]]  # same seed
    budget = {}
    for seed in range(args.seeds):
        a, r = sum(requests[f"adversarial-{seed}"].values()), sum(requests[f"random-{seed}"].values())
        budget[seed] = {"adversarial": a, "random": r, "difference": round(abs(a - r) / max(a, 1), 4)}
    result = {"settings": {"seeds": args.seeds, "iterations": config.loop.iterations,
                           "new_instructions_per_iteration": config.loop.new_instructions_per_iteration,
                           "work": str(work)},
              "runs": compared["runs"], "pairs": pairs,
              "pairs_adversarial_minus_random": [p for p in pairs if (p["a"].split("-")[0], p["b"].split("-")[0])
                                                 == ("adversarial", "random")],
              "requests_by_role": requests,
              "budget": budget, "wall_s": wall, "resumed": resumed, "compare_s": compare_s}
    print()
    def pct(x: float | None, sign: str = "") -> str:
        return "n/a" if x is None else f"{x:{sign}.1%}"

    for r in compared["runs"]:
        ci = r.get("relative_score_ci95") or (None, None)
        print(f"{r['run']:<16} relative score {pct(r['relative_score'])} (95% {pct(ci[0])} to {pct(ci[1])}), "
              f"{r['api_requests']} API requests {requests[r['run']]}, run {wall[r['run']]} s")
    for p in pairs:
        ci = p["ci95"] or (None, None)
        print(f"{p['a']} - {p['b']}: {pct(p['difference'], '+')} (95% {pct(ci[0], '+')} to {pct(ci[1], '+')}) "
              f"over {p['questions']} questions")
    for seed, b in budget.items():
        print(f"seed {seed}: API requests adversarial {b['adversarial']}, random {b['random']} "
              f"({b['difference']:.1%} apart; within 2%: {b['difference'] <= 0.02})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

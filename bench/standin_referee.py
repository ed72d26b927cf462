"""The offline referee stand-in's labelled check: the teacher's answer against clearly worse answers.

Starts the embedded teacher (`transformers serve`) and the stand-in server, has the teacher answer the
demo's seed and evaluation instructions, pairs each answer with three worse answers to the same
instruction (another instruction's answer, its own words shuffled, its first words repeated) and
judges every pair in both orders through the referee path of a run (prompt, loopback endpoint,
review text, parser). Prints the resolved share and how often the teacher's answer scores higher,
per kind, against the 50% of a referee that guesses.

    python bench/standin_referee.py [--n 64] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from lion_core.config import load_config
from lion_core.discrimination.judging import discriminate
from lion_core.discrimination.referee_check import check_figures, labelled_items
from lion_core.llm import ChatRequest, Endpoint, Gateway, ResponseStore
from lion_core.llm.embedded import EmbeddedServers
from lion_core.prompts import teacher_messages

REPO = Path(__file__).resolve().parents[1]


def instructions(n: int) -> list[dict]:
    seeds = [json.loads(x) for x in (REPO / "data" / "demo_seeds.jsonl").read_text().splitlines()]
    evals = [{"instruction": json.loads(x)["text"], "input": ""}
             for x in (REPO / "data" / "demo_eval.jsonl").read_text().splitlines()]
    return (seeds + evals)[:n]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="instructions (demo seeds, then evaluation questions)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(REPO / "configs" / "embedded.yaml")
    items = instructions(args.n)
    start = time.monotonic()
    servers = EmbeddedServers({cfg.teacher.model, cfg.referee.model}).start()
    try:
        with tempfile.TemporaryDirectory() as tmp, ResponseStore(f"{tmp}/r.sqlite") as store:
            endpoints = servers.endpoints()
            teacher = Gateway(Endpoint.from_config("teacher", cfg.teacher, embedded=endpoints), store)
            referee = Gateway(Endpoint.from_config("referee", cfg.referee, embedded=endpoints), store)
            answers = teacher.run_sync([ChatRequest.of(teacher_messages(s["instruction"], s["input"]), temperature=0.7,
                                                       max_tokens=cfg.teacher.sampling.max_tokens, tag=str(i))
                                        for i, s in enumerate(items)], "check")
            rows = [{"id": str(i), "instruction": s["instruction"], "input": s["input"], "answer": a.text}
                    for i, (s, a) in enumerate(zip(items, answers)) if a.ok and a.text.strip()]
            labelled = labelled_items(rows)
            judged = discriminate(referee, [item for _, item in labelled], style=cfg.referee.prompt_style, tau=1.0,
                                  max_reasks=0)
    finally:
        servers.stop()
    out = {"instructions": len(rows), **check_figures([k for k, _ in labelled], judged),
           "seconds": round(time.monotonic() - start, 1)}
    print(f"{len(rows)} teacher answers, each against 3 worse answers, both orders: {out['verdicts']} verdicts")
    print(f"resolved {out['resolved_fraction']:.1%}; prefers the teacher's answer {out['prefers_teacher_fraction']:.1%} "
          f"(chance: 50%)")
    for kind, f in out["by_kind"].items():
        print(f"  {kind:<10} prefers the teacher's answer in {f['prefers_teacher']} of {f['verdicts']} "
              f"({f['prefers_teacher_fraction']:.1%})")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()

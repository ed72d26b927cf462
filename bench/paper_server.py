"""The loopback endpoint of `bench/paper_scale.py`: teacher, referee and generator at paper scale.

A real OpenAI-compatible HTTP server (the fault server of the tests, in a process of its own) whose
replies have the shape and size of real ones, so that the run's parsers, filters and files do real work:

- **teacher**: an answer drawn from the Alpaca outputs (text-davinci-003's answers to the same kind of
  instruction), chosen by a hash of the request: realistic lengths, never empty;
- **referee**: a short review, then `Score of the Assistant 1: x` / `... 2: y` (the lion prompt's format).
  The teacher's answer (recognised as one of the Alpaca outputs) scores 7-9; the student's scores low on
  a share `hard_share` of the instructions (chosen by a hash of the question, so the same items are hard
  whatever the student wrote) and within half a point of the teacher's otherwise;
- **generator**: `New task: ... / New input: ...` with words of the Alpaca vocabulary, about as long as
  the example (with an input when the example has one); some replies copy the example with small edits
  (rejected by ROUGE-L) and some refuse, as real ones do. Replies to a repeated request differ (the
  generator samples at temperature 1).

Faults (429 with Retry-After, 500, dropped connections) come from the fault server's plan.
`GET /v1/stats` tells answered requests per role, what is in flight and the latest arrival, so the
benchmark can kill a run mid-stage and time a resume without touching the run's files.

    python -m bench.paper_server --alpaca FILE [--latency-s 0] [--fault-rate 0.05] [--hard-share 0.4]

prints the port, serves until stdin closes, then prints its counts as one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fault_server import FaultPlan, FaultServer, tokens  # noqa: E402

_WORD = re.compile(r"[a-z]{3,12}")


def role_of(prompt: str) -> str:
    if "<<<ANSWER OF ASSISTANT 1>>>" in prompt:
        return "referee"
    return "generator" if "<<<EXAMPLE TASK>>>" in prompt else "teacher"


def _between(text: str, start: str, end: str) -> str:
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    return text[i + len(start):j].strip("\n") if i >= 0 and j >= 0 else ""


def _unit(*parts: str) -> float:
    """A number in [0, 1) fixed by `parts`."""
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "big") / 2**64


class PaperServer(FaultServer):
    def __init__(self, plan: FaultPlan, outputs: list[str], hard_share: float, copy_share: float = 0.08,
                 refuse_share: float = 0.02):
        super().__init__(plan)
        self.outputs = outputs
        self.teacher_hashes = {hashlib.blake2b(o.strip().encode(), digest_size=12).digest() for o in outputs}
        words = collections.Counter(w for o in outputs[:20000] for w in _WORD.findall(o.lower()))
        self.vocabulary = [w for w, _ in words.most_common(6000)]
        self.hard_share, self.copy_share, self.refuse_share = hard_share, copy_share, refuse_share
        self.by_role: collections.Counter = collections.Counter()
        self.in_flight = 0
        self.arrived = 0
        self.last_arrival = 0.0

    async def _respond(self, method, path, headers, body, writer) -> bool:
        route = path.split("?", 1)[0].rstrip("/")
        if method == "GET" and route.endswith("/stats"):
            await self.send(writer, 200, json.dumps(self.snapshot()).encode())
            return True
        chat = method == "POST" and route.endswith("/chat/completions")
        if chat:
            self.in_flight += 1
            self.arrived += 1
            self.last_arrival = time.time()
        try:
            return await super()._respond(method, path, headers, body, writer)
        finally:
            if chat:
                self.in_flight -= 1

    def snapshot(self) -> dict:
        return {"answered": dict(self.by_role), "in_flight": self.in_flight, "arrived": self.arrived,
                "last_arrival": self.last_arrival, "outcomes": dict(self.stats.outcomes)}

    def _completion(self, req: dict, fp: str) -> dict:
        messages = req.get("messages", [])
        prompt = messages[-1]["content"] if messages else ""
        role = role_of(prompt)
        if role == "referee":
            text = self._review(prompt)
        elif role == "generator":
            text = self._task(prompt, fp, self.stats.answered[fp])
        else:
            text = self.outputs[int(_unit(fp) * len(self.outputs))]
        self.by_role[role] += 1
        finish = "stop"
        if req.get("max_tokens") and tokens(text) > req["max_tokens"]:  # cut off, as a real endpoint does
            text, finish = text[:4 * req["max_tokens"]], "length"
        prompt_tokens = sum(tokens(m["content"]) for m in messages)
        return {
            "id": f"chatcmpl-{fp[:12]}", "object": "chat.completion", "created": int(time.time()), "model": req.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": tokens(text),
                      "total_tokens": prompt_tokens + tokens(text)},
        }

    def _is_teacher(self, answer: str) -> bool:
        return hashlib.blake2b(answer.strip().encode(), digest_size=12).digest() in self.teacher_hashes

    def _review(self, prompt: str) -> str:
        question = _between(prompt, "<<<QUESTION>>>", "<<<END QUESTION>>>")
        answers = [_between(prompt, f"<<<ANSWER OF ASSISTANT {n}>>>", f"<<<END ANSWER OF ASSISTANT {n}>>>")
                   for n in (1, 2)]
        teacher_first = self._is_teacher(answers[0]) or not self._is_teacher(answers[1])
        order = "t-first" if teacher_first else "s-first"
        t = 7 + int(_unit(question, "teacher", order) * 3)  # 7-9
        if not answers[1 if teacher_first else 0].strip():
            s = 1
        elif _unit(question, "hard") < self.hard_share:
            s = t - 2 - int(_unit(question, "gap", order) * 4)  # a gap of 2-5 in each order: hard
        else:
            s = t - (1 if order == "s-first" else 0)  # a mean gap of 0.5: easy
        first, second = (t, s) if teacher_first else (s, t)
        return ("Assistant 1 answers the question directly; Assistant 2 covers it with "
                f"{'more' if first < second else 'less'} detail and accuracy.\n"
                f"Score of the Assistant 1: {first}\nScore of the Assistant 2: {second}")

    def _task(self, prompt: str, fp: str, n: int) -> str:
        rng = random.Random(f"{fp}:{n}")
        seed = _between(prompt, "<<<EXAMPLE TASK>>>", "<<<END EXAMPLE TASK>>>")
        instruction, _, input_text = seed.partition("\n\n")
        x = rng.random()
        if x < self.refuse_share:
            return "I'm sorry, but I can't write a new task like that one."
        if x < self.refuse_share + self.copy_share:  # the example again, one word changed: not novel
            words = instruction.split()
            if words:
                words[rng.randrange(len(words))] = rng.choice(self.vocabulary)
            return f"New task: {' '.join(words)}\nNew input: {input_text.strip() or 'none'}"
        n_words = max(6, len(instruction.split()) + rng.randint(-3, 3))
        task = " ".join(rng.choice(self.vocabulary) for _ in range(n_words)).capitalize() + "."
        new_input = "none"
        if input_text.strip():
            new_input = " ".join(rng.choice(self.vocabulary) for _ in range(max(3, len(input_text.split()))))
        return f"New task: {task}\nNew input: {new_input}"


def load_outputs(path: str) -> list[str]:
    import pandas as pd

    df = pd.read_parquet(path, columns=["output"]) if path.endswith(".parquet") else pd.read_json(path)
    return [o for o in df["output"].astype(str) if o.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpaca", required=True, help="Alpaca data (parquet or JSON) whose outputs are the teacher's answers")
    ap.add_argument("--latency-s", type=float, default=0.0)
    ap.add_argument("--fault-rate", type=float, default=0.05,
                    help="share of requests answered 429 (a fifth), 500 (three fifths) or reset (a fifth)")
    ap.add_argument("--retry-after-s", type=float, default=0.02,
                    help="Retry-After of a 429 (sent as retry-after-ms, as OpenAI's per-second windows do)")
    ap.add_argument("--hard-share", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    f = args.fault_rate
    plan = FaultPlan(rate_429=f * 0.2, rate_500=f * 0.6, rate_drop=f * 0.2, retry_after_s=args.retry_after_s,
                     latency_s=args.latency_s, seed=args.seed, keep_prompts=False)
    srv = PaperServer(plan, load_outputs(args.alpaca), args.hard_share).start()
    print(srv.port, flush=True)
    sys.stdin.read()
    srv.stop()
    print(json.dumps({**srv.snapshot(), "repeated": sum(n - 1 for n in srv.stats.answered.values() if n > 1),
                      "answered_total": sum(srv.by_role.values())}), flush=True)


if __name__ == "__main__":
    main()

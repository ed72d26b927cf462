"""The stand-in server: an OpenAI-compatible loopback endpoint for the offline referee and generator.

`python -m lion_core.llm.standin_server MODEL_DIR --port P` loads the embedded teacher model once and
answers `/v1/chat/completions` for two model names (see `standin`): `smollm2-likelihood-referee` and
`smollm2-list-generator`; `/v1/models` and `/health` as `transformers serve` has them. One worker
thread owns the model: scoring requests run one by one, generation requests that wait together run as
one left-padded batch. A request that is not a referee (or generator) prompt gets HTTP 400 saying so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lion_core.llm import standin

MAX_BATCH = 8
SCORE_CACHE = 50_000


class BadRequest(Exception):
    pass


class Worker:
    """Owns the model; jobs come through a queue so that torch runs in one thread."""

    def __init__(self, model_dir: str):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.jobs: queue.Queue[tuple[str, dict, Future]] = queue.Queue()
        self.scores: OrderedDict[tuple[str, str], dict] = OrderedDict()
        threading.Thread(target=self._loop, daemon=True).start()

    def submit(self, kind: str, job: dict) -> Any:
        fut: Future = Future()
        self.jobs.put((kind, job, fut))
        return fut.result()

    def _loop(self) -> None:
        while True:
            batch = [self.jobs.get()]
            time.sleep(0.02)  # let requests sent together arrive together
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            gens = [b for b in batch if b[0] == "generate"]
            for kind, job, fut in batch:
                if kind == "score":
                    self._run(fut, self._score, job)
            groups: dict[tuple, list] = {}
            for item in gens:
                groups.setdefault((item[1]["temperature"], item[1]["top_p"]), []).append(item)
            for group in groups.values():
                try:
                    outs = self._generate([job for _, job, _ in group])
                except Exception as err:  # every waiting request gets the error, the worker lives on
                    for _, _, fut in group:
                        fut.set_exception(err)
                    continue
                for (_, _, fut), out in zip(group, outs):
                    fut.set_result(out)

    @staticmethod
    def _run(fut: Future, fn: Any, job: dict) -> None:
        try:
            fut.set_result(fn(job))
        except Exception as err:
            fut.set_exception(err)

    def _score(self, job: dict) -> tuple[str, str, int]:
        p: standin.RefereePrompt = job["prompt"]
        first, second = self._answer_score(p.question, p.answer_1), self._answer_score(p.question, p.answer_2)
        return standin.review_text(p, first, second), "stop", job["prompt_tokens"]

    def _answer_score(self, question: str, answer: str) -> dict:
        # An answer's score depends on nothing else, and each one is judged in both orders and the
        # teacher's against every student: score it once.
        key = (question, answer)
        if key not in self.scores:
            if len(self.scores) >= SCORE_CACHE:
                self.scores.popitem(last=False)
            self.scores[key] = standin.score_answer(self.model, self.tokenizer, question, answer)
        return self.scores[key]

    def _generate(self, jobs: list[dict]) -> list[tuple[str, str, int]]:
        torch, tok = self.torch, self.tokenizer
        prompts = [standin.list_prompt(j["prompt"]) for j in jobs]
        seed = int(hashlib.sha256("\0".join(prompts).encode()).hexdigest()[:8], 16)
        torch.manual_seed(seed)  # the same waiting requests draw the same tasks
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        budget = min(standin.MAX_TASK_TOKENS, max(j["max_tokens"] for j in jobs))
        temperature = jobs[0]["temperature"]
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=budget, do_sample=temperature > 0,
                                      temperature=temperature or None, top_p=jobs[0]["top_p"],
                                      pad_token_id=tok.pad_token_id, stop_strings=["\n"], tokenizer=tok)
        results = []
        for j, row in zip(jobs, out[:, enc["input_ids"].shape[1]:]):
            text = tok.decode(row, skip_special_tokens=True)
            ended = tok.eos_token_id in row.tolist()
            reply, complete = standin.task_reply(text)
            results.append((reply, "stop" if complete or ended else "length", j["prompt_tokens"]))
        return results


def _user_text(body: dict) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: expected a non-empty list")
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users or not isinstance(users[-1], str):
        raise BadRequest("messages: no user message with text content")
    return users[-1]


def completion(worker: Worker, body: dict) -> dict:
    model = body.get("model")
    text = _user_text(body)
    prompt_tokens = len(worker.tokenizer(text, add_special_tokens=False)["input_ids"])
    if model == standin.REFEREE_MODEL:
        prompt = standin.parse_referee_prompt(text)
        if prompt is None:
            raise BadRequest("not a referee prompt: the question and both answers must be between their markers")
        reply, finish, _ = worker.submit("score", {"prompt": prompt, "prompt_tokens": prompt_tokens})
    elif model == standin.GENERATOR_MODEL:
        prompt = standin.parse_generator_prompt(text)
        if prompt is None:
            raise BadRequest("not a generator prompt: the example task must be between its markers")
        reply, finish, _ = worker.submit("generate", {
            "prompt": prompt, "prompt_tokens": prompt_tokens, "max_tokens": int(body.get("max_tokens") or 64),
            "temperature": float(body.get("temperature", 1.0)), "top_p": float(body.get("top_p", 1.0))})
    else:
        raise BadRequest(f"model {model!r} is not served here; models: {', '.join(standin.MODELS)}")
    completion_tokens = len(worker.tokenizer(reply, add_special_tokens=False)["input_ids"])
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def make_handler(worker: Worker) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet: the gateway logs requests
            pass

        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"status": "ok"})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in standin.MODELS]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("the body must be a JSON object")
                self._send(200, completion(worker, body))
            except (BadRequest, json.JSONDecodeError, ValueError) as err:
                self._send(400, {"error": {"message": str(err), "type": "invalid_request_error"}})
            except Exception as err:  # a server error, retried by the gateway
                self._send(500, {"error": {"message": f"{type(err).__name__}: {err}", "type": "server_error"}})

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    worker = Worker(args.model_dir)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(worker))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()

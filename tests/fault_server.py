"""A loopback OpenAI-compatible chat server that misbehaves on purpose, over real HTTP.

Real servers do not produce 429s with Retry-After, 5xx, hangs, dropped connections or garbage bodies on
demand; this one does, at set rates, deterministically per (request, how many times it was seen). It
can also enforce a requests/minute limit the way providers do (over short windows) and add a fixed
latency. Tests and `bench/fanout.py` use it; it binds to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import math
import random
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FaultPlan:
    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_slow: float = 0.0
    rate_drop: float = 0.0
    rate_malformed: float = 0.0
    retry_after_s: float = 0.2
    slow_s: float = 30.0
    latency_s: float = 0.0
    requests_per_minute: int | None = None
    """Enforced over windows of ceil(rpm/60) requests, like providers that check per-minute limits per second."""
    max_prompt_chars: int | None = None
    """Longer prompts get a 400 context_length_exceeded error."""
    api_key: str | None = None
    """When set, other keys get a 401."""
    script: tuple[str, ...] = ()
    """Outcomes for the first arrivals of every request ("429", "500", "slow", "drop", "malformed", "ok"),
    before the random draws take over: for tests that need one exact sequence."""
    seed: int = 0
    fail_after: int | None = None
    """After this many answered requests, every later request gets a 500: an outage mid-stage."""
    outage_s: float | None = None
    """With fail_after: the outage ends this many seconds after its first failed request."""
    fail_status: int = 500
    """What the outage answers: 500, or 503 with an "overloaded" message (as providers say it)."""
    empty_for: tuple[str, ...] = ()
    """Requests whose last message is one of these get an empty completion (paid: with usage) every time."""
    generator_refuses: bool = False
    """The generator declines every task (nothing is accepted, so the next Train Pool is empty)."""
    # -- the Batch API (files and batches endpoints) --
    batch_complete_after_s: float = 0.0
    """A batch is in progress until this many seconds after its creation, then done on the next retrieve."""
    batch_outcomes: tuple[str, ...] = ()
    """What the n-th batch created comes to ("completed", "expired", "failed", "cancelled"); later ones complete.
    An expired batch has answered the first half of its requests."""
    batch_error_rate: float = 0.0
    """Share of a completed batch's requests that end in the error file (a 500 for that request), drawn per
    request and attempt."""
    batch_error_status: int = 500
    """The status of those error lines (400 with a context-length message: a request refused as it is)."""
    batch_retrieve_500: int = 0
    """The first this many retrieves of a batch answer 500."""
    upload_500: int = 0
    """The first this many file uploads answer 500."""
    keep_prompts: bool = True
    """Count successes and arrival times by prompt text (tests read them); off for hundreds of thousands of
    requests, whose prompts would otherwise stay in memory."""


@dataclass
class ServerStats:
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    successes: collections.Counter = field(default_factory=collections.Counter)  # by last user message
    answered: collections.Counter = field(default_factory=collections.Counter)  # 200s by request fingerprint
    seen: collections.Counter = field(default_factory=collections.Counter)  # by request fingerprint
    accepted_at: list[float] = field(default_factory=list)  # monotonic arrival times of answered requests
    arrivals: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))  # by last user message
    batch_answered: collections.Counter = field(default_factory=collections.Counter)  # by request fingerprint
    empty_replies: collections.Counter = field(default_factory=collections.Counter)  # paid empty replies, by last message
    outage_started: float | None = None
    batches_created: int = 0
    files_uploaded: int = 0


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}


class FaultServer:
    def __init__(self, plan: FaultPlan = FaultPlan(), port: int = 0):
        self.plan = plan
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._window: collections.deque[float] = collections.deque()
        self.files: dict[str, dict] = {}  # id -> {"bytes": ..., "object": FileObject json}
        self.batches: dict[str, dict] = {}  # id -> Batch json (+ private "_created_mono")
        self._retrieves: collections.Counter = collections.Counter()
        if plan.requests_per_minute:
            self._window_n = math.ceil(plan.requests_per_minute / 60)
            self._window_s = self._window_n * 60.0 / plan.requests_per_minute
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        """0: any free port (the stored answers of a run are keyed by its base URL, so a test that
        reopens an old run's store serves on the port that run used)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> FaultServer:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=main, name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ----------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if not await self._respond(method, path, headers, body, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    @staticmethod
    async def send(writer: asyncio.StreamWriter, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
        """Write one HTTP response (subclasses that script replies use it too)."""
        extra = dict(extra or {})
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                f"content-type: {extra.pop('content-type', 'application/json')}",
                f"content-length: {len(payload)}", "connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    def _error(self, kind: str, message: str, code: str | None = None) -> bytes:
        return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()

    async def _respond(self, method: str, path: str, headers: dict[str, str], body: bytes,
                       writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False closes the connection."""
        if method == "GET" and path.rstrip("/") in ("/health", "/v1/health"):
            await self.send(writer, 200, b'{"status":"ok"}')
            return True
        if method == "GET" and path.rstrip("/").endswith("/models"):  # what `lion config check` probes
            if self.plan.api_key is not None and headers.get("authorization") != f"Bearer {self.plan.api_key}":
                await self.send(writer, 401, self._error("invalid_request_error", "Incorrect API key provided",
                                                          "invalid_api_key"))
            else:
                await self.send(writer, 200, b'{"object":"list","data":[{"id":"fake-model","object":"model"}]}')
            return True
        if "/files" in path or "/batches" in path:
            if self.plan.api_key is not None and headers.get("authorization") != f"Bearer {self.plan.api_key}":
                await self.send(writer, 401, self._error("invalid_request_error", "Incorrect API key provided",
                                                          "invalid_api_key"))
                return True
            status, payload, ctype = self._batch_api(method, path.split("?", 1)[0].rstrip("/"), headers, body)
            await self.send(writer, status, payload, {"content-type": ctype} if ctype else None)
            return True
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self.send(writer, 404, self._error("not_found", f"no route {method} {path}"))
            return True
        plan = self.plan
        if plan.api_key is not None and headers.get("authorization") != f"Bearer {plan.api_key}":
            self._count("401")
            await self.send(writer, 401, self._error("invalid_request_error", "Incorrect API key provided",
                                                      "invalid_api_key"))
            return True
        req = json.loads(body)
        messages = req.get("messages", [])
        last = messages[-1]["content"] if messages else ""
        fp = hashlib.sha256(json.dumps([req.get(k) for k in ("model", "messages", "temperature", "top_p", "max_tokens")],
                                       sort_keys=True).encode()).hexdigest()
        if plan.requests_per_minute and not self._admit():
            self._count("429-rate")
            wait = self._window_s
            await self.send(writer, 429, self._error("requests", "Rate limit reached", "rate_limit_exceeded"),
                             {"retry-after-ms": str(int(wait * 1000)), "retry-after": str(math.ceil(wait))})
            return True
        with self._lock:
            n = self.stats.seen[fp]
            self.stats.seen[fp] += 1
            if plan.keep_prompts:
                self.stats.arrivals[last].append(time.monotonic())
        fault = plan.script[n] if n < len(plan.script) else self._draw(fp, n)
        if plan.fail_after is not None and sum(self.stats.answered.values()) >= plan.fail_after:
            with self._lock:
                started = self.stats.outage_started = self.stats.outage_started or time.monotonic()
            if plan.outage_s is None or time.monotonic() - started < plan.outage_s:
                fault = "500" if plan.fail_status == 500 else "outage"
        if plan.max_prompt_chars is not None and sum(len(m["content"]) for m in messages) > plan.max_prompt_chars:
            fault = "context"
        if plan.latency_s:
            await asyncio.sleep(plan.latency_s)
        self._count(fault)
        if fault == "429":
            ms = int(plan.retry_after_s * 1000)
            await self.send(writer, 429, self._error("requests", "Rate limit reached", "rate_limit_exceeded"),
                             {"retry-after-ms": str(ms), "retry-after": str(math.ceil(plan.retry_after_s))})
            return True
        if fault == "500":
            await self.send(writer, 500, self._error("server_error", "The server had an error"))
            return True
        if fault == "outage":
            await self.send(writer, plan.fail_status, self._error("overloaded_error", "The server is overloaded"))
            return True
        if last in plan.empty_for:
            with self._lock:
                self.stats.empty_replies[last] += 1
            reply = self._completion(req, fp)
            reply["choices"][0]["message"]["content"] = ""
            await self.send(writer, 200, json.dumps(reply).encode())
            return True
        if fault == "drop":
            return False
        if fault == "slow":
            await asyncio.sleep(plan.slow_s)
            return False
        if fault == "malformed":
            await self.send(writer, 200, b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "tru')
            return True
        if fault == "context":
            await self.send(writer, 400, self._error(
                "invalid_request_error", "This model's maximum context length is exceeded. Please reduce the length "
                "of the messages.", "context_length_exceeded"))
            return True
        payload = self._completion(req, fp)
        with self._lock:
            if plan.keep_prompts:
                self.stats.successes[last] += 1
            self.stats.answered[fp] += 1
            self.stats.accepted_at.append(time.monotonic())
        await self.send(writer, 200, json.dumps(payload).encode())
        return True

    def _completion(self, req: dict, fp: str) -> dict:
        """The chat.completion body this server answers `req` with."""
        messages = req.get("messages", [])
        last = messages[-1]["content"] if messages else ""
        answer = canned_reply(last, fp, refuse_generation=self.plan.generator_refuses)
        finish = "stop"
        if req.get("max_tokens") and tokens(answer) > req["max_tokens"]:  # cut off, as a real endpoint does
            answer, finish = answer[:4 * req["max_tokens"]], "length"
        prompt_tokens = sum(tokens(m["content"]) for m in messages)
        completion_tokens = tokens(answer)
        return {
            "id": f"chatcmpl-{fp[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    # -- the Batch API -------------------------------------------------------------------------------
    def _batch_api(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, str | None]:
        """files: upload, retrieve, content; batches: create, retrieve, cancel, list (as OpenAI's)."""
        parts = path.split("/")
        with self._lock:
            if method == "POST" and parts[-1] == "files":
                self.stats.files_uploaded += 1
                if self.stats.files_uploaded <= self.plan.upload_500:
                    return 500, self._error("server_error", "The server had an error while uploading"), None
                content, filename, purpose = _multipart_file(headers.get("content-type", ""), body)
                fid = f"file-{hashlib.sha256(content + str(len(self.files)).encode()).hexdigest()[:24]}"
                obj = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                       "filename": filename, "purpose": purpose, "status": "processed"}
                self.files[fid] = {"bytes": content, "object": obj}
                return 200, json.dumps(obj).encode(), None
            if method == "GET" and len(parts) >= 2 and parts[-2] == "files" and parts[-1] in self.files:
                return 200, json.dumps(self.files[parts[-1]]["object"]).encode(), None
            if method == "GET" and parts[-1] == "content" and parts[-2] in self.files:
                return 200, self.files[parts[-2]]["bytes"], "application/octet-stream"
            if method == "POST" and parts[-1] == "batches":
                req = json.loads(body)
                if req.get("input_file_id") not in self.files:
                    return 400, self._error("invalid_request_error", f"no file {req.get('input_file_id')}"), None
                n = self.stats.batches_created
                self.stats.batches_created += 1
                bid = f"batch_{n:04d}{hashlib.sha256(req['input_file_id'].encode()).hexdigest()[:12]}"
                total = len(self.files[req["input_file_id"]]["bytes"].splitlines())
                now = int(time.time())
                self.batches[bid] = {
                    "id": bid, "object": "batch", "endpoint": req.get("endpoint"), "errors": None,
                    "input_file_id": req["input_file_id"], "completion_window": req.get("completion_window", "24h"),
                    "status": "in_progress", "output_file_id": None, "error_file_id": None, "created_at": now,
                    "in_progress_at": now, "expires_at": now + 86400, "completed_at": None, "failed_at": None,
                    "expired_at": None, "cancelled_at": None,
                    "request_counts": {"total": total, "completed": 0, "failed": 0},
                    "metadata": req.get("metadata"), "_n": n, "_created": time.monotonic(),
                }
                return 200, self._batch_json(bid), None
            if method == "GET" and parts[-1] == "batches":
                data = [json.loads(self._batch_json(b)) for b in reversed(list(self.batches))]
                return 200, json.dumps({"object": "list", "data": data, "has_more": False,
                                        "first_id": data[0]["id"] if data else None,
                                        "last_id": data[-1]["id"] if data else None}).encode(), None
            if parts[-1] == "cancel" and parts[-2] in self.batches and method == "POST":
                b = self.batches[parts[-2]]
                if b["status"] in ("validating", "in_progress"):
                    b.update(status="cancelled", cancelled_at=int(time.time()))
                return 200, self._batch_json(parts[-2]), None
            if method == "GET" and parts[-1] in self.batches:
                bid = parts[-1]
                self._retrieves[bid] += 1
                if self._retrieves[bid] <= self.plan.batch_retrieve_500:
                    return 500, self._error("server_error", "The server had an error while retrieving"), None
                self._advance(bid)
                return 200, self._batch_json(bid), None
        return 404, self._error("not_found", f"no route {method} {path}"), None

    def _batch_json(self, bid: str) -> bytes:
        return json.dumps({k: v for k, v in self.batches[bid].items() if not k.startswith("_")}).encode()

    def _advance(self, bid: str) -> None:
        """Finish an in-progress batch once its time has come: run its requests, write its files."""
        b = self.batches[bid]
        if b["status"] != "in_progress" or time.monotonic() - b["_created"] < self.plan.batch_complete_after_s:
            return
        n = b["_n"]
        outcome = self.plan.batch_outcomes[n] if n < len(self.plan.batch_outcomes) else "completed"
        now = int(time.time())
        if outcome in ("failed", "cancelled"):
            b.update(status=outcome, **{f"{outcome}_at": now})
            if outcome == "failed":
                b["errors"] = {"object": "list", "data": [{"code": "invalid_file", "message": "the input was refused"}]}
            return
        lines = self.files[b["input_file_id"]]["bytes"].decode().splitlines()
        if outcome == "expired":
            lines = lines[: len(lines) // 2]
        out, err = [], []
        for i, line in enumerate(lines):
            item = json.loads(line)
            req = item["body"]
            fp = hashlib.sha256(json.dumps([req.get(k) for k in ("model", "messages", "temperature", "top_p", "max_tokens")],
                                           sort_keys=True).encode()).hexdigest()
            attempt = self.stats.seen[f"batch:{fp}"]
            self.stats.seen[f"batch:{fp}"] += 1
            if random.Random(f"{self.plan.seed}:batch:{fp}:{attempt}").random() < self.plan.batch_error_rate:
                status = self.plan.batch_error_status
                body = (self._error("server_error", "The server had an error") if status >= 500 else
                        self._error("invalid_request_error", "This model's maximum context length is 4096 tokens",
                                    "context_length_exceeded"))
                err.append({"id": f"batch_req_{i}", "custom_id": item["custom_id"],
                            "response": {"status_code": status, "request_id": f"req_{i}", "body": json.loads(body)},
                            "error": None})
                continue
            self.stats.batch_answered[fp] += 1
            out.append({"id": f"batch_req_{i}", "custom_id": item["custom_id"],
                        "response": {"status_code": 200, "request_id": f"req_{i}", "body": self._completion(req, fp)},
                        "error": None})
        for name, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                content = "".join(json.dumps(r) + "\n" for r in rows).encode()
                fid = f"file-{bid}-{name[:3]}"
                self.files[fid] = {"bytes": content, "object": {
                    "id": fid, "object": "file", "bytes": len(content), "created_at": now,
                    "filename": f"{bid}_{name[:-8]}.jsonl", "purpose": "batch_output", "status": "processed"}}
                b[name] = fid
        b["request_counts"].update(completed=len(out), failed=len(err))
        b.update(status=outcome, **{f"{outcome}_at": now})

    def _count(self, outcome: str) -> None:
        with self._lock:
            self.stats.outcomes[outcome] += 1

    def _admit(self) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0] <= now - self._window_s:
                self._window.popleft()
            if len(self._window) >= self._window_n:
                return False
            self._window.append(now)
            return True

    def _draw(self, fp: str, n: int) -> str:
        p = self.plan
        x = random.Random(f"{p.seed}:{fp}:{n}").random()
        for name, rate in (("429", p.rate_429), ("500", p.rate_500), ("slow", p.rate_slow), ("drop", p.rate_drop),
                           ("malformed", p.rate_malformed)):
            if x < rate:
                return name
            x -= rate
        return "ok"


def _multipart_file(content_type: str, body: bytes) -> tuple[bytes, str, str]:
    """The `file` part (content, filename) and the `purpose` field of a multipart/form-data upload."""
    from email.parser import BytesParser
    from email.policy import HTTP

    msg = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    content, filename, purpose = b"", "upload.jsonl", ""
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name == "file":
            content, filename = part.get_payload(decode=True) or b"", part.get_filename() or filename
        elif name == "purpose":
            purpose = (part.get_payload(decode=True) or b"").decode()
    return content, filename, purpose


_WORDS = (
    "describe explain list compare summarize write translate classify estimate design plan outline suggest "
    "rewrite evaluate identify calculate convert draft predict recommend the a of for in on with about three "
    "ancient modern river mountain city poem recipe budget garden planet engine market habit language music "
    "history ocean forest bridge library festival painting climate vaccine protein algorithm triangle novel "
    "volcano desert harbor orchestra telescope glacier meadow lantern compass tapestry vineyard satellite"
).split()


def tokens(text: str) -> int:
    """Tokens of a text as this server counts them: about 4 characters a token, the usual rule for English."""
    return -(-len(text) // 4)


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n") if start in text and end in text else ""


def canned_reply(prompt: str, fp: str, refuse_generation: bool = False) -> str:
    """A deterministic reply in the shape each role's parser expects, the way real models write them.

    Referee: a short review, then two scores; an empty answer gets 0, a teacher answer ("Answer to:")
    scores high, anything else anywhere from 0 to 9; some scores read "N out of 10". Generator: a new
    task about as long as its example, instruction and input alike (so a budget that ignores the input
    truncates it). Anything else: an answer that names the question."""
    rng = random.Random(fp)
    if "<<<ANSWER OF ASSISTANT 1>>>" in prompt:
        scores = []
        for n in (1, 2):
            answer = _between(prompt, f"<<<ANSWER OF ASSISTANT {n}>>>", f"<<<END ANSWER OF ASSISTANT {n}>>>").strip()
            score = 0 if not answer else rng.randint(7, 10) if answer.startswith("Answer to:") else rng.randint(0, 9)
            scores.append(f"{score} out of 10" if rng.random() < 0.3 else str(score))
        if "Score of the Assistant 1" in prompt:
            return (f"Both answers address the question.\nScore of the Assistant 1: {scores[0]}\n"
                    f"Score of the Assistant 2: {scores[1]}")
        return f"{scores[0]} {scores[1]}\nBoth answers address the question."
    if "<<<EXAMPLE TASK>>>" in prompt:
        if refuse_generation:
            return "I'm sorry, but I cannot write a new task right now."
        seed = _between(prompt, "<<<EXAMPLE TASK>>>", "<<<END EXAMPLE TASK>>>")
        instruction, _, input_text = seed.partition("\n\n")
        task = " ".join(rng.choice(_WORDS) for _ in range(max(7, len(instruction.split()))))
        new_input = " ".join(rng.choice(_WORDS) for _ in range(len(input_text.split()))) if input_text.strip() else "none"
        return f"New task: {task.capitalize()}.\nNew input: {new_input}"
    return f"Answer to: {prompt[:80]}"


def main() -> None:
    """Serve until stdin closes; print the port first and the outcome counts (JSON) last."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=__doc__)
    for name in ("rate_429", "rate_500", "rate_slow", "rate_drop", "rate_malformed", "latency_s", "retry_after_s"):
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(FaultPlan(), name))
    ap.add_argument("--requests-per-minute", type=int, default=None)
    args = ap.parse_args()
    srv = FaultServer(FaultPlan(**vars(args))).start()
    print(srv.port, flush=True)
    sys.stdin.read()
    srv.stop()
    print(json.dumps({"outcomes": dict(srv.stats.outcomes), "answered": sum(srv.stats.successes.values())}), flush=True)


if __name__ == "__main__":
    main()

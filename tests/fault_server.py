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
    generator_refuses: bool = False
    """The generator declines every task (nothing is accepted, so the next Train Pool is empty)."""


@dataclass
class ServerStats:
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    successes: collections.Counter = field(default_factory=collections.Counter)  # by last user message
    answered: collections.Counter = field(default_factory=collections.Counter)  # 200s by request fingerprint
    seen: collections.Counter = field(default_factory=collections.Counter)  # by request fingerprint
    accepted_at: list[float] = field(default_factory=list)  # monotonic arrival times of answered requests
    arrivals: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))  # by last user message


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error"}


class FaultServer:
    def __init__(self, plan: FaultPlan = FaultPlan()):
        self.plan = plan
        self.stats = ServerStats()
        self._lock = threading.Lock()
        self._window: collections.deque[float] = collections.deque()
        if plan.requests_per_minute:
            self._window_n = math.ceil(plan.requests_per_minute / 60)
            self._window_s = self._window_n * 60.0 / plan.requests_per_minute
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> FaultServer:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
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
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json",
                f"content-length: {len(payload)}", "connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
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
            self.stats.arrivals[last].append(time.monotonic())
        fault = plan.script[n] if n < len(plan.script) else self._draw(fp, n)
        if plan.fail_after is not None and sum(self.stats.successes.values()) >= plan.fail_after:
            fault = "500"
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
        answer = canned_reply(last, fp, refuse_generation=plan.generator_refuses)
        finish = "stop"
        if req.get("max_tokens") and tokens(answer) > req["max_tokens"]:  # cut off, as a real endpoint does
            answer, finish = answer[:4 * req["max_tokens"]], "length"
        prompt_tokens = sum(tokens(m["content"]) for m in messages)
        completion_tokens = tokens(answer)
        payload = {
            "id": f"chatcmpl-{fp[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        with self._lock:
            self.stats.successes[last] += 1
            self.stats.answered[fp] += 1
            self.stats.accepted_at.append(time.monotonic())
        await self.send(writer, 200, json.dumps(payload).encode())
        return True

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

"""Requests answered through a provider's Batch API, durable at every step.

A role in `mode: batch` hands its requests to a `BatchRunner` instead of chatting: they are written to
JSONL files, uploaded, submitted as batches, and their answers land in the same response store under the
same request keys, so the stages read them exactly as they read interactive answers.

Each batch is a row of the `BatchLedger` (`batch_jobs`, in the response store's SQLite file) that moves through

    prepared (input file written)  ->  uploaded (file id)  ->  submitted (batch id)  ->  ended (the API's
    final status and result files)  ->  collected (every request answered or recorded as failed)

and every step is recorded before the next one starts. A process killed anywhere resumes from the row:
an upload is repeated (files cost nothing), a batch whose creation was not recorded is found again by the
job id it carries in its metadata before another is created, results are saved idempotently. So a resume
never submits a second batch for the same requests and loses no result.

`advance()` makes one pass and returns at once: waiting for batches is the caller's, and holds nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from lion_core.config import BatchSettings, Price
from lion_core.errors import LionError
from lion_core.llm.accounting import Accounting
from lion_core.llm.batch_ledger import BatchLedger
from lion_core.llm.batch_ledger import live_batch_count as live_batch_count  # re-exported: the flows ask here
from lion_core.llm.budget import Budget, cost_usd, worst_case_usd
from lion_core.llm.claims import Holder
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import ResponseStore, StoredCall

log = logging.getLogger("lion.batches")

FINAL_STATUS = ("completed", "expired", "failed", "cancelled")
METADATA_KEY = "lion_job"


class BatchJobError(LionError):
    """The provider refuses to show a submitted batch or its results (a 4xx other than 429): waiting cannot
    help, and a new batch would pay again for requests the provider may still answer."""


@dataclass(frozen=True)
class BatchProgress:
    """Where a set of requests stands: answered, recorded as failed for good, still in batches, or spent
    their batch attempts (for the caller to ask interactively or leave failed)."""

    total: int
    answered: int
    failed: int
    pending: int
    exhausted: tuple[str, ...]
    batches_live: int
    batches_submitted_now: int

    @property
    def done(self) -> bool:
        return self.pending == 0


def request_line(custom_id: str, request: ChatRequest, api_model: str) -> dict[str, Any]:
    """One line of a batch input file: the same body an interactive call sends."""
    body: dict[str, Any] = {"model": api_model, "messages": request.api_messages(), "temperature": request.temperature,
                            "top_p": request.top_p}
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def plan_batches(items: Sequence[tuple[str, ChatRequest]], api_model: str, settings: BatchSettings,
                 token_room: int) -> list[list[tuple[str, ChatRequest]]]:
    """Split (key, request) pairs into batches within the per-file request and byte limits, using at most
    `token_room` estimated tokens in all; what does not fit waits for a later pass."""
    batches: list[list[tuple[str, ChatRequest]]] = []
    current: list[tuple[str, ChatRequest]] = []
    size = tokens = 0
    for key, req in items:
        est = req.estimated_tokens()
        if tokens + est > token_room and (batches or current):
            break
        line = len(json.dumps(request_line(key, req, api_model), ensure_ascii=False).encode()) + 1
        if current and (len(current) >= settings.max_requests_per_batch or size + line > settings.max_bytes_per_batch):
            batches.append(current)
            current, size = [], 0
        current.append((key, req))
        size += line
        tokens += est
    if current:
        batches.append(current)
    return batches


INPUT_IN_LEDGER = "ledger:"
"""How a job's `input_path` says its input file is kept in the ledger (`batch_inputs`), not on a disk."""


class BatchRunner:
    """One role's batches on one endpoint. `client` is an `openai.OpenAI` for the endpoint (the real SDK:
    files and batches); `folder` keeps the input files until their batch is collected (None: the ledger keeps
    them, so that a store on PostgreSQL needs no local disk and another machine can resume). `accounting` gets a
    `batch` row for the role and stage: requests placed in batches (`calls`, of them `retries` placed again
    after a failed batch attempt) and the tokens of the answers collected, at `price`. `ledger` records
    where each batch stands; by default the one in the store's file, and `close()` closes it either way.
    `budget` keeps the run's spend as answers are collected, and submits only the batches whose worst
    case fits within its caps beside the batches not yet collected."""

    def __init__(self, client: openai.OpenAI, store: ResponseStore, call: StoredCall, api_model: str,
                 settings: BatchSettings, folder: str | os.PathLike | None, accounting: Accounting | None = None,
                 price: Price | None = None, ledger: BatchLedger | None = None, budget: Budget | None = None):
        self.client, self.store, self.call, self.api_model, self.settings = client, store, call, api_model, settings
        self.budget = budget
        self.accounting, self.price = accounting or Accounting(), price or Price()
        self.folder = None if folder is None else Path(folder)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.ledger = ledger or BatchLedger(store.connect())
        self._holder = Holder.new().name

    def close(self) -> None:
        self.ledger.close()
        self.client.close()

    def drive_live(self) -> int:
        """Move the endpoint's batches in progress without submitting any; the count still live."""
        for job in self._live():
            self._drive(job, {})
        return len(self._live())

    def _live(self) -> list[dict]:
        return self.ledger.live(self.call.endpoint, self.call.model)

    def mark_asked_interactively(self, keys: Sequence[str]) -> None:
        """Keys whose batch attempts were spent and that were then asked interactively: settled."""
        self.ledger.mark_asked_interactively(keys)

    # -- the pass ---------------------------------------------------------------------------------------
    def advance(self, requests: Sequence[ChatRequest]) -> BatchProgress:
        """Move every batch of these requests one step or more, submit batches for requests in none, save
        what has come back. Returns at once."""
        unique: dict[str, ChatRequest] = {}
        for r in requests:
            unique.setdefault(r.key(self.call.endpoint, self.call.model), r)
        for job in self._live():
            self._drive(job, unique)
        answered = self.store.successes(unique)
        claimed = self.ledger.claimed(unique)
        exhausted = self._exhausted(unique, answered, claimed)
        todo = [(k, r) for k, r in unique.items() if k not in answered and k not in claimed and k not in exhausted]
        submitted = 0
        enqueued = self.ledger.enqueued_tokens(self.call.endpoint, self.call.model)
        room = self.settings.max_enqueued_tokens - enqueued
        if todo and self.budget is not None:
            todo = todo[:self._affordable(todo, enqueued)]
            if not todo and not self._live():
                raise self.budget.exhausted(len(answered), len(unique))
        if todo and (room > 0 or not enqueued):  # with nothing enqueued, one batch goes even if over the cap
            for members in plan_batches(todo, self.api_model, self.settings, room):
                self._drive(self._prepare(members), unique)
                submitted += 1
        # where things stand after this pass (a batch may have been submitted and collected within it)
        answered = self.store.successes(unique)
        exhausted = self._exhausted(unique, answered, self.ledger.claimed(unique))
        failed_for_good = len(exhausted) if self.settings.on_exhausted == "fail" else 0
        pending = sum(1 for k in unique if k not in answered and k not in exhausted)
        return BatchProgress(total=len(unique), answered=len(answered), failed=failed_for_good, pending=pending,
                             exhausted=exhausted, batches_live=len(self._live()), batches_submitted_now=submitted)

    def _affordable(self, todo: list[tuple[str, ChatRequest]], enqueued_tokens: int) -> int:
        """How many of `todo` may go in new batches under the budget: the batches not yet collected are held at
        their tokens' worst case (every token at the dearer of the two prices)."""
        assert self.budget is not None
        dearer = max(self.price.prompt_per_million, self.price.completion_per_million)
        reply = self.budget.config.estimated_reply_tokens
        return self.budget.affordable([worst_case_usd(r, self.price, reply) for _, r in todo],
                                      held=enqueued_tokens * dearer / 1e6)

    def exhausted(self, keys: Sequence[str]) -> set[str]:
        """Keys not answered and in no live batch whose batch attempts are spent (`on_exhausted` applies)."""
        unique = dict.fromkeys(keys)
        return set(self._exhausted(unique, self.store.successes(unique), self.ledger.claimed(unique)))

    def settled(self, keys: Sequence[str]) -> set[str]:
        """Unanswered keys that no further batch will be placed for: their batch attempts are spent and,
        with `on_exhausted: interactive`, they were asked interactively since (and failed there too)."""
        out = self.exhausted(keys)
        if self.settings.on_exhausted == "interactive" and out:
            out &= self.ledger.asked_interactively(out)
        return out

    def _exhausted(self, unique: Mapping[str, Any], answered: Mapping[str, Any], claimed: set[str]) -> tuple[str, ...]:
        attempts = self.ledger.attempts(unique)
        return tuple(k for k in unique if k not in answered and k not in claimed
                     and (attempts.get(k, 0) >= self.settings.max_attempts or (k in attempts and self._hopeless(k))))

    def _hopeless(self, key: str) -> bool:
        """A request the provider refused as it is (a 4xx other than 429, e.g. a prompt over the context
        length): another batch would be refused too, so its batch attempts are spent at once."""
        row = self.store.row(key) or {}
        m = re.fullmatch(r"BatchRequestError(\d+)", row.get("error_class") or "")
        return bool(m) and 400 <= int(m.group(1)) < 500 and int(m.group(1)) not in (408, 409, 429)

    # -- the steps --------------------------------------------------------------------------------------
    def _prepare(self, members: list[tuple[str, ChatRequest]]) -> dict:
        """Write the input file (atomically), then record the job and its members in one transaction."""
        keys = sorted(k for k, _ in members)
        round_ = max(self.ledger.attempts(dict(members)).values(), default=0)
        job = hashlib.sha256(json.dumps([self.call.endpoint, self.call.model, keys, round_]).encode()).hexdigest()[:32]
        content = "".join(json.dumps(request_line(k, r, self.api_model), ensure_ascii=False) + "\n" for k, r in members)
        data = content.encode()
        if self.folder is None:
            path, kept = f"{INPUT_IN_LEDGER}{job}.jsonl", content
        else:
            path, kept = self.folder / f"{job}.jsonl", None
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        recorded = self.ledger.record(job, self.call, str(path), hashlib.sha256(data).hexdigest(), keys,
                                      sum(r.estimated_tokens() for _, r in members), data=kept)
        usage = self.accounting.row(self.call.role, self.call.stage, "batch")
        usage.calls += len(members)
        usage.retries += sum(1 for n in self.ledger.attempts(dict(members)).values() if n)
        return recorded

    def _drive(self, job: dict, known: Mapping[str, ChatRequest]) -> None:
        """Take one job as far as it goes now, holding it in the store's claims: two processes sharing the
        store (a run resumed on another machine while the first still looks) do not upload or submit it
        twice; the one that finds it held leaves it for its next pass."""
        if not self.store.claim(f"batch-job:{job['job']}", self._holder):
            log.info("%s batch %s is being moved by another process; looked at again on the next pass",
                     self.call.role, job["job"][:12])
            return
        try:
            self._step(self.ledger.job(job["job"]), known)  # as it is now, not as it was listed
        finally:
            self.store.release(f"batch-job:{job['job']}", self._holder)

    def _step(self, job: dict, known: Mapping[str, ChatRequest]) -> None:
        """A failed API call leaves the job where it was, for the next pass; a job that cannot be uploaded
        or created `max_attempts` times in a row is given up, its requests recorded as failed with the
        reason (one batch attempt each)."""
        try:
            if job["state"] == "prepared":
                job = self._upload(job)
            if job["state"] == "uploaded":
                job = self._submit(job)
            if job["state"] == "submitted":
                job = self._poll(job)
            if job["state"] == "ended":
                self._collect(job, known)
        except (openai.APIStatusError, openai.APIConnectionError) as err:
            message = f"{type(err).__name__}: {str(err)[:300]}"
            status = getattr(err, "status_code", None)
            if job["state"] in ("submitted", "ended") and status and 400 <= status < 500 and status not in (408, 409, 429):
                raise BatchJobError(
                    f"{self.call.role}: batch {job['batch_id']} ({job['state']}): {message}. Its requests stay claimed "
                    "by it; resume with the key and endpoint that created it") from None
            if job["state"] in ("prepared", "uploaded"):  # no batch exists yet: a bounded number of tries
                job = self.ledger.update(job["job"], tries=job["tries"] + 1, reason=f"{job['state']} step failed: {message}")
                if job["tries"] >= self.settings.max_attempts:
                    log.warning("%s batch %s given up after %d failed tries: %s", self.call.role, job["job"][:12],
                                job["tries"], message)
                    self.ledger.update(job["job"], state="ended", status="not_submitted")
                    self._collect(self.ledger.job(job["job"]), known)
                    return
            log.warning("%s batch %s (%s): %s; tried again on the next pass", self.call.role, job["job"][:12],
                        job["state"], message)

    def _input(self, job: dict) -> bytes:
        if job["input_path"].startswith(INPUT_IN_LEDGER):
            return self.ledger.input(job["job"]).encode()
        return Path(job["input_path"]).read_bytes()

    def _upload(self, job: dict) -> dict:
        data = self._input(job)
        if hashlib.sha256(data).hexdigest() != job["input_sha256"]:
            raise RuntimeError(f"batch input {job['input_path']} changed since it was written")
        f = self.client.files.create(file=(Path(job["input_path"]).name, data), purpose="batch")
        return self.ledger.update(job["job"], state="uploaded", file_id=f.id)

    def _submit(self, job: dict) -> dict:
        found = self._find_batch(job["job"], job["created_at"])
        if found is None:
            found = self.client.batches.create(input_file_id=job["file_id"], endpoint="/v1/chat/completions",
                                               completion_window=self.settings.completion_window,
                                               metadata={METADATA_KEY: job["job"]})
        else:
            log.info("%s batch %s was created before the last stop: %s", self.call.role, job["job"][:12], found.id)
        return self.ledger.update(job["job"], state="submitted", batch_id=found.id, status=found.status)

    def _find_batch(self, job: str, created_at: str) -> Any | None:
        """A batch created for `job` whose creation was not recorded (killed right after the call): the
        provider's batches, newest first, back to the job's own creation."""
        since = dt.datetime.fromisoformat(created_at).timestamp() - 300
        for b in self.client.batches.list(limit=100):  # the SDK pages on
            if (b.metadata or {}).get(METADATA_KEY) == job:
                return b
            if b.created_at and b.created_at < since:
                break
        return None

    def _poll(self, job: dict) -> dict:
        b = self.client.batches.retrieve(job["batch_id"])
        counts = b.request_counts
        fields = {"status": b.status, "completed": getattr(counts, "completed", 0) or 0,
                  "failed": getattr(counts, "failed", 0) or 0}
        if b.status in FINAL_STATUS:
            reason = None
            if b.status == "failed" and b.errors and b.errors.data:
                reason = "; ".join(f"{e.code}: {e.message}" for e in b.errors.data)[:2000]
            fields.update(state="ended", output_file_id=b.output_file_id, error_file_id=b.error_file_id, reason=reason)
        return self.ledger.update(job["job"], **fields)

    def _collect(self, job: dict, known: Mapping[str, ChatRequest]) -> None:
        """Save every answer and every per-request error; requests the batch never answered (expired,
        cancelled, failed) are recorded as failed with the batch's status. Idempotent."""
        members = self.ledger.members(job["job"])
        lines = {json.loads(x)["custom_id"]: json.loads(x) for x in self._input(job).decode().splitlines()}
        seen: set[str] = set()
        for file_id in (job["output_file_id"], job["error_file_id"]):
            if not file_id:
                continue
            for raw in self.client.files.content(file_id).text.splitlines():
                if not raw.strip():
                    continue
                item = json.loads(raw)
                key = item.get("custom_id")
                if key not in members:
                    continue
                seen.add(key)
                self._save(key, known.get(key) or _request_of(lines[key]), item)
        unanswered = members - seen
        reason = job["reason"] or f"the batch ended {job['status']} before answering it"
        for key in unanswered:
            kind = "Batch" + "".join(w.capitalize() for w in (job["status"] or "ended").split("_"))
            self._failure(key, known.get(key) or _request_of(lines[key]), kind, reason)
        self.ledger.update(job["job"], state="collected")
        if job["input_path"].startswith(INPUT_IN_LEDGER):
            self.ledger.drop_input(job["job"])
        else:
            Path(job["input_path"]).unlink(missing_ok=True)
        log.info("%s batch %s %s: %d answered, %d errors, %d unanswered", self.call.role, job["job"][:12],
                 job["status"], job["completed"], job["failed"], len(unanswered))

    def _save(self, key: str, request: ChatRequest, item: dict) -> None:
        response = item.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        choices = body.get("choices") or []
        text = ((choices[0].get("message") or {}).get("content") if choices else None) or ""
        if status == 200 and text.strip():
            usage = body.get("usage") or {}
            result = ChatResult(key=key, ok=True, text=text, finish_reason=choices[0].get("finish_reason"),
                                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                                completion_tokens=int(usage.get("completion_tokens") or 0),
                                attempts=self.store.previous_attempts(key) + 1)
            if not self.store.successes([key]):
                self.accounting.add_tokens(self.call.role, self.call.stage, result.prompt_tokens,
                                           result.completion_tokens, self.price, mode="batch")
                if self.budget is not None:
                    self.budget.settle(0.0, cost_usd(result.prompt_tokens, result.completion_tokens, self.price))
            self.store.put_success(self.call, request, result, latency_s=0.0)
            return
        err = item.get("error") or body.get("error") or {}
        message = err.get("message") if isinstance(err, dict) else str(err)
        kind = "EmptyCompletion" if status == 200 else f"BatchRequestError{status or ''}"
        self._failure(key, request, kind, message or f"status {status}")

    def _failure(self, key: str, request: ChatRequest, error_class: str, message: str) -> None:
        if self.store.successes([key]):
            return
        result = ChatResult(key=key, ok=False, attempts=self.store.previous_attempts(key) + 1, error_class=error_class,
                            error_message=str(message)[:2000])
        self.store.put_failure(self.call, request, result)


def _request_of(line: dict) -> ChatRequest:
    body = line["body"]
    return ChatRequest.of(body["messages"], temperature=body.get("temperature", 1.0), top_p=body.get("top_p", 1.0),
                          max_tokens=body.get("max_tokens"))

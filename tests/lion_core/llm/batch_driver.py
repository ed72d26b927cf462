"""A process that runs `BatchRunner.advance` over a fixed set of requests, optionally killing itself with
SIGKILL at one step of a batch's life: what the batch tests resume from.

    python -m tests.lion_core.llm.batch_driver STORE FOLDER URL N [--kill-at STEP] [--passes K]
"""

from __future__ import annotations

import argparse
import json
import os
import signal

import openai

from lion_core.config import BatchSettings
from lion_core.llm.batches import BatchRunner
from lion_core.llm.requests import ChatRequest
from lion_core.llm.responses import ResponseStore, StoredCall

STEPS = ("before-upload", "after-upload", "after-create", "after-completion", "mid-save")


def requests(n: int) -> list[ChatRequest]:
    return [ChatRequest.of([("user", f"Give one fact about the number {i}.")], temperature=0.0, max_tokens=32)
            for i in range(n)]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("folder")
    ap.add_argument("url")
    ap.add_argument("n", type=int)
    ap.add_argument("--kill-at", choices=STEPS)
    ap.add_argument("--passes", type=int, default=1)
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.url, api_key="sk-batch-test", max_retries=0)
    store = ResponseStore(args.store)
    runner = BatchRunner(client, store, StoredCall(role="teacher", stage="imitation", endpoint=args.url, model="m"),
                         "m", BatchSettings(), None if args.folder == "-" else args.folder)
    kill = args.kill_at
    if kill == "before-upload":
        client.files.create = lambda *a, **k: die()
    elif kill == "after-upload":
        real_upload = client.files.create

        def upload(*a, **k):
            real_upload(*a, **k)
            die()
        client.files.create = upload
    elif kill == "after-create":
        real_create = client.batches.create

        def create(*a, **k):
            real_create(*a, **k)
            die()
        client.batches.create = create
    elif kill == "after-completion":
        client.files.content = lambda *a, **k: die()
    elif kill == "mid-save":
        real_put = store.put_success
        saved = []

        def put(*a, **k):
            real_put(*a, **k)
            saved.append(1)
            if len(saved) == 3:
                die()
        store.put_success = put
    for _ in range(args.passes):
        p = runner.advance(requests(args.n))
    print(json.dumps({"answered": p.answered, "pending": p.pending, "failed": p.failed, "live": p.batches_live}))


if __name__ == "__main__":
    main()

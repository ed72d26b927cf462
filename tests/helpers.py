"""Small helpers shared by tests."""

import os
from pathlib import Path


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except OSError:  # gone, or the pid now belongs to another user's process
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # the name in () may hold spaces
    except (OSError, IndexError):
        return False


class FaultServerProcess:
    """The loopback fault server in a process of its own, for timing tests: a server thread sharing
    the test's interpreter would stamp arrivals late whenever the client holds the GIL."""

    def __init__(self, *args: str):
        import subprocess
        import sys

        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.fault_server", *args], cwd=repo,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self._proc.stdout.readline())}/v1"
        self.stats: dict = {}

    def __enter__(self) -> "FaultServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        import json

        out, _ = self._proc.communicate(timeout=30)
        self.stats = json.loads(out.strip().splitlines()[-1])


def wait_until_gone(pid: int, timeout_s: float = 5.0) -> bool:
    """Poll until `pid` has exited; False if it is still running after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def answer_whole_pool(store, k, pool, gateway, name, stage="imitation"):
    """A pool answered as the flows do it, in one shard: the part, then the committed merge."""
    from lion_core.imitation.answers import answer_part
    from lion_core.merge import merge_parts
    from lion_core.results import Shard

    shard = Shard(k=k, name=name, pool=pool, index=0, lo=0, hi=pool.rows)
    part = answer_part(store, shard, gateway, stage).part
    return merge_parts(store, k, name, [part], [pool])


def judge_whole_pool(store, k, cache_pool, teacher, student, gateway, config):
    """A Cache Pool judged as the flows do it, in one shard: the committed verdicts and their report."""
    from lion_core.discrimination.stage import discrimination_part, judgments_report
    from lion_core.merge import merge_parts
    from lion_core.results import Judging, Shard

    shard = Shard(k=k, name="judgments", pool=cache_pool, index=0, lo=0, hi=cache_pool.rows)
    part = discrimination_part(store, shard, Judging(teacher=teacher, student=student), gateway, config).part
    ref = merge_parts(store, k, "judgments", [part], [cache_pool, teacher, student])
    return ref, judgments_report(store, ref)


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def task_runs(since):
    """Cache keys of completed and of cached task runs started after `since`."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterStartTime

    runs = []
    with get_client(sync_client=True) as client:
        flt = TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since))
        while page := client.read_task_runs(task_run_filter=flt, limit=200, offset=len(runs)):
            runs += page
    def key(r):  # a persisted result's storage key is the task's cache key
        return getattr(r.state.data, "storage_key", None) if r.state else None

    completed = {key(r) for r in runs if r.state and r.state.name == "Completed" and key(r)}
    cached = {key(r) for r in runs if r.state and r.state.name == "Cached" and key(r)}
    names = {key(r): r.name for r in runs if key(r)}
    # which task (its function; a sub-flow's tracking run: the flow's), whatever the run's display name
    functions = {key(r): r.task_key.rsplit("-", 1)[0] for r in runs if key(r)}
    return {"completed_keys": completed, "cached_keys": cached, "names": names, "functions": functions}


def expire_leases(home: Path) -> int:
    """Move every slot lease of the local API kept under `home` (a PREFECT_HOME) past its end, as if its
    60 s (the shortest lease the API allows) had gone by; returns how many. Tests of what an expired lease
    leaves then set the clock instead of waiting it out. Only for leases whose holders are gone: a live
    holder would renew its lease."""
    import asyncio
    from datetime import timedelta

    from prefect.server.concurrency.lease_storage.filesystem import ConcurrencyLeaseStorage

    storage = ConcurrencyLeaseStorage(Path(home) / "concurrency_leases")

    async def expire() -> int:
        ids = await storage.read_active_lease_ids(limit=10_000)
        return sum([await storage.renew_lease(i, timedelta(seconds=-1)) for i in ids])

    return asyncio.run(expire())


def tiny_run(tmp_path, n=6):
    """A run of n made-up seeds under tmp_path with the default config: (config, store, init result)."""
    import json

    from lion_core.config import parse_config
    from lion_core.runs import init_run
    from lion_core.store import RunStore

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": f"Describe item {i} in detail.", "input": ""}) + "\n" for i in range(n)))
    cfg = parse_config({"storage": {"runs_root": str(tmp_path / "runs")}})
    res = init_run(cfg, str(seeds), run_id="r")
    return cfg, RunStore(cfg.storage.runs_root, "r", cfg), res


def teacher_gateway(url, store, cfg):
    """A gateway to `url` for the config's teacher, retrying fast."""
    from lion_core.llm import Endpoint, Gateway

    role = cfg.teacher.model_copy(update={"base_url": url, "retry": cfg.teacher.retry.model_copy(
        update={"max_attempts": 2, "initial_backoff_s": 0.01, "outage_after": 1000})})
    return Gateway(Endpoint(role="teacher", endpoint_id="teacher-ep", model="m", base_url=url, api_model="m", config=role), store)

"""Peak memory of a command and every process it starts, summed over the process tree.

`python bench/proc_memory.py -- CMD ...` runs CMD, samples its whole tree every 0.2 s and prints the
peak of the summed PSS (proportional set size: a shared page counts once, split among the processes
that map it) and of the summed RSS (shared pages counted in every process, an upper bound), with the
processes that made up the PSS peak. Orphans that leave the tree (reparented to init) are not followed;
Lion's children die with it (parent-death signal), so none should exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree(root: int) -> list[int]:
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _kb(pid: int, field: str, path: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(a.decode(errors="replace") for a in argv[:4])[:120]
    except OSError:
        return "?"


class TreeSampler:
    """Samples the tree of `root` in a thread until stopped; keeps the peaks (in MB)."""

    def __init__(self, root: int, interval_s: float = 0.2):
        self.root, self.interval_s = root, interval_s
        self.peak_pss_mb = self.peak_rss_mb = 0.0
        self.peak_processes: list[tuple[float, str]] = []
        self.largest_process_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = [(pid, _kb(pid, "Pss:", "smaps_rollup"), _kb(pid, "VmRSS:", "status")) for pid in tree(self.root)]
            pss, rss = sum(r[1] for r in rows) / 1024, sum(r[2] for r in rows) / 1024
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
            self.largest_process_mb = max([self.largest_process_mb] + [r[1] / 1024 for r in rows])
            if pss > self.peak_pss_mb:
                self.peak_pss_mb = pss
                self.peak_processes = sorted(((r[1] / 1024, _name(r[0])) for r in rows if r[1]), reverse=True)
            self._stop.wait(self.interval_s)

    def figures(self) -> dict:
        return {"peak_pss_mb": round(self.peak_pss_mb), "peak_rss_sum_mb": round(self.peak_rss_mb),
                "largest_process_pss_mb": round(self.largest_process_mb),
                "processes_at_peak": [[round(mb), name] for mb, name in self.peak_processes[:8]]}


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__)
        return 2
    cmd = argv[argv.index("--") + 1:]
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    with TreeSampler(proc.pid) as sampler:
        rc = proc.wait()
    figures = {"rc": rc, "seconds": round(time.monotonic() - start, 1), **sampler.figures()}
    print(json.dumps(figures), file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The installed `lion` console script, run as a user runs it (the CLI tests, and the flow tests that
start and stop real runs)."""

import os
import subprocess
import sys
from pathlib import Path

LION = Path(sys.executable).parent / "lion"
REPO = Path(__file__).resolve().parents[2]


def lion(*args, cwd=None, timeout=120, env=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([str(LION), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)

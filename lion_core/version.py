"""The code version recorded in every artifact: package version plus git commit when in a checkout."""

from __future__ import annotations

import functools
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

IMAGE_VERSION_ENV = "LION_CODE_VERSION"
"""Set in the Docker image (deployments/Dockerfile) from the checkout it was built from: the image has no git."""


@functools.cache
def code_version() -> str:
    try:
        version = metadata.version("lion-distill")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    repo = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get(IMAGE_VERSION_ENV) or version
    return f"{version}+g{sha}{'.dirty' if dirty else ''}"


def image_tag(version: str | None = None) -> str:
    """The Docker tag of the image built from this code: the code version in the characters a tag allows
    (`0.1.0+g1a2b3c4d5e6f.dirty` -> `0.1.0-g1a2b3c4d5e6f-dirty`)."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "-", (version or code_version()).replace(".dirty", "-dirty"))
    return tag.lstrip(".-")[:128] or "unknown"

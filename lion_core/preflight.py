"""Everything a run needs, checked before its first paid request: every file the config names, every
prompt template, every API key, every role's endpoint. All problems are reported at once, each naming
its config field, so a run never fails at training after paying for the teacher's answers."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from lion_core.config import EMBEDDED, RunConfig
from lion_core.limits import ROLES, role_config
from lion_core.prompts import prompts_dir

PROMPTS = ("teacher_system", "teacher_user", "student_alpaca", "referee_system", "referee_lion", "referee_vicuna",
           "generator_hard", "generator_easy")
"""Every template the stages render."""


def _local(path: str) -> bool:
    return "://" not in path and not path.startswith("hf:")


def _file_problem(field: str, path: str | None, *, parse_json: bool = False) -> str | None:
    if not path or path.startswith("hf:"):  # a hub dataset: fetched (or found in the cache) when the run is made
        return None
    if not _local(path):
        try:
            import fsspec

            fs, p = fsspec.core.url_to_fs(path)
            return None if fs.exists(p) else f"{field}: {path} does not exist"
        except Exception as err:  # noqa: BLE001 - any failure to reach it is the problem to report
            return f"{field}: cannot reach {path}: {type(err).__name__}: {err}"
    p = Path(path).expanduser()
    if not p.is_file():
        return f"{field}: {p} is not a file" if p.exists() else f"{field}: {p} does not exist"
    if parse_json:
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            return f"{field}: {p} is not valid JSON: {err}"
    return None


def file_problems(config: RunConfig, new_run: bool = True) -> list[str]:
    """Files the config names that are missing or unreadable (the seeds only matter for a new run)."""
    t, e = config.training, config.evaluation
    found = [
        _file_problem("data.seed", config.data.seed) if new_run else None,
        _file_problem("training.deepspeed_config", t.deepspeed_config, parse_json=True),
        _file_problem("training.hostfile", t.hostfile),
        _file_problem("evaluation.eval_set", e.eval_set) if e.after_run or e.eval_set else None,
    ]
    if new_run and not config.data.seed:
        found.append("data.seed: no seed data (set it, or pass --seed)")
    model = config.student.model
    if not model.startswith("embedded:") and (model.startswith((".", "/", "~")) or Path(model).expanduser().exists()):
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file():
            found.append(f"student.model: {folder} is not a model folder (no config.json)")
    for name in PROMPTS:
        path = prompts_dir() / f"{name}.txt"
        if not path.is_file():
            found.append(f"prompts: template {path} not found")
    return [p for p in found if p]


def endpoint_problems(config: RunConfig, env: dict[str, str] | None = None, timeout_s: float = 10.0,
                      probe: bool = True) -> list[str]:
    """API keys that are not set, and endpoints that do not answer or reject their key. The probe is
    `GET <base_url>/models`, which costs nothing; a server without that route still counts as up."""
    env = os.environ if env is None else env
    found: list[str] = []
    probed: dict[tuple[str, str | None], str | None] = {}
    for role in ROLES:
        r = role_config(config, role)
        field = {"reference": "evaluation.reference", "judge": "evaluation.judge"}.get(role, role)
        if role in ("reference", "judge") and not (config.evaluation.after_run or config.evaluation.eval_set):
            continue
        if r.base_url == EMBEDDED:
            continue
        key = env.get(r.api_key_env, "") if r.api_key_env else None
        if r.api_key_env and not key:
            found.append(f"{field}.api_key_env: ${r.api_key_env} is not set")
            continue
        if not probe:
            continue
        target = (r.base_url.rstrip("/"), r.api_key_env)
        if target not in probed:
            probed[target] = _probe(target[0], key, timeout_s)
        if probed[target]:
            found.append(f"{field}.base_url: {probed[target]}")
    return found


def _probe(base_url: str, key: str | None, timeout_s: float) -> str | None:
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return f"{base_url} rejected the key (HTTP {err.code})"
        return None  # it answered: up, even if it has no /models
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        return f"{base_url} does not answer: {reason}"
    except http.client.HTTPException as err:  # it answered, but not in HTTP
        return f"{base_url} answered with something that is not HTTP: {type(err).__name__}"


def training_problems(config: RunConfig, cuda_available: bool | None = None) -> list[str]:
    """What this machine lacks for the configured fine-tune: QLoRA's 4-bit base needs a CUDA GPU and
    bitsandbytes, and cannot have its parameters offloaded by ZeRO-3 (4-bit weights do not move to the CPU)."""
    t = config.training
    if t.method != "qlora":
        return []
    found = []
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        found.append("training.method: qlora loads the base model in 4 bits with bitsandbytes, which needs a CUDA "
                     "GPU, and this machine has none; use method lora here, or check the config on the GPU machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        found.append("training.method: qlora needs bitsandbytes, which is not installed "
                     "(pip install 'lion-distill[qlora]')")
    if t.deepspeed_config and _local(t.deepspeed_config) and Path(t.deepspeed_config).is_file():
        try:
            zero = json.loads(Path(t.deepspeed_config).read_text()).get("zero_optimization", {})
        except (OSError, ValueError):
            zero = {}  # reported by file_problems
        if isinstance(zero, dict) and (zero.get("offload_param") or {}).get("device", "none") != "none":
            found.append(f"training.deepspeed_config: {t.deepspeed_config} offloads parameters to the CPU, which a "
                         "4-bit QLoRA base cannot do; use zero2.json or zero3.json with method qlora")
    return found


def store_problems(config: RunConfig, env: dict[str, str] | None = None, probe: bool = True) -> list[str]:
    """A PostgreSQL response store whose password is not set, that cannot be reached, or whose tables were
    made by newer code. Nothing is created: the tables are made by the run's first use."""
    from lion_core.database import StoreUnavailable, connect, redact
    from lion_core.errors import ConfigError
    from lion_core.llm.store_schema import SCHEMA_VERSION

    s = config.storage
    if not s.shared_store:
        return []
    env = os.environ if env is None else env
    if s.password_env and not env.get(s.password_env):
        where = f" or the Prefect Secret block {s.password_secret!r} could not be read" if s.password_secret else ""
        return [f"storage.password_env: ${s.password_env} (the response store's password) is not set{where}"]
    if not probe:
        return []
    try:
        db = connect(s.response_store, password_env=s.password_env, environ=env)
    except (StoreUnavailable, ConfigError) as err:
        return [f"storage.response_store: {err}"]
    try:
        row = db.one("SELECT version FROM store_schema WHERE id = 1") if db.has_table("store_schema") else None
    except Exception as err:  # noqa: BLE001 - a permission refused, say: named, not a traceback
        return [f"storage.response_store: {redact(s.response_store)}: cannot read its schema version "
                f"({type(err).__name__}: {str(err).strip()[:300]})"]
    finally:
        db.close()
    if row and int(row[0]) > SCHEMA_VERSION:
        return [f"storage.response_store: its tables are schema version {row[0]}, newer than this code's "
                f"{SCHEMA_VERSION}: upgrade lion-distill"]
    return []


SHARED_FILE_SYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs", "fuse.")


def file_system_type(path: str, mounts: str = "/proc/mounts") -> str | None:
    """The type of the file system `path` is (or would be) on, from the longest mount point above it."""
    try:
        with open(mounts) as fh:
            table = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:
        return None
    target = os.path.abspath(os.path.expanduser(path))
    best = max((m for m in table if target == m[0] or target.startswith(m[0].rstrip("/") + "/")), default=None,
               key=lambda m: len(m[0]))
    return best[1] if best else None


def store_notes(config: RunConfig, mounts: str = "/proc/mounts") -> list[str]:
    """Warnings, not errors: with the run in a bucket and its store on PostgreSQL, a resume on another
    machine finds every pool and answer, but the student checkpoints only where `checkpoints_root` is a
    file system that machine mounts too."""
    s = config.storage
    if not (s.shared_store and "://" in s.runs_root and s.checkpoints_root):
        return []
    fs = file_system_type(s.checkpoints_root, mounts)
    if fs is None or fs.startswith(SHARED_FILE_SYSTEMS):
        return []
    return [f"storage.checkpoints_root: {s.checkpoints_root} is on a local file system ({fs}): a resume on another "
            "machine will not find the student checkpoints of the iterations done here; for a run that moves "
            "between machines, mount one shared file system (NFS, EFS, Filestore, Lustre) at the same path on each"]


def preflight_problems(config: RunConfig, new_run: bool = True, probe: bool = True) -> list[str]:
    return (file_problems(config, new_run) + training_problems(config) + endpoint_problems(config, probe=probe)
            + store_problems(config, probe=probe))

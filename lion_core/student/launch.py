"""Launch the student's fine-tune as a subprocess: its own process group, a timeout, a streamed log.

The command comes from the run config: `deepspeed --num_gpus N` (with a hostfile for several nodes),
`torchrun --nproc_per_node N`, `accelerate launch --num_processes N`, or one plain `python` process
(which gets RANK/WORLD_SIZE/MASTER_* set, since DeepSpeed wants them even alone). On timeout or
cancellation the whole process group is stopped, so no rank outlives its launcher.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lion_core.config import RunConfig
from lion_core.errors import LionError
from lion_core.lifeline import guarded
from lion_core.llm.embedded import free_port
from lion_core.llm.progress import Progress
from lion_core.store import PoolRef, resolve_uri
from lion_core.student.train import COMPLETE, FINAL, parse_step_line

log = logging.getLogger("lion.train")



class TrainingError(LionError):
    """The fine-tune failed or timed out; the message ends with the tail of its log."""


def build_command(config: RunConfig, train_args: list[str], master_port: int,
                  job_id: str = "lion-train") -> tuple[list[str], dict[str, str]]:
    """The launcher's command line and extra environment. `master_port` is a free local port for a
    single node; several nodes meet at `training.master_addr:master_port`. `job_id` tells one
    fine-tune's torchrun rendezvous from another's."""
    t = config.training
    bin_dir = Path(sys.executable).parent
    env: dict[str, str] = {}
    multinode = t.num_nodes > 1
    if t.launcher == "deepspeed":
        port = t.master_port if multinode else master_port
        cmd = [str(bin_dir / "deepspeed"), "--num_gpus", str(t.num_gpus), "--master_port", str(port)]
        if multinode:  # deepspeed starts the other nodes' ranks itself (pdsh/ssh, MPI or srun)
            cmd += ["--num_nodes", str(t.num_nodes), "--hostfile", str(t.hostfile), "--launcher", t.multinode_launcher]
            if t.master_addr:
                cmd += ["--master_addr", t.master_addr]
        cmd += ["--module", "lion_core.student.train"]
    elif t.launcher == "torchrun":
        cmd = [str(bin_dir / "torchrun"), "--nproc_per_node", str(t.num_gpus), "--nnodes", str(t.num_nodes)]
        if multinode:  # every node runs this same command; they meet at the rendezvous
            cmd += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"{t.master_addr}:{t.master_port}", "--rdzv_id", job_id]
        else:
            cmd += ["--master_port", str(master_port)]
        cmd += ["-m", "lion_core.student.train"]
    elif t.launcher == "accelerate":
        cmd = [str(bin_dir / "accelerate"), "launch", "--num_processes", str(t.world_size),
               "--num_machines", str(t.num_nodes), "--main_process_port", str(master_port), "-m", "lion_core.student.train"]
    else:
        cmd = [sys.executable, "-m", "lion_core.student.train"]
        env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port)}
    return cmd + train_args, env


@dataclass(frozen=True)
class TrainOptions:
    """Knobs of one fine-tune that are not the run's settings: tests and benchmarks cut it short."""

    max_steps: int = -1
    """-1: the epochs of `training.num_train_epochs`."""
    save_steps: int = 200
    """Trainer checkpoints (what an interrupted fine-tune resumes from) every this many steps."""
    sampling: str = "group_by_length"
    """How batches are drawn: `group_by_length` (less padding) or `random`."""
    timeout_s: float | None = None
    """None: `training.timeout_s`."""
    keep_trainer_checkpoints: bool = False
    """Keep `trainer/checkpoint-*` once the model is complete. They exist for a fine-tune cut short to
    resume from; after it they are dead weight (optimizer state: about 16 bytes a trainable weight)."""


def train_student(config: RunConfig, answers: PoolRef, base_model: str, output_dir: str | Path, *, run_id: str = "",
                  iteration: int = 0, options: TrainOptions = TrainOptions()) -> Path:
    """Fine-tune `base_model` on the answers and return the checkpoint folder. An existing complete
    checkpoint is returned as it is; an interrupted one resumes from its last Trainer checkpoint."""
    out = Path(output_dir)
    final = out / FINAL
    if (final / COMPLETE).is_file():
        return final
    out.mkdir(parents=True, exist_ok=True)
    config_json = out / "run_config.json"
    config_json.write_text(json.dumps(config.to_json_dict()))
    root = config.storage.runs_root  # `run://` references (answers, a previous checkpoint) are the run's, under it
    train_args = [
        "--config-json", str(config_json), "--answers-uri", resolve_uri(answers.uri, root), "--answers-sha256", answers.sha256,
        "--answers-rows", str(answers.rows), "--base-model", resolve_uri(base_model, root), "--output-dir", str(out),
        "--run-id", run_id, "--iteration", str(iteration), "--max-steps", str(options.max_steps),
        "--save-steps", str(options.save_steps), "--sampling", options.sampling,
    ]
    port = config.training.master_port if config.training.num_nodes > 1 else free_port()
    cmd, extra_env = build_command(config, train_args, port, f"{run_id or 'lion'}-iter-{iteration}")
    if config.training.launcher == "torchrun" and config.training.num_nodes > 1:
        log.warning("torchrun on %d nodes: each other node must run this same command, with this run's folder "
                    "on a shared file system: %s", config.training.num_nodes, " ".join(cmd))
    # glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, in one arena per
    # thread; a fixed 128 KiB threshold and 2 arenas give freed tensor buffers back to the OS (measured
    # on CPU, the demo's fine-tune: 2.8 GB peak without, 2.5 GB with). The environment can override them.
    env = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "2", **os.environ, **extra_env,
           "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        run_subprocess(cmd, env, out / "train.log", options.timeout_s or config.training.timeout_s)
    except TrainingError as err:
        # The marker is written after every rank saved: a crash in the interpreter's teardown after it
        # (native thread pools at exit) must not throw the finished fine-tune away.
        if not (final / COMPLETE).is_file():
            raise
        log.warning("training ended abnormally after writing a complete checkpoint; using %s (%s)",
                    final, str(err).splitlines()[0])
    finally:
        remove_shm_buffers(port)
    if not (final / COMPLETE).is_file():
        raise TrainingError(f"training finished without a complete checkpoint in {final}; log: {out / 'train.log'}")
    if not options.keep_trainer_checkpoints:
        shutil.rmtree(out / "trainer", ignore_errors=True)
    return final


def remove_shm_buffers(port: int, shm_dir: Path = Path("/dev/shm")) -> list[Path]:
    """Delete this machine's DeepSpeed CPU all-reduce buffers of the fine-tune that met on `port`.

    Under the `deepspeed` launcher on CPU each rank creates a 66 MB shared-memory file named for the
    master port and never unlinks it, so every fine-tune left one in RAM (14 GB here before this). The
    port was this fine-tune's and its ranks have exited, so no live job owns these names."""
    gone = []
    for path in shm_dir.glob(f"deepspeed_allreduce_buffer_{os.getuid()}_*_{port}_*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            gone.append(path)
    return gone


def run_subprocess(cmd: list[str], env: dict[str, str], log_path: Path, timeout_s: float) -> None:
    """Run `cmd` in its own process group, streaming its output to `log_path` and the logger."""
    tail: collections.deque[str] = collections.deque(maxlen=60)
    log.info("launching: %s", " ".join(cmd))
    with open(log_path, "a", encoding="utf-8") as log_file:
        proc = subprocess.Popen(guarded(cmd, group=True), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, text=True, errors="replace", start_new_session=True)

        progress: list[Progress] = []  # made at the first step line: the total is the Trainer's

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                log_file.write(line)
                log_file.flush()
                if (step := parse_step_line(line)) is not None:
                    if not progress:
                        progress.append(Progress(step[1], "train", unit="step", quiet_below_s=float("inf")))
                        for _ in range(step[0] - 1):  # a resumed fine-tune starts past 0: done before, not now
                            progress[0].update(cached=True)
                    progress[0].advance_to(step[0])
                    continue  # the bar shows it; the log file keeps it
                tail.append(line.rstrip("\n"))
                log.info("train | %s", line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(proc)
            reader.join(5)
            raise TrainingError(f"training timed out after {timeout_s:.0f}s and was stopped; last log lines:\n"
                                + "\n".join(tail)) from None
        except BaseException:  # cancelled (KeyboardInterrupt, flow cancellation): take every rank down
            _stop_group(proc)
            raise
        reader.join(10)
        for bar in progress:
            bar.close()
    if proc.returncode != 0:
        raise TrainingError(f"training failed (exit code {proc.returncode}); last log lines:\n" + "\n".join(tail))


def _stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)

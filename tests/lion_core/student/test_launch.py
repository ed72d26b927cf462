import io
import os
import sys
import time

import pytest

from lion_core.config import parse_config
from lion_core.student.launch import TrainingError, TrainOptions, build_command, remove_shm_buffers, run_subprocess
from lion_core.student.train import parse_step_line
from tests.helpers import wait_until_gone


def _cfg(**training):
    return parse_config({"training": {"effective_batch_size": 8, "per_device_batch_size": 2, **training}})


def test_deepspeed_command():
    cmd, env = build_command(_cfg(launcher="deepspeed", num_gpus=2), ["--x", "1"], 29999)
    assert cmd[0].endswith("deepspeed") and cmd[1:5] == ["--num_gpus", "2", "--master_port", "29999"]
    assert cmd[5:7] == ["--module", "lion_core.student.train"] and cmd[-2:] == ["--x", "1"] and env == {}


def test_multi_node_deepspeed_uses_the_hostfile():
    cmd, _ = build_command(_cfg(launcher="deepspeed", num_gpus=2, num_nodes=2, hostfile="/etc/hosts.ds"), [], 1)
    assert cmd[cmd.index("--num_nodes") + 1] == "2" and cmd[cmd.index("--hostfile") + 1] == "/etc/hosts.ds"


def test_two_nodes_of_eight_gpus_as_the_paper_trained():
    """The paper's 8 x A100, as 2 nodes of 8: deepspeed starts node-b's ranks over pdsh and both meet at
    node-a's fixed port (a free local port would differ between nodes)."""
    cfg = _cfg(launcher="deepspeed", num_gpus=8, num_nodes=2, hostfile="/shared/hostfile", master_addr="node-a",
               master_port=29510, effective_batch_size=128, per_device_batch_size=4)
    cmd, env = build_command(cfg, ["--x", "1"], 40001, job_id="r-iter-0")
    assert cmd[1:] == ["--num_gpus", "8", "--master_port", "29510", "--num_nodes", "2", "--hostfile", "/shared/hostfile",
                       "--launcher", "pdsh", "--master_addr", "node-a", "--module", "lion_core.student.train", "--x", "1"]
    assert env == {} and cfg.training.world_size == 16 and cfg.training.gradient_accumulation_steps == 2
    slurm = _cfg(launcher="deepspeed", num_gpus=8, num_nodes=2, hostfile="/shared/hostfile", multinode_launcher="slurm",
                 effective_batch_size=128, per_device_batch_size=4)
    cmd, _ = build_command(slurm, [], 40001)
    assert cmd[cmd.index("--launcher") + 1] == "slurm" and "--master_addr" not in cmd  # the hostfile's first host


def test_multi_node_torchrun_meets_at_a_rendezvous():
    cfg = _cfg(launcher="torchrun", num_gpus=8, num_nodes=2, master_addr="10.0.0.5", effective_batch_size=128,
               per_device_batch_size=4)
    cmd, _ = build_command(cfg, [], 40001, job_id="run-7-iter-2")
    assert cmd[1:] == ["--nproc_per_node", "8", "--nnodes", "2", "--rdzv_backend", "c10d", "--rdzv_endpoint",
                       "10.0.0.5:29500", "--rdzv_id", "run-7-iter-2", "-m", "lion_core.student.train"]
    single, _ = build_command(_cfg(launcher="torchrun", num_gpus=2), [], 40001)
    assert "--rdzv_endpoint" not in single and single[single.index("--master_port") + 1] == "40001"


@pytest.mark.parametrize("training,message", [
    ({"launcher": "deepspeed", "num_nodes": 2}, "needs a hostfile"),
    ({"launcher": "torchrun", "num_nodes": 2}, "needs master_addr"),
    ({"launcher": "accelerate", "num_nodes": 2}, "runs on one node"),
])
def test_a_multi_node_config_that_cannot_launch_is_refused(training, message):
    from lion_core.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _cfg(num_gpus=2, **training)


def test_torchrun_and_accelerate_commands():
    cmd, _ = build_command(_cfg(launcher="torchrun", num_gpus=2), [], 1234)
    assert cmd[0].endswith("torchrun") and "--nproc_per_node" in cmd and cmd[cmd.index("-m") + 1] == "lion_core.student.train"
    cmd, _ = build_command(_cfg(launcher="accelerate", num_gpus=4), [], 1234)
    assert cmd[1] == "launch" and cmd[cmd.index("--num_processes") + 1] == "4"


def test_plain_python_gets_a_single_process_group_env():
    cmd, env = build_command(_cfg(launcher="python"), [], 4321)
    assert cmd[:3] == [sys.executable, "-m", "lion_core.student.train"]
    assert env == {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "4321"}


def test_timeout_stops_the_whole_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo started; wait"
    t0 = time.monotonic()
    with pytest.raises(TrainingError, match="timed out after 2s") as exc:
        run_subprocess(["bash", "-c", script], dict(os.environ), tmp_path / "train.log", timeout_s=2)
    assert time.monotonic() - t0 < 30
    assert "started" in str(exc.value)  # the log's tail comes with the error
    child = int(pidfile.read_text())
    assert wait_until_gone(child)
    assert "started" in (tmp_path / "train.log").read_text()


def test_failure_reports_the_exit_code_and_log_tail(tmp_path):
    with pytest.raises(TrainingError, match=r"exit code 3\); last log lines:\nboom"):
        run_subprocess(["bash", "-c", "echo boom; exit 3"], dict(os.environ), tmp_path / "train.log", timeout_s=30)


def test_cancellation_stops_the_whole_group(tmp_path, monkeypatch):
    """A cancelled caller (flow cancellation, Ctrl-C) takes every rank down with it."""
    import subprocess

    pidfile = tmp_path / "child.pid"
    real_wait = subprocess.Popen.wait

    class Cancelled(BaseException):
        pass

    def cancelled_wait(self, timeout=None):
        if timeout is not None and timeout > 100:  # the launcher's long wait: cancel it once the child is up
            while not pidfile.exists() or not pidfile.read_text().strip():
                time.sleep(0.05)
            raise Cancelled()
        return real_wait(self, timeout)

    monkeypatch.setattr(subprocess.Popen, "wait", cancelled_wait)
    with pytest.raises(Cancelled):
        run_subprocess(["bash", "-c", f"sleep 300 & echo $! > {pidfile}; wait"], dict(os.environ),
                       tmp_path / "train.log", timeout_s=3600)
    child = int(pidfile.read_text())
    assert wait_until_gone(child)


def test_the_group_dies_with_a_caller_killed_outright(tmp_path):
    """A worker cancelling a flow run kills its process; kill -9 leaves no handler to run, yet no
    rank of the fine-tune may outlive it."""
    import signal
    import subprocess

    pidfile = tmp_path / "rank.pid"
    caller = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from lion_core.student.launch import run_subprocess\n"
        f"run_subprocess(['bash', '-c', 'sleep 300 & echo $! > {pidfile}; wait'], dict(os.environ),\n"
        f"               Path({str(tmp_path / 'train.log')!r}), timeout_s=3600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", caller])
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    rank = int(pidfile.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert wait_until_gone(rank)


def test_a_crash_after_the_checkpoint_is_complete_keeps_the_checkpoint(tmp_path, monkeypatch, caplog):
    from lion_core.store import PoolRef
    from lion_core.student import launch
    from lion_core.student.train import COMPLETE, FINAL

    final = tmp_path / "out" / FINAL
    script = (f"import os, pathlib; p = pathlib.Path({str(final)!r}); p.mkdir(parents=True); "
              f"(p / {COMPLETE!r}).write_text('ok'); os.abort()")  # as a native thread pool does at exit
    monkeypatch.setattr(launch, "build_command", lambda *a: ([sys.executable, "-c", script], {}))
    answers = PoolRef(uri=str(tmp_path / "a.parquet"), sha256="0" * 64, rows=1, schema_version="answers/1")
    quick = TrainOptions(timeout_s=60)
    assert launch.train_student(_cfg(launcher="python", num_gpus=1), answers, "base", tmp_path / "out", options=quick) == final
    assert "ended abnormally after writing a complete checkpoint" in caplog.text

    # without the marker it is a failure
    monkeypatch.setattr(launch, "build_command", lambda *a: ([sys.executable, "-c", "import os; os.abort()"], {}))
    with pytest.raises(TrainingError, match="training failed"):
        launch.train_student(_cfg(launcher="python", num_gpus=1), answers, "base", tmp_path / "other", options=quick)


def test_a_fine_tune_resumes_from_its_last_complete_trainer_checkpoint_only(tmp_path):
    from lion_core.student.train import TRAINER_STATE, last_complete_checkpoint

    trainer = tmp_path / "trainer"
    assert last_complete_checkpoint(trainer) is None  # nothing saved yet: start from the beginning
    for step, complete in ((2, True), (10, True), (12, False)):  # 12: the save was cut short (a full disk)
        ck = trainer / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "model.safetensors").write_bytes(b"w")
        if complete:
            (ck / TRAINER_STATE).write_text("{}")
    assert last_complete_checkpoint(trainer) == str(trainer / "checkpoint-10")  # by step, not by name order
    (trainer / "checkpoint-10" / TRAINER_STATE).unlink()
    assert last_complete_checkpoint(trainer) == str(trainer / "checkpoint-2")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_fine_tunes_steps_show_as_a_bar_on_a_terminal_and_stay_in_its_log(tmp_path, monkeypatch):
    """The training script prints `lion-step N/M` after each optimizer step; the launcher draws them as a bar
    with rate and ETA (from a resumed step on), and keeps them in train.log for `lion status`."""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    script = "import time\nprint('warming up')\nfor i in range(3, 7):\n    print(f'lion-step {i}/6', flush=True)\n"
    run_subprocess([sys.executable, "-c", script], dict(os.environ), tmp_path / "train.log", timeout_s=60)
    drawn = terminal.getvalue()
    assert "train" in drawn and "6/6" in drawn and "step/s" in drawn
    assert "lion-step 6/6" in (tmp_path / "train.log").read_text() and "warming up" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("line", ["lion-step 3/8\n", "lion-step 3/8", "  lion-step 3/8 "])
def test_step_lines_are_read_back(line):
    assert parse_step_line(line) == (3, 8)


@pytest.mark.parametrize("line", ["{'loss': '2.1'}", "lion-step", "lion-step 3/", "lion-step a/8", "lion-steps 3/8"])
def test_other_lines_are_not_steps(line):
    assert parse_step_line(line) is None


def test_only_this_fine_tunes_shared_memory_buffers_are_removed(tmp_path):
    uid = os.getuid()
    mine = [tmp_path / f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_23456_{rank}" for rank in (0, 1)]
    others = [tmp_path / f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_23457_0",  # another fine-tune's port
              tmp_path / f"deepspeed_allreduce_buffer_{uid + 1}_127.0.0.1_23456_0",  # another user's
              tmp_path / "psm_23456"]
    for path in mine + others:
        path.write_bytes(b"x")
    assert sorted(remove_shm_buffers(23456, tmp_path)) == sorted(mine)
    assert all(p.exists() for p in others) and not any(p.exists() for p in mine)
    assert remove_shm_buffers(23456, tmp_path) == []

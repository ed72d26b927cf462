"""`make gpu-check` (bench/gpu_check.py): its figures' arithmetic here; the figures themselves need a GPU."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402


@pytest.mark.parametrize("name,peak", [("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L40S", 362.0),
                                       ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", 165.0), ("Tesla T4", None)])
def test_peak_of_a_device_name_takes_the_longest_match(name, peak):
    assert gpu_check.peak_tflops(name) == peak


def test_mfu_is_six_flops_per_parameter_and_token_over_the_peak():
    # 7B parameters at 3,000 tokens/s on an A100: 6 * 7e9 * 3e3 = 1.26e14 of 3.12e14
    assert gpu_check.mfu(7_000_000_000, 3000.0, 312.0) == pytest.approx(0.4038, abs=1e-4)
    assert gpu_check.mfu(1, 1.0, None) is None


def test_training_rows_fill_the_requested_count_from_the_demo_seeds_without_the_shared_data(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check, "ALPACA", tmp_path / "missing.parquet")
    rows = gpu_check.training_rows(100)
    assert len(rows) == 100 and len({r["id"] for r in rows}) == 100
    assert all(r["answer"] and r["status"] == "ok" for r in rows)


def test_without_a_gpu_it_fails_clearly():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: make gpu-check runs the real thing")
    r = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py")], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 2
    assert "no CUDA GPU visible" in r.stderr and r.stdout == ""

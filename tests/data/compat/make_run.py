"""Makes `run-before-31.tar.gz`: a run stopped by an API outage in iteration 0's referee stage, with its
response store and its Prefect task results, as the code before the issue-31 layout change wrote them
(commit 9d8ee00). tests/flows/test_compat.py resumes it with the current code.

The student is a 2-layer Llama with a 384-token BPE vocabulary, so the checkpoints stay small. The run's
identity holds the student's absolute path, so the archive is made, and restored, at FIXTURE.

    python tests/data/compat/make_run.py    # from the repository root, at the commit named above
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

FIXTURE = Path("/tmp/lion-compat-31")
PORT = 18931
"""The API's port: stored answers are keyed by the base URL, so the test serves on the same one."""
FAIL_AFTER = 14
"""Answered requests before the outage: the 6 teacher answers of iteration 0, then 8 referee verdicts."""


def tiny_student(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = (REPO / "data" / "demo_seeds.jsonl").read_text().splitlines()
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>", "<unk>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<unk>", pad_token="<|endoftext|>")
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    fast.save_pretrained(out)


def main() -> None:
    from tests.fault_server import FaultPlan, FaultServer
    from tests.flows.conftest import write_flow_config

    shutil.rmtree(FIXTURE, ignore_errors=True)
    FIXTURE.mkdir(parents=True)
    tiny_student(FIXTURE / "student")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(FIXTURE / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with FaultServer(FaultPlan(fail_after=FAIL_AFTER), port=PORT) as api:
        config = write_flow_config(FIXTURE, api.url, FIXTURE / "student", iterations=2)
        data = yaml.safe_load(config.read_text())
        data["orchestration"]["result_storage"] = str(FIXTURE / "results")
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        r = subprocess.run([str(Path(sys.executable).parent / "lion"), "run", "--config", str(config), "--run-id",
                            "compat"], env=env, capture_output=True, text=True, timeout=900)
        answered = sorted(api.stats.answered)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode != 0, "the run was meant to stop at the outage"
    (FIXTURE / "answered.json").write_text(json.dumps({"commit": "9d8ee00", "fingerprints": answered}, indent=1))
    shutil.rmtree(FIXTURE / "prefect-home")
    with tarfile.open(Path(__file__).with_name("run-before-31.tar.gz"), "w:gz") as tar:
        tar.add(FIXTURE, arcname=FIXTURE.name)


if __name__ == "__main__":
    main()

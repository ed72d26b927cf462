"""The student's answers to a pool: batched generation, each answer persisted as soon as its batch ends.

Prompts are sorted by length and generated in batches (left padding, KV cache), instead of one prompt
at a time as in the official code. Answers go to the same response store as the API answers, keyed by
the checkpoint's weights hash, the prompt and the sampling settings, so a crashed or repeated run
generates only what is missing. With vLLM installed and a GPU present, `backend="auto"` uses it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lion_core.config import StudentGeneration
from lion_core.lifeline import follow_parent
from lion_core.llm.progress import Progress
from lion_core.llm.requests import ChatRequest, ChatResult
from lion_core.llm.responses import ResponseStore, StoredCall
from lion_core.prompts import checkpoint_prompt
from lion_core.student.lora import ADAPTER_CONFIG, adapter_base, is_adapter, load_student

log = logging.getLogger("lion.student")


def weights_sha256(model_path: str | Path) -> str:
    """Identity of a checkpoint: the hash of its weight files, so a retrained folder never reuses old answers."""
    h = hashlib.sha256()
    files = sorted(Path(model_path).glob("*.safetensors")) or sorted(Path(model_path).glob("*.bin"))
    if is_adapter(model_path):  # the same adapter weights on another base (or rank layout) answer differently
        files.append(Path(model_path) / ADAPTER_CONFIG)
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _request(prompt: str, gen: StudentGeneration, tag: str) -> ChatRequest:
    temperature = gen.temperature if gen.do_sample else 0.0
    return ChatRequest.of([("prompt", prompt)], temperature=temperature, top_p=gen.top_p,
                          max_tokens=gen.max_new_tokens, tag=tag)


def student_answers(
    model_path: str | Path, rows: Sequence[dict[str, Any]], gen: StudentGeneration, store: ResponseStore, *,
    prompt_format: str = "alpaca", stage: str = "discrimination", seed: int = 0, backend: str = "auto",
    dtype: str = "auto",
) -> list[dict[str, Any]]:
    """One answer per row (answers table schema), in row order; the model runs in `dtype` (`auto`: as saved)."""
    from transformers import AutoTokenizer

    model_path = str(model_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    endpoint = f"student:{weights_sha256(model_path)}"
    prompts = [checkpoint_prompt(tokenizer, r["instruction"], r["input"], prompt_format) for r in rows]
    requests = [_request(p, gen, r["id"]) for p, r in zip(prompts, rows)]
    # the weights' dtype changes the answers: a set one is part of the key (`auto` keeps the old keys)
    keys = [q.key(endpoint, prompt_format if dtype == "auto" else f"{prompt_format}:{dtype}") for q in requests]
    done = store.successes(keys)
    todo = [i for i, k in enumerate(keys) if k not in done]
    call = StoredCall(role="student", stage=stage, endpoint=endpoint, model=prompt_format)
    if todo:
        use_vllm = backend == "vllm" or (backend == "auto" and vllm_available())
        if use_vllm and is_adapter(model_path) and _adapter_settings(model_path).get("modules_to_save"):
            log.info("student: vLLM does not serve adapters with modules_to_save; answering with transformers")
            use_vllm = False
        run = generate_vllm if use_vllm else generate_hf
        progress = Progress(len(todo), f"student/{stage}", unit="answer", quiet_below_s=15.0)
        for i, text, finish, n_prompt, n_new in run(model_path, tokenizer, [prompts[i] for i in todo], todo, gen, seed,
                                                     dtype):
            progress.update(bool(text.strip()))
            if text.strip():
                res = ChatResult(key=keys[i], ok=True, text=text, finish_reason=finish, prompt_tokens=n_prompt,
                                 completion_tokens=n_new, attempts=1)
                store.put_success(call, requests[i], res, latency_s=0.0)
                done[keys[i]] = res
            else:  # an empty answer is a failure with a reason, never a result
                store.put_failure(call, requests[i], ChatResult(key=keys[i], ok=False, attempts=1,
                                                                 error_class="EmptyGeneration",
                                                                 error_message=f"no text (finish {finish})"))
        progress.close()
    out = []
    for r, k in zip(rows, keys):
        res = done.get(k)
        # A student that says nothing has still answered: "empty" rows go to discrimination as the
        # hardest items there are (the store keeps them as failures, so a rerun generates them again).
        out.append({"id": r["id"], "instruction": r["instruction"], "input": r["input"],
                    "answer": res.text if res else "", "finish_reason": res.finish_reason if res else None,
                    "status": "ok" if res else "empty", "error": None if res else "EmptyGeneration"})
    return out


def student_answers_in_child(model_path: str | Path, rows: Sequence[dict[str, Any]], gen: StudentGeneration,
                             store: dict[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """`student_answers` in a child process (spawned, so no thread or lock of ours is copied): the model,
    torch's allocations and any GPU context go away when it exits, instead of staying in the flow's
    process while the student trains beside it (measured on the CPU demo: about 400 MB). The child
    writes each answer to the response store as its batch ends, as the in-process path does; `store` is
    how to open it there (`ResponseStore.reopen`)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=follow_parent, initargs=(os.getpid(),)) as pool:
        return pool.submit(_answers_in_child, str(model_path), list(rows), gen, store, kwargs).result()


def _answers_in_child(model_path: str, rows: list[dict[str, Any]], gen: StudentGeneration, opener: dict[str, Any],
                      kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)-7s | %(name)s - %(message)s")
    with ResponseStore(**opener) as store:
        return student_answers(model_path, rows, gen, store, **kwargs)


VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The adapter ranks vLLM can be set up for (`max_lora_rank`); it serves any rank up to the one set."""


def _adapter_settings(model_path: str | Path) -> dict[str, Any]:
    return json.loads((Path(model_path) / ADAPTER_CONFIG).read_text())


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def generate_hf(model_path: str, tokenizer: Any, prompts: list[str], index: list[int], gen: StudentGeneration,
                 seed: int, dtype: str = "auto"):
    """Yields (row index, text, finish_reason, prompt tokens, new tokens) batch by batch, longest prompts first."""
    import torch

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # a LoRA checkpoint answers as its base with the adapter applied in memory, never merged to disk
    model = load_student(model_path, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    model = model.to(device).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    lengths = [len(tokenizer(p)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda j: -lengths[j])
    started, made = time.monotonic(), 0
    for b in range(0, len(order), gen.batch_size):
        batch = order[b:b + gen.batch_size]
        enc = tokenizer([prompts[j] for j in batch], return_tensors="pt", padding=True).to(device)
        kwargs: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "pad_token_id": tokenizer.pad_token_id,
                                  "do_sample": False, "use_cache": True}
        if gen.do_sample and gen.temperature > 0:  # temperature 0 is greedy, as the request key and vLLM read it
            kwargs["logits_processor"] = sampling_processors(model.generation_config, gen)
        with torch.no_grad():
            output = model.generate(**enc, **kwargs)
        new = output[:, enc["input_ids"].shape[1]:]
        for row, j in enumerate(batch):
            ids = new[row].tolist()
            n = next((t + 1 for t, tok in enumerate(ids) if tok == tokenizer.eos_token_id), len(ids))
            finish = "stop" if n < len(ids) or (ids and ids[n - 1] == tokenizer.eos_token_id) else "length"
            made += n
            yield index[j], tokenizer.decode(ids[:n], skip_special_tokens=True).strip(), finish, lengths[j], n
        log.info("student: %d/%d answers, %.1f tokens/s", min(b + gen.batch_size, len(order)), len(order),
                 made / max(time.monotonic() - started, 1e-9))
    del model
    release_memory()


def sampling_processors(defaults: Any, gen: StudentGeneration) -> Any:
    """Sampling as greedy decoding over one chosen token: transformers' temperature, top-k (the model's
    generation config; unset there, transformers' default of 50) and top-p, then a draw by the Gumbel-max trick (the argmax of the
    log-probabilities plus Gumbel noise is a draw from their softmax), on the top-k scores only. The same
    distribution as transformers' sampling, without its cost on a CPU: `torch.multinomial` over SmolLM2's
    49K-token vocabulary, like any draw of 49K random numbers, took 130 ms per step for 128 prompts
    (measured), two thirds of the student's answering time; 50 numbers per prompt take microseconds."""
    from transformers import LogitsProcessorList

    top_k = getattr(defaults, "top_k", None)
    return LogitsProcessorList([_TopKDraw(50 if top_k is None else top_k, gen.temperature, gen.top_p)])


class _TopKDraw:
    """Leaves one finite score per row: the token drawn from softmax(scores / temperature) restricted to
    the top-k, then to the top-p of those (transformers' order: temperature, top-k, top-p)."""

    def __init__(self, top_k: int, temperature: float, top_p: float):
        self.top_k, self.temperature, self.top_p = top_k, temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        k = min(self.top_k or scores.size(-1), scores.size(-1))
        values, index = scores.topk(k, dim=-1)  # sorted, largest first
        values = values / self.temperature if self.temperature > 0 else values
        dropped = ~torch.isfinite(values)  # masked by an earlier processor
        if self.top_p < 1.0:
            probs = values.softmax(-1)
            before = probs.cumsum(-1) - probs  # mass of the better tokens
            dropped |= before >= self.top_p  # the first token always stays
        noisy = values - torch.empty_like(values).exponential_().log()  # -log(Exp(1)) is Gumbel(0, 1)
        noisy = noisy.masked_fill(dropped, -float("inf"))  # after the noise: a zero draw cannot revive a token
        choice = index.gather(-1, noisy.argmax(-1, keepdim=True))
        return torch.full_like(scores, -float("inf")).scatter_(-1, choice, 0.0)


def release_memory() -> None:
    """Hand freed memory back to the OS. This runs inside the flow's process, which lives on while the
    student trains in another: glibc keeps freed heap pages otherwise (about 400 MB after a 113M model)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def generate_vllm(model_path: str, tokenizer: Any, prompts: list[str], index: list[int], gen: StudentGeneration,
                   seed: int, dtype: str = "auto"):  # pragma: no cover - needs a GPU and vLLM
    from vllm import LLM, SamplingParams

    adapter = None
    if is_adapter(model_path):  # vLLM applies the adapter itself, on the base model it names
        from vllm.lora.request import LoRARequest

        rank = _adapter_settings(model_path)["r"]
        llm = LLM(model=adapter_base(model_path), tokenizer=model_path, seed=seed, dtype=dtype, enable_lora=True,
                  max_lora_rank=min(r for r in VLLM_LORA_RANKS if r >= rank))
        adapter = LoRARequest("student", 1, model_path)
    else:
        llm = LLM(model=model_path, seed=seed, dtype=dtype)
    params = SamplingParams(temperature=gen.temperature if gen.do_sample else 0.0, top_p=gen.top_p,
                            max_tokens=gen.max_new_tokens)
    for b in range(0, len(prompts), 256):  # chunks, so answers are persisted as they come
        for j, out in enumerate(llm.generate(prompts[b:b + 256], params, lora_request=adapter)):
            o = out.outputs[0]
            yield index[b + j], o.text.strip(), o.finish_reason, len(out.prompt_token_ids), len(o.token_ids)

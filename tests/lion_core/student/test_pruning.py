"""Depth pruning: which layers are kept, and a pruned model that loads, runs and is cached."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from lion_core.student.pruning import PRUNING_INFO, PruningError, kept_layers, pruned_model_dir


def test_kept_layers_are_evenly_spaced_with_the_first_and_last():
    assert kept_layers(30, 24) == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19, 20, 21, 23, 24, 25, 26, 28, 29]
    assert kept_layers(4, 2) == [0, 3]
    assert kept_layers(5, 5) == [0, 1, 2, 3, 4]
    assert kept_layers(6, 1) == [5]
    for n, k in [(30, 7), (12, 11), (2, 2)]:
        idx = kept_layers(n, k)
        assert len(idx) == k and idx[0] == (0 if k > 1 else n - 1) and idx[-1] == n - 1 and idx == sorted(set(idx))
    with pytest.raises(PruningError, match="keep_layers: 31 is not between 1 and the model's 30 layers"):
        kept_layers(30, 31)


@pytest.fixture
def four_layers(tmp_path, model_dir):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    out = tmp_path / "four"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_pruned_model_keeps_those_layers_runs_with_a_kv_cache_and_is_made_once(tmp_path, four_layers):
    cache = tmp_path / "cache"
    out = pruned_model_dir(four_layers, 2, cache)
    base = AutoModelForCausalLM.from_pretrained(four_layers)
    pruned = AutoModelForCausalLM.from_pretrained(out)
    assert pruned.config.num_hidden_layers == 2 and len(pruned.model.layers) == 2
    for new, old in enumerate([0, 3]):
        assert pruned.model.layers[new].self_attn.layer_idx == new
        assert torch.equal(pruned.model.layers[new].mlp.up_proj.weight, base.model.layers[old].mlp.up_proj.weight)
    assert torch.equal(pruned.model.embed_tokens.weight, base.model.embed_tokens.weight)
    ids = torch.tensor([[1, 2, 3]])
    generated = pruned.generate(ids, max_new_tokens=4, do_sample=False, use_cache=True)
    assert generated.shape == (1, 7)
    assert '"kept_layers": [\n    0,\n    3\n  ]' in (out / PRUNING_INFO).read_text()
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert pruned_model_dir(four_layers, 2, cache) == out  # cached: not made again
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert pruned_model_dir(four_layers, 3, cache) != out


def test_a_folder_without_a_config_is_refused(tmp_path):
    with pytest.raises(PruningError, match="needs a local model folder with a config.json"):
        pruned_model_dir(tmp_path, 2, tmp_path / "cache")

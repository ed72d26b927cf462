import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from lion_core.llm.embedded import EmbeddedServer, embedded_model_dir


@pytest.fixture(scope="session")
def model_dir():
    return embedded_model_dir()


@pytest.fixture(scope="session")
def server(model_dir):
    """One embedded server for every integration test that only sends requests."""
    with EmbeddedServer(model_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, model_dir):
    """SmolLM2's tokenizer and architecture, shrunk to two thin layers with random weights."""
    out = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out

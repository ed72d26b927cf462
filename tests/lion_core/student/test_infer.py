"""The student's sampler: the same distribution as transformers' temperature, top-k and top-p sampling."""

import pytest
import torch

from lion_core.config import StudentGeneration
from lion_core.student.infer import sampling_processors


def _transformers_distribution(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """What transformers samples from: its own warpers, in its order, then softmax."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    out = TemperatureLogitsWarper(temperature)(None, scores.clone())
    out = TopKLogitsWarper(top_k)(None, out)
    if top_p < 1.0:
        out = TopPLogitsWarper(top_p)(None, out)
    return out.softmax(-1)[0]


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 50, 1.0), (1.0, 8, 0.9), (0.3, 200, 0.5)])
def test_draws_follow_transformers_sampling_distribution(temperature, top_k, top_p):
    torch.manual_seed(0)
    vocab = 300
    scores = torch.randn(1, vocab) * 2
    expected = _transformers_distribution(scores, temperature, top_k, top_p)
    defaults = type("GenerationConfig", (), {"top_k": top_k})()
    draw = sampling_processors(defaults, StudentGeneration(temperature=temperature, top_p=top_p))
    n = 40_000
    out = draw(None, scores.expand(n, vocab).contiguous())
    assert bool((torch.isfinite(out).sum(-1) == 1).all())  # exactly one token left per row
    chosen = out.argmax(-1)
    freq = torch.bincount(chosen, minlength=vocab).double() / n
    assert float((freq > 0).logical_and(expected == 0).sum()) == 0  # never a token transformers would not sample
    total_variation = 0.5 * float((freq - expected.double()).abs().sum())
    assert total_variation < 0.02, total_variation


def test_unset_top_k_is_transformers_default_of_50():
    torch.manual_seed(1)
    scores = torch.randn(1, 1000) * 0.5
    draw = sampling_processors(type("GenerationConfig", (), {"top_k": None})(), StudentGeneration(temperature=2.0))
    chosen = draw(None, scores.expand(20_000, 1000).contiguous()).argmax(-1)
    top50 = set(scores[0].topk(50).indices.tolist())
    assert set(chosen.tolist()) <= top50
    assert len(set(chosen.tolist())) > 40  # a high temperature spreads the draws over the top 50

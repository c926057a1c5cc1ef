"""Tests of validation.reliability.vqa: prefixes of one draw, estimator scores, the model sampler.

Hand-worked: answers ["yes", "Yes.", "no", "No"] with equal likelihoods -> two clusters of two:
semantic = discrete = ln 2, within-cluster = 1/2 ln 2 + 1/2 ln 2 = ln 2 (and the chain rule
ln 4 = ln 2 + ln 2). The first two answers alone: one cluster -> semantic = discrete = 0,
within-cluster = ln 2.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.generation import SampledAnswer
from model.tokenizer import train_tokenizer
from model.vlm import XMedProcessor, build_tiny_vlm
from validation.reliability.vqa import (
    AnswerSampler,
    ModelSampler,
    answer_reliability,
    equivalence_for,
    item_prompt,
)
from validation.uncertainty import ExactMatch, YesNoEquivalence, semantic_clusters


def _answers(texts, logp=-0.5):
    return [SampledAnswer(t, [3, 4], [logp, logp], True) for t in texts]


class ListSampler:
    def __init__(self, texts):
        self.texts, self.seeds = texts, []

    def sample(self, images, prompt, *, num_samples, max_new_tokens, seed):
        self.seeds.append(seed)
        return _answers(self.texts[:num_samples])

    def greedy(self, images, prompt, *, max_new_tokens):
        return _answers(self.texts[:1])[0]


def test_prefix_clusters_equal_clusters_of_the_prefix():
    """The reason M = 5, 10, 15 can be read from one draw of 20."""
    rng = random.Random(0)
    words = ["yes", "no", "Yes.", "left lung", "the left lung", "liver", "No!"]
    for _ in range(50):
        answers = [rng.choice(words) for _ in range(20)]
        full = semantic_clusters(answers, ExactMatch())
        for m in (1, 5, 10, 15):
            assert semantic_clusters(answers[:m], ExactMatch()) == full[:m]


def test_scores_hand_worked_and_prefixes():
    rel = answer_reliability(
        ListSampler(["yes", "Yes.", "no", "No"]), images=[], prompt="Is there a nodule?", num_samples=4,
        max_new_tokens=4, equivalence=YesNoEquivalence(), seed=3,
    )  # fmt: skip
    assert rel.cluster_ids == (0, 0, 1, 1) and rel.n_clusters() == 2 and rel.n_clusters(2) == 1
    full = rel.scores()
    assert full["semantic_entropy"] == pytest.approx(math.log(2))
    assert full["discrete_semantic_entropy"] == pytest.approx(math.log(2))
    assert full["within_cluster_entropy"] == pytest.approx(math.log(2))
    two = rel.scores(2)
    assert two["semantic_entropy"] == 0.0 and two["discrete_semantic_entropy"] == 0.0
    assert two["within_cluster_entropy"] == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="prefix of 5 samples"):
        rel.scores(5)
    with pytest.raises(ValueError, match="prefix of 0"):
        rel.scores(0)


def test_answer_reliability_prepares_embeddings_once_and_checks_the_count():
    class Recording:
        def __init__(self):
            self.prepared = []

        def prepare(self, texts):
            self.prepared.append(list(texts))

        def __call__(self, a, b):
            return a == b

    eq = Recording()
    rel = answer_reliability(ListSampler(["a", "b", "a"]), images=[], prompt="q", num_samples=3,
                             max_new_tokens=2, equivalence=eq)  # fmt: skip
    assert eq.prepared == [["a", "b", "a"]] and rel.cluster_ids == (0, 1, 0)
    with pytest.raises(ValueError, match="returned 2 answers, 3 were asked"):
        answer_reliability(ListSampler(["a", "b"]), images=[], prompt="q", num_samples=3, max_new_tokens=2,
                           equivalence=ExactMatch())  # fmt: skip


def test_equivalence_and_prompt_of_an_item():
    open_eq = ExactMatch()
    assert isinstance(equivalence_for("No", open_eq), YesNoEquivalence)
    assert isinstance(equivalence_for("yes.", open_eq), YesNoEquivalence)
    assert equivalence_for("left lung", open_eq) is open_eq
    row = {"id": "r1", "images": ["raw/a.png"], "conversations": [
        {"from": "human", "value": "<image>\nIs it?"}, {"from": "gpt", "value": "Yes"}]}  # fmt: skip
    assert item_prompt(row, "data/demo") == ([Path("data/demo/raw/a.png")], "<image>\nIs it?")
    two_turns = {**row, "conversations": row["conversations"] * 2}
    with pytest.raises(ValueError, match="instruction r1: field 'conversations'"):
        item_prompt(two_turns, "data/demo")


# ---------------------------------------------------------------------------------------------
# the model sampler on a tiny untrained VLM
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sampler():
    tok = train_tokenizer(["<image>\nIs there a nodule? Yes No yes no left lung"] * 10, vocab_size=300)
    model = build_tiny_vlm(
        vocab_size=len(tok), image_size=32, grid=4, vision_hidden=16, vision_layers=1, text_hidden=32,
        text_layers=1, heads=2, intermediate=64, max_positions=128,
        image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, seed=0,
    ).eval()  # fmt: skip
    return ModelSampler(model, XMedProcessor(tok, 32, 16))


def test_model_sampler_draws_m_answers_reproducibly(tiny_sampler, tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8), "L").save(img)
    assert isinstance(tiny_sampler, AnswerSampler)
    kw = {"num_samples": 6, "max_new_tokens": 5, "seed": 11}
    first = tiny_sampler.sample([img], "<image>\nIs there a nodule?", **kw)
    again = tiny_sampler.sample([img], "<image>\nIs there a nodule?", **kw)
    assert len(first) == 6 and [a.token_ids for a in first] == [a.token_ids for a in again]
    assert all(len(a.token_logprobs) == len(a.token_ids) and max(a.token_logprobs) <= 0 for a in first)
    greedy = tiny_sampler.greedy([img], "<image>\nIs there a nodule?", max_new_tokens=5)
    assert 1 <= len(greedy.token_ids) <= 5
    rel = answer_reliability(tiny_sampler, images=[img], prompt="<image>\nIs there a nodule?",
                             equivalence=ExactMatch(), **kw)  # fmt: skip
    scores = rel.scores()
    assert 0.0 <= scores["semantic_entropy"] <= math.log(rel.n_clusters()) + 1e-9
    assert all(math.isfinite(v) for v in scores.values())

"""Tests of model.generation: KV-cache consistency, batching, sampled log-probs, yes/no probability."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from model.collators import PreferenceCollator, SFTCollator
from model.generation import (
    batched_greedy,
    batched_yes_no_probability,
    greedy_answer,
    sample_answers,
    sequence_logprobs,
    yes_no_probability,
)
from model.tokenizer import train_tokenizer
from model.vlm import XMedProcessor, build_tiny_vlm

CORPUS = [
    "<image>\nIs there a lesion? Answer yes or no. Yes No yes no",
    "Image-1: <image>\nImage-2: <image>\nWill the patient survive beyond 24 months?",
    "<ref>liver</ref><box>[[100, 200, 300, 400]]</box> What modality is this? CT MRI",
]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS * 10, vocab_size=300)


@pytest.fixture(scope="module")
def proc(tok):
    return XMedProcessor(tok, 32, 16)


def _model(tok):
    return build_tiny_vlm(
        vocab_size=len(tok),
        image_size=32,
        grid=4,
        vision_hidden=32,
        vision_layers=1,
        text_hidden=32,
        text_layers=2,
        heads=2,
        intermediate=64,
        max_positions=256,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        seed=0,
    ).eval()


@pytest.fixture(scope="module")
def model(tok):
    return _model(tok)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB") for _ in range(2)]


@pytest.fixture(scope="module")
def trained(tok, proc, images):
    """A tiny model overfitted to answer 'Yes' (so it learns to stop at <|im_end|>)."""
    torch.manual_seed(0)
    m = _model(tok).train()
    ex = proc.encode_generation("Is there a lesion?", images[:1])
    answer = torch.tensor(tok("Yes<|im_end|>", add_special_tokens=False)["input_ids"])
    ex = {
        **ex,
        "input_ids": torch.cat([ex["input_ids"], answer]),
        "labels": torch.cat([torch.full_like(ex["input_ids"], -100), answer]),
    }
    batch = SFTCollator(tok.pad_token_id)([ex])
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(40):
        m(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    return m.eval()


def _gen_inputs(proc, prompt, imgs):
    return SFTCollator(proc.tokenizer.pad_token_id)([proc.encode_generation(prompt, imgs)])


@pytest.mark.parametrize("n_images", [1, 2])
def test_kv_cache_greedy_equals_no_cache(model, proc, images, n_images):
    b = _gen_inputs(proc, "Describe the images.", images[:n_images])
    kw = {
        "max_new_tokens": 12,
        "do_sample": False,
        "suppress_tokens": [proc.image_token_id, 0],
        "eos_token_id": proc.end_token_id,
        "pad_token_id": 0,
    }
    inputs = {k: b[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_counts")}
    with torch.no_grad():
        cached = model.generate(**inputs, use_cache=True, **kw)
        full = model.generate(**inputs, use_cache=False, **kw)
    assert torch.equal(cached, full)
    ans = greedy_answer(
        model, proc, images=images[:n_images], prompt="Describe the images.", max_new_tokens=12
    )
    assert ans.token_ids == cached[0, b["input_ids"].shape[1] :].tolist()[: len(ans.token_ids)]


def test_batched_greedy_matches_one_by_one(model, proc, images):
    prompts = [
        ("What modality is this?", images[:1]),
        ("Will the patient survive beyond 24 months?", images),
        ("Is there a lesion?", images[1:]),
    ]
    examples = [proc.encode_generation(p, i) for p, i in prompts]
    batched = batched_greedy(model, proc, examples, max_new_tokens=8, batch_size=3)
    single = [greedy_answer(model, proc, images=i, prompt=p, max_new_tokens=8) for p, i in prompts]
    assert [a.token_ids for a in batched] == [a.token_ids for a in single]
    for a, b in zip(batched, single, strict=True):
        assert np.allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)


def _teacher_forced_logprobs(model, proc, prompt, imgs, token_ids):
    ex = proc.encode_generation(prompt, imgs)
    ids = torch.cat([ex["input_ids"], torch.tensor(token_ids)])[None]
    with torch.no_grad():
        logits = model(
            input_ids=ids, pixel_values=ex["pixel_values"], image_counts=torch.tensor([len(imgs)])
        ).logits
    logp = logits[0, :-1].log_softmax(-1)
    start = len(ex["input_ids"]) - 1
    return [logp[start + t, tok].item() for t, tok in enumerate(token_ids)]


def test_sampled_logprobs_equal_teacher_forced_forward(model, proc, images):
    # two images per prompt also checks that num_return_sequences repeats each row's OWN images
    samples = sample_answers(
        model,
        proc,
        images=images,
        prompt="Will the patient survive?",
        num_samples=4,
        temperature=1.3,
        top_p=0.9,
        max_new_tokens=10,
        seed=3,
    )
    assert len(samples) == 4 and len({tuple(s.token_ids) for s in samples}) > 1
    for s in samples:
        expected = _teacher_forced_logprobs(model, proc, "Will the patient survive?", images, s.token_ids)
        assert np.allclose(s.token_logprobs, expected, atol=1e-4)


def test_sampling_is_reproducible_with_a_seed(model, proc, images):
    kw = {"images": images[:1], "prompt": "Is there a lesion?", "num_samples": 3, "max_new_tokens": 6}
    a = sample_answers(model, proc, seed=7, **kw)
    b = sample_answers(model, proc, seed=7, **kw)
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    with pytest.raises(ValueError, match="temperature"):
        sample_answers(model, proc, temperature=0.0, **kw)


def test_trained_model_stops_at_im_end(trained, proc, images):
    ans = greedy_answer(trained, proc, images=images[:1], prompt="Is there a lesion?", max_new_tokens=10)
    assert ans.text == "Yes" and ans.finished
    assert ans.token_ids[-1] == proc.end_token_id and len(ans.token_logprobs) == len(ans.token_ids)
    assert ans.logprob == pytest.approx(sum(ans.token_logprobs))


def test_yes_no_probability(trained, proc, images, tok):
    p = yes_no_probability(trained, proc, images[:1], "Is there a lesion?")
    assert p > 0.9
    # reference: softmax of the last prompt position, restricted to the yes/no first tokens
    ex = proc.encode_generation("Is there a lesion?", images[:1])
    with torch.no_grad():
        probs = (
            trained(input_ids=ex["input_ids"][None], pixel_values=ex["pixel_values"])
            .logits[0, -1]
            .softmax(-1)
        )
    yes = {tok(w, add_special_tokens=False)["input_ids"][0] for w in ("yes", "Yes")}
    no = {tok(w, add_special_tokens=False)["input_ids"][0] for w in ("no", "No")}
    p_yes, p_no = probs[list(yes)].sum(), probs[list(no)].sum()
    assert p == pytest.approx((p_yes / (p_yes + p_no)).item(), abs=1e-6)


def test_batched_yes_no_matches_single_with_left_padding(trained, proc, images):
    prompts = [("Is there a lesion?", images[:1]), ("Will the patient survive beyond 24 months?", images)]
    batched = batched_yes_no_probability(trained, proc, [proc.encode_generation(p, i) for p, i in prompts])
    single = [yes_no_probability(trained, proc, i, p) for p, i in prompts]
    assert np.allclose(batched, single, atol=1e-5)


def test_sequence_logprobs_equal_sampled_answer_logprobs(model, proc, images, tok):
    samples = sample_answers(
        model, proc, images=images[:1], prompt="Is there a lesion?", num_samples=2, max_new_tokens=5, seed=11
    )
    prompt = proc.encode_generation("Is there a lesion?", images[:1])
    rows = [
        {
            **prompt,
            "prompt_input_ids": prompt["input_ids"],
            "chosen_input_ids": torch.tensor(samples[0].token_ids),
            "rejected_input_ids": torch.tensor(samples[1].token_ids),
        }
    ]
    batch = PreferenceCollator(tok.pad_token_id)(rows)  # row 0 = sample 0, row 1 = sample 1, right-padded
    with torch.no_grad():
        logps = sequence_logprobs(model, batch)
    assert logps.shape == (2,)
    assert logps[0].item() == pytest.approx(samples[0].logprob, abs=1e-4)
    assert logps[1].item() == pytest.approx(samples[1].logprob, abs=1e-4)


def test_samples_continue_an_answer_prefix(model, proc, images, tok):
    prefix = "Step 5:"
    prefix_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    samples = sample_answers(
        model,
        proc,
        images=images[:1],
        prompt="Write the report.",
        num_samples=3,
        max_new_tokens=6,
        seed=5,
        answer_prefix=prefix,
    )
    for s in samples:  # the log-probs are those of the continuation, conditioned on the prefix
        expected = _teacher_forced_logprobs(
            model, proc, "Write the report.", images[:1], prefix_ids + s.token_ids
        )[len(prefix_ids) :]
        assert np.allclose(s.token_logprobs, expected, atol=1e-4)

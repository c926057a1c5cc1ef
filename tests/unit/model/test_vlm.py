"""Tests of the XMed VLM: config, vision tower, forward/loss, save/load, coordinates, freezing, processor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText

from model.collators import SFTCollator
from model.tokenizer import coordinate_token_ids, train_tokenizer
from model.vlm import (
    SequenceTooLongError,
    XMedProcessor,
    XMedVisionConfig,
    XMedVLMForConditionalGeneration,
    build_tiny_vlm,
    build_tiny_vlm_for_tokenizer,
    count_parameters,
    freeze,
    init_coordinate_embeddings,
    read_architecture,
    trainable_parameter_names,
)
from model.vlm.modeling import coordinate_features, sincos_2d

CONFIGS = Path(__file__).resolve().parents[3] / "model" / "configs" / "model"
CORPUS = [
    "<image>\nWhere is the right lung? Give its bounding box.",
    "<ref>right lung</ref><box>[[120, 340, 560, 780]]</box>",
    "Is there a lesion in the liver? Answer yes or no. Yes No",
    "What imaging modality was used to acquire this image? CT MRI X-ray",
    "Image-1: <image>\nImage-2: <image>\nWill the patient survive beyond 24 months?",
]
N_TOK = 16  # 32x32 images, 4x4 grid


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS * 10, vocab_size=300)


def tiny(tok, **overrides):
    kw = {
        "vocab_size": len(tok),
        "image_size": 32,
        "grid": 4,
        "vision_hidden": 32,
        "vision_layers": 1,
        "text_hidden": 32,
        "text_layers": 2,
        "heads": 2,
        "intermediate": 64,
        "max_positions": 256,
        "image_token_id": tok.convert_tokens_to_ids("<image>"),
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "seed": 0,
    }
    kw.update(overrides)
    return build_tiny_vlm(**kw).eval()


@pytest.fixture(scope="module")
def model(tok):
    return tiny(tok)


@pytest.fixture
def proc(tok):
    return XMedProcessor(tok, 32, N_TOK)


@pytest.fixture
def root(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB").save(tmp_path / "rgb.png")
    return tmp_path


def record(answer="<ref>right lung</ref><box>[[120, 340, 560, 780]]</box>", images=("gray.png",)):
    head = (
        "<image>\n" if len(images) == 1 else "".join(f"Image-{i + 1}: <image>\n" for i in range(len(images)))
    )
    return {
        "id": "r1",
        "images": list(images),
        "conversations": [
            {"from": "human", "value": head + "Where is the right lung?"},
            {"from": "gpt", "value": answer},
        ],
    }


# ------------------------------------------------------------------------------------- config


def test_vision_config_rejects_inconsistent_grid():
    with pytest.raises(ValueError, match="grid_size"):
        XMedVisionConfig(image_size=64, grid_size=8, stem_channels=[16, 32])


def test_sincos_2d_hand_values():
    # dim 4 -> one frequency w=1; token (y=1, x=0) of a 2x2 grid = [sin 1, cos 1 | sin 0, cos 0]
    pe = sincos_2d(2, 4)
    assert pe.shape == (4, 4)
    assert torch.allclose(pe[2], torch.tensor([math.sin(1), math.cos(1), 0.0, 1.0]))
    assert torch.allclose(pe[1], torch.tensor([0.0, 1.0, math.sin(1), math.cos(1)]))
    assert len({tuple(r.tolist()) for r in sincos_2d(8, 32)}) == 64  # every grid cell distinct


# ------------------------------------------------------------------------------------- forward


def _batch(proc, root, *examples):
    return SFTCollator(proc.tokenizer.pad_token_id)([proc.encode_example(r, root) for r in examples])


def test_forward_backward_finite_and_grads_reach_vision(tok, proc, root):
    m = tiny(tok).train()
    out = m(**_batch(proc, root, record(), record("No", images=("rgb.png",))))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for part in (m.vision_tower.stem[0].weight, m.projector[1].weight, m.language_model.lm_head.weight):
        assert part.grad is not None and part.grad.abs().sum() > 0


def test_loss_is_masked_next_token_cross_entropy(model, proc, root):
    b = _batch(proc, root, record(), record("Yes"))
    with torch.no_grad():
        out = model(**b)
        fast = model(**b, loss_only=True)
    logits, labels = out.logits[:, :-1], b["labels"][:, 1:]
    keep = labels != -100
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    assert torch.allclose(out.loss, expected, atol=1e-6)
    assert torch.allclose(fast.loss, expected, atol=1e-5)
    # loss_only returns the logits of the supervised positions only, in row-major order
    assert fast.logits.shape == (int(keep.sum()), logits.shape[-1])
    assert torch.allclose(fast.logits, logits[keep], atol=1e-5)


@pytest.mark.parametrize("weighting, p", [("sample", 1.0), ("square", 0.5)])
def test_loss_weighting_by_answer_length(model, proc, root, weighting, p):
    b = _batch(proc, root, record(), record("Yes"))  # a long box answer and a one-word answer
    with torch.no_grad():
        logits = model(**b).logits[:, :-1]
        got = model(**b, loss_only=True, loss_weighting=weighting).loss
    labels = b["labels"][:, 1:]
    rows = []
    for i in range(2):
        keep = labels[i] != -100
        rows.append(torch.nn.functional.cross_entropy(logits[i][keep], labels[i][keep], reduction="none"))
    n = [len(r) for r in rows]
    assert n[0] > 5 * n[1]  # the box answer is much longer
    # weighted mean with token weight n_i ** -p: p = 1 is the mean of the two per-example means
    expected = sum(r.sum() * k**-p for r, k in zip(rows, n)) / sum(k * k**-p for k in n)
    assert torch.allclose(got, expected, atol=1e-5)
    if weighting == "sample":
        assert torch.allclose(got, (rows[0].mean() + rows[1].mean()) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="loss_weighting='mean'"):
        model(**b, loss_only=True, loss_weighting="mean")


def test_image_tokens_are_replaced_by_vision_features(model, proc, root):
    b = _batch(proc, root, record())
    other = dict(b, pixel_values=-b["pixel_values"])
    with torch.no_grad():
        la, lb = model(**b).logits, model(**other).logits
    first_image = int((b["input_ids"][0] == proc.image_token_id).nonzero()[0])
    answer = b["labels"][0] != -100
    assert not torch.allclose(la[0, answer], lb[0, answer])  # the answer sees the image
    assert torch.equal(la[0, :first_image], lb[0, :first_image])  # causal: text before the image does not


def test_placeholder_count_mismatch_raises(model, proc, root):
    b = _batch(proc, root, record())
    with pytest.raises(ValueError, match="placeholder"):
        model(**dict(b, pixel_values=torch.cat([b["pixel_values"]] * 2), image_counts=None))
    with pytest.raises(ValueError, match="image_counts"):
        model(**dict(b, image_counts=torch.tensor([2])))
    with pytest.raises(ValueError, match="no image inputs"):
        model(**dict(b, pixel_values=None))


def test_save_load_round_trip_identical_logits(tok, proc, root, tmp_path):
    m = tiny(
        tok,
        with_audio=True,
        audio_token_id=tok.convert_tokens_to_ids("<audio>"),
        audio_hidden=16,
        audio_layers=1,
        audio_seconds=1,
        audio_pool=5,
    )
    m.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path / "ckpt").model_type == "xmed_vlm"
    b = _batch(proc, root, record(), record("Yes", images=("rgb.png",)))
    with torch.no_grad():
        ref = m(**b).logits
        for cls in (AutoModelForImageTextToText, XMedVLMForConditionalGeneration):
            again = cls.from_pretrained(tmp_path / "ckpt").eval()
            assert isinstance(again, XMedVLMForConditionalGeneration)
            assert torch.equal(again(**b).logits, ref)
    assert again.generation_config.eos_token_id == tok.eos_token_id


# ------------------------------------------------------------------------------------- coordinates


def test_coordinate_embeddings_are_smooth_in_the_value(tok):
    m = tiny(tok)
    ids = init_coordinate_embeddings(m, tok)
    assert ids == coordinate_token_ids(tok)
    emb = m.get_input_embeddings().weight.detach()

    def cos(a, b):
        return torch.nn.functional.cosine_similarity(emb[ids[a]], emb[ids[b]], dim=0).item()

    assert cos(500, 501) > 0.95  # neighbours start close
    assert cos(500, 501) > cos(500, 540) > cos(500, 900)  # similarity falls with distance
    assert torch.equal(m.get_output_embeddings().weight[ids], emb[ids])  # untied head: same init
    expected = coordinate_features(torch.arange(1001), 32) * 0.02
    assert torch.allclose(emb[ids], expected)


# ------------------------------------------------------------------------------------- freezing


def test_freeze_keeps_frozen_parameters_bit_identical(tok, proc, root):
    m = tiny(tok).train()
    n = freeze(m, vision=True, projector=False, llm=True, audio=True)
    names = trainable_parameter_names(m)
    assert names and all(nm.startswith("projector.") for nm in names)
    assert n == sum(p.numel() for p in m.projector.parameters())
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    m(**_batch(proc, root, record())).loss.backward()
    opt.step()
    after = dict(m.named_parameters())
    for k, v in before.items():
        if k.startswith("projector."):
            continue
        assert torch.equal(after[k], v), k
    assert not torch.equal(after["projector.1.weight"], before["projector.1.weight"])
    freeze(m, vision=False, projector=False, llm=False, audio=False)
    assert len(trainable_parameter_names(m)) == len(list(m.parameters()))


def test_freeze_lm_head_keeps_the_output_rows_while_the_llm_trains(tok, proc, root):
    m = tiny(tok).train()
    freeze(m, vision=False, projector=False, llm=False, audio=True, lm_head=True)
    names = trainable_parameter_names(m)
    assert "language_model.lm_head.weight" not in names
    assert "language_model.model.embed_tokens.weight" in names
    head = m.get_output_embeddings().weight.detach().clone()
    layer = m.language_model.model.layers[0].mlp.up_proj.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    m(**_batch(proc, root, record())).loss.backward()
    opt.step()
    assert torch.equal(m.get_output_embeddings().weight, head)
    assert not torch.equal(m.language_model.model.layers[0].mlp.up_proj.weight, layer)
    tied = tiny(tok, tie_word_embeddings=True)
    with pytest.raises(ValueError, match="tied"):
        freeze(tied, vision=False, projector=False, llm=False, audio=True, lm_head=True)


def test_freeze_llm_attention_keeps_every_attention_projection_while_the_mlps_train(tok, proc, root):
    m = tiny(tok).train()
    freeze(m, vision=False, projector=False, llm=False, audio=True, llm_attention=True)
    names = set(trainable_parameter_names(m))
    attn = {n for n, _ in m.named_parameters() if n.startswith("language_model.") and ".self_attn." in n}
    assert "vision_tower.layers.0.self_attn.in_proj_weight" in names  # the vision tower is not the LLM
    assert attn and not attn & names
    assert "language_model.model.layers.0.mlp.up_proj.weight" in names
    assert {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight"} <= names
    before = {n: p.detach().clone() for n, p in m.named_parameters() if n in attn}
    layer = m.language_model.model.layers[0].mlp.up_proj.weight.detach().clone()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    m(**_batch(proc, root, record())).loss.backward()
    opt.step()
    after = dict(m.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in before.items())
    assert not torch.equal(m.language_model.model.layers[0].mlp.up_proj.weight, layer)


def test_freeze_llm_attention_names_what_it_looks_for():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.language_model = torch.nn.Sequential(torch.nn.Linear(2, 2))

    with pytest.raises(ValueError, match="self_attn"):
        freeze(Plain(), vision=False, projector=False, llm=False, audio=True, llm_attention=True)


def test_image_label_loss_adds_the_weighted_cross_entropy_of_the_mean_image_token(tok, proc, root, tmp_path):
    m = tiny(tok, image_label_names=["ct", "mri", "ultrasound"]).train()
    batch = _batch(proc, root, record(), record("No", images=("rgb.png",)))
    plain = m(**batch, loss_only=True).loss
    labels = torch.tensor([2, -100])  # the second image has no class
    out = m(**batch, loss_only=True, image_labels=labels, image_label_weight=0.5)
    feats = m.get_image_features(batch["pixel_values"])
    by_hand = torch.nn.functional.cross_entropy(m.image_classifier(feats.mean(1))[:1], labels[:1])
    assert out.loss.item() == pytest.approx(plain.item() + 0.5 * by_hand.item(), rel=1e-5)
    full = m(**batch, image_labels=labels, image_label_weight=0.5).loss  # the full-logits path too
    assert full.item() == pytest.approx(m(**batch).loss.item() + 0.5 * by_hand.item(), rel=1e-5)
    out.loss.backward()
    assert m.image_classifier.weight.grad.abs().sum() > 0 and m.projector[1].weight.grad.abs().sum() > 0
    # the classifier is part of the model: saved and loaded with it, counted with the projector
    m.save_pretrained(tmp_path)
    back = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert back.config.image_label_names == ["ct", "mri", "ultrasound"]
    assert torch.equal(back.image_classifier.weight, m.image_classifier.weight)
    assert count_parameters(m)["projector"] - count_parameters(tiny(tok))["projector"] == 3 * 32 + 3


def test_image_label_loss_refuses_what_it_cannot_score(tok, proc, root):
    batch = _batch(proc, root, record())
    with pytest.raises(ValueError, match="image_label_names"):
        tiny(tok)(**batch, loss_only=True, image_labels=torch.tensor([0]), image_label_weight=0.5)
    m = tiny(tok, image_label_names=["ct", "mri"])
    with pytest.raises(ValueError, match="one per image"):
        m(**batch, loss_only=True, image_labels=torch.tensor([0, 1]), image_label_weight=0.5)
    with pytest.raises(ValueError, match="repeat a name"):
        tiny(tok, image_label_names=["ct", "ct"])


# ------------------------------------------------------------------------------------- processor


def test_encode_example_labels_only_the_answer(proc, root, tok):
    rec = record()
    ex = proc.encode_example(rec, root)
    answer = ex["labels"][ex["labels"] != -100].tolist()
    assert (
        answer == tok(rec["conversations"][1]["value"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
    )
    # input ids = the chat template's tokens with <image> expanded
    prompt = proc.build_prompt(rec["conversations"], add_generation_prompt=False)
    assert ex["input_ids"].tolist() == proc.expand_placeholders(
        tok(prompt, add_special_tokens=False)["input_ids"]
    )
    assert int((ex["input_ids"] == proc.image_token_id).sum()) == N_TOK
    assert ex["image_count"] == 1 and ex["pixel_values"].shape == (1, 3, 32, 32)


def test_image_preprocessing(proc, root):
    gray = proc.image_tensor(root / "gray.png")
    assert gray.shape == (3, 32, 32) and gray.dtype == torch.float32
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L -> RGB
    assert gray.min() >= -1 and gray.max() <= 1
    white = proc.image_tensor(Image.new("RGB", (10, 20), (255, 0, 255)))
    assert torch.equal(white[:, 0, 0], torch.tensor([1.0, -1.0, 1.0]))


def test_multi_image_prognosis_record(proc, root):
    ex = proc.encode_example(record("Yes", images=("gray.png", "rgb.png")), root)
    assert ex["image_count"] == 2 and ex["pixel_values"].shape == (2, 3, 32, 32)
    assert int((ex["input_ids"] == proc.image_token_id).sum()) == 2 * N_TOK


def test_processor_errors_name_the_record(proc, root, tok):
    with pytest.raises(ValueError, match="instruction r1: field 'images'"):
        proc.encode_example(record(images=("gray.png", "rgb.png")) | {"images": ["gray.png"]}, root)
    with pytest.raises(FileNotFoundError, match="r1.*missing.png"):
        proc.encode_example(record(images=("missing.png",)), root)
    with pytest.raises(SequenceTooLongError, match="r1"):
        XMedProcessor(tok, 32, N_TOK, max_length=10).encode_example(record(), root)


def test_encode_prompt_and_preference(proc, root, tok):
    p = proc.encode_prompt(record(), root)
    tail = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert p["input_ids"].tolist()[-len(tail) :] == tail and "labels" not in p
    full = proc.encode_example(record(), root)["input_ids"].tolist()
    assert full[: len(p["input_ids"])] == p["input_ids"].tolist()  # the prompt is a prefix of the example
    pref = proc.encode_preference(record(), root, chosen="Yes", rejected="No")
    assert pref["prompt_input_ids"].tolist() == p["input_ids"].tolist()
    assert pref["chosen_input_ids"].tolist() == tok("Yes<|im_end|>", add_special_tokens=False)["input_ids"]
    assert pref["image_count"] == 1


# ------------------------------------------------------------------------------------- shipped sizes


@pytest.mark.parametrize(("profile", "low", "high"), [("ci", 0, 1_000_000), ("demo", 1_000_000, 10_000_000)])
def test_shipped_architectures(profile, low, high):
    arch, vocab = read_architecture(CONFIGS / f"{profile}.yaml")
    tok = train_tokenizer(CORPUS, vocab_size=300)
    # the real tokenizer has about vocab + 991 tokens; pad the tiny one's count to that size
    m = build_tiny_vlm(
        vocab_size=vocab + 991,
        image_token_id=6,
        pad_token_id=0,
        eos_token_id=5,
        audio_token_id=7,
        seed=0,
        **arch,
    )
    assert low < count_parameters(m)["total"] < high
    assert m.config.num_image_tokens == 64 + int(arch.get("summary_token", False))
    assert m.config.num_audio_tokens == 50
    small = build_tiny_vlm_for_tokenizer(tok, seed=0, **arch)
    assert small.config.image_token_id == tok.convert_tokens_to_ids("<image>")


def test_read_architecture_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("tokenizer: {vocab_size: 10}\narchitecture: {grid: 8, vocab_size: 5}\n")
    with pytest.raises(ValueError, match="vocab_size"):
        read_architecture(bad)


# ------------------------------------------------------------- design switches (localisation ablation)


@pytest.mark.parametrize("kind", ["learned", "none"])
def test_position_embedding_alternatives(tok, proc, root, kind):
    m = tiny(tok, position_embedding=kind)
    assert m.config.vision_config.position_embedding == kind
    has_table = any(n.endswith("position_table") for n, _ in m.named_parameters())
    assert has_table == (kind == "learned")
    pixels = torch.randn(2, 3, 32, 32)
    feats = m.vision_tower(pixels)
    default = tiny(tok).vision_tower(pixels)  # same seed, same stem: only the positions differ
    assert feats.shape == default.shape and not torch.allclose(feats, default)


def test_unknown_position_embedding_is_rejected(tok):
    with pytest.raises(ValueError, match="position_embedding='rope'"):
        tiny(tok, position_embedding="rope")


def test_coordinate_init_can_be_left_random(tok):
    smooth = build_tiny_vlm_for_tokenizer(tok, seed=0, **_FOR_TOK)
    rough = build_tiny_vlm_for_tokenizer(tok, seed=0, smooth_coordinates=False, **_FOR_TOK)
    ids = coordinate_token_ids(tok)
    e_s, e_r = smooth.get_input_embeddings().weight, rough.get_input_embeddings().weight
    assert not torch.allclose(e_s[ids], e_r[ids])
    other = [i for i in range(len(tok)) if i not in set(ids)]
    assert torch.equal(e_s[other], e_r[other])


_FOR_TOK = {
    "image_size": 32, "grid": 4, "vision_hidden": 32, "vision_layers": 1, "text_hidden": 32,
    "text_layers": 1, "heads": 2, "intermediate": 64, "max_positions": 256,
}  # fmt: skip


def test_mimetic_attention_init(tok):
    plain, mim = tiny(tok), tiny(tok, mimetic_heads=2)
    for layer in mim.language_model.model.layers:
        a = layer.self_attn
        assert torch.equal(a.q_proj.weight, a.k_proj.weight)  # W_q^T W_k is PSD: same tokens attend
        qk = a.q_proj.weight.T @ a.k_proj.weight
        assert torch.linalg.eigvalsh(qk).min() > -1e-6
        ov = a.o_proj.weight @ a.v_proj.weight  # close to -I: diagonal about -1, off-diagonal small
        assert ov.shape == (32, 32)
        assert -1.3 < ov.diagonal().mean() < -0.7
        assert (ov - torch.diag(ov.diagonal())).abs().mean() < 0.25
    # the rest of the model is initialised exactly as without the option (same seed)
    p, m = dict(plain.named_parameters()), dict(mim.named_parameters())
    changed = {n for n in p if not torch.equal(p[n], m[n])}
    assert changed and all(n.split(".")[-2] in {"q_proj", "k_proj", "o_proj"} for n in changed), changed
    # and still a working model: finite loss, gradients
    ids = torch.tensor([[5, 6, 7, 8]])
    out = mim.language_model(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)


def test_mimetic_attention_on_some_heads(tok):
    plain, mim = tiny(tok), tiny(tok, mimetic_heads=1)  # 1 of 2 heads, head_dim 16
    for p_layer, m_layer in zip(plain.language_model.model.layers, mim.language_model.model.layers):
        pa, ma = p_layer.self_attn, m_layer.self_attn
        assert torch.equal(ma.q_proj.weight[:16], ma.k_proj.weight[:16])
        assert torch.equal(ma.q_proj.weight[16:], pa.q_proj.weight[16:])  # the other head as before
        assert torch.equal(ma.k_proj.weight[16:], pa.k_proj.weight[16:])
        assert torch.equal(ma.o_proj.weight[:, 16:], pa.o_proj.weight[:, 16:])
        ov = ma.o_proj.weight[:, :16] @ ma.v_proj.weight[:16]  # about minus a projection of rank 16
        assert torch.isclose(ov.trace(), torch.tensor(-16.0), rtol=1e-4)
        assert torch.linalg.matrix_rank(ov) == 16
    with pytest.raises(ValueError, match="out of range"):
        tiny(tok, mimetic_heads=3)


def test_mimetic_attention_needs_full_key_value_heads():
    from model.vlm.modeling import init_mimetic_attention

    class Attn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.o_proj = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
            self.k_proj, self.v_proj = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)

    layer = torch.nn.Module()
    layer.self_attn = Attn()
    with pytest.raises(ValueError, match="as many key/value heads"):
        init_mimetic_attention([layer])


def _attention(llm, ids):
    llm.config._attn_implementation = "eager"
    with torch.no_grad():
        return llm(input_ids=ids, output_attentions=True).attentions


def test_induction_heads_attend_by_offset_then_by_token(tok):
    # head_dim 32 as in the demo LLM: 7 slow rotary pairs carry the match code
    m = tiny(tok, induction_offsets=[1, 2], mimetic_heads=2, text_hidden=64)
    llm = m.language_model
    assert llm.config.attention_bias  # query/key biases carry the positional heads
    gen = torch.Generator().manual_seed(0)
    words = torch.randperm(200, generator=gen)[:40] + 50  # 40 distinct tokens
    k = 12  # the token at position k comes back at the second-to-last position
    ids = torch.cat([words, words[k : k + 1], words[-1:] * 0 + 7])[None]
    n = ids.shape[1]
    att = _attention(llm, ids)
    for head, offset in enumerate((1, 2)):  # layer 0: pure previous-token heads
        top = att[0][0, head].argmax(-1)
        assert top[offset:].tolist() == list(range(n - offset)), (head, offset)
        assert att[0][0, head, offset:].max(-1).values.min() > 0.99
    # layer 1 head 0 at the last position: where the token before it stands (position k, and
    # position n - 2 itself), nowhere else
    last = att[1][0, 0, -1]
    assert last[k] + last[n - 2] > 0.9, last.topk(3)
    # the other layer-1 heads stay mimetic (W_k = W_q), the first layer's non-offset heads are none
    a1 = llm.model.layers[1].self_attn
    assert torch.equal(a1.q_proj.weight[32:], a1.k_proj.weight[32:])
    assert not torch.equal(a1.q_proj.weight[:32], a1.k_proj.weight[:32])
    a0 = llm.model.layers[0].self_attn
    assert not a0.q_proj.weight.any() and not a0.k_proj.weight.any()  # position alone
    out = llm(input_ids=ids, labels=ids)
    assert torch.isfinite(out.loss)


def test_induction_heads_keep_the_other_first_layer_head(tok):
    plain, ind = tiny(tok, induction_offsets=[1]), tiny(tok, induction_offsets=[1], mimetic_heads=2)
    # one offset head (the last of layer 0); layer 0 head 0 keeps its plain initialisation
    a0 = ind.language_model.model.layers[0].self_attn
    p0 = plain.language_model.model.layers[0].self_attn
    assert torch.equal(a0.q_proj.weight[:16], p0.q_proj.weight[:16])
    assert not a0.q_proj.weight[16:].any() and a0.q_proj.bias[16:].abs().sum() > 0


def test_induction_heads_refusals(tok):
    from model.vlm.modeling import init_induction_heads

    plain = tiny(tok)  # no attention biases
    layers = plain.language_model.model.layers
    inv = plain.language_model.model.rotary_emb.inv_freq
    with pytest.raises(ValueError, match="attention_bias"):
        init_induction_heads(layers, inv, [1, 2], span=256, embed_std=0.02)
    biased = tiny(tok, induction_offsets=[1]).language_model.model
    with pytest.raises(ValueError, match="offsets"):
        init_induction_heads(biased.layers, inv, [1, 2, 3], span=256, embed_std=0.02)  # 2 heads
    with pytest.raises(ValueError, match="offsets"):
        init_induction_heads(biased.layers, inv, [0], span=256, embed_std=0.02)
    with pytest.raises(ValueError, match="two LLM layers"):
        init_induction_heads(biased.layers[:1], inv, [1], span=256, embed_std=0.02)
    with pytest.raises(ValueError, match="slowly enough"):
        init_induction_heads(biased.layers, inv, [1], span=256, embed_std=0.02, reach=10**9)


def test_offset_score_weights_single_out_the_offset():
    from model.vlm.modeling import offset_score_weights

    inv = 1.0 / (10000 ** (torch.arange(0, 16, 2).double() / 16))
    for offset in (1, 2, 5):
        a, margin = offset_score_weights(inv, offset, 512)
        assert a.min() >= -1e-9 and abs(a.sum().item() - 1) < 1e-6 and margin > 0
        d = torch.arange(512).double()
        score = (a[None] * torch.cos((d[:, None] - offset) * inv[None])).sum(-1)
        assert score.argmax().item() == offset
        others = torch.cat([score[:offset], score[offset + 1 :]])
        assert score[offset] - others.max() >= margin - 1e-6


def test_offset_heads_in_chosen_layers(tok):
    m = tiny(tok, mimetic_heads=2, offset_heads={0: [2], 1: [1]})
    llm = m.language_model
    assert llm.config.attention_bias
    ids = (torch.randperm(200, generator=torch.Generator().manual_seed(1))[:30] + 50)[None]
    att = _attention(llm, ids)
    n = ids.shape[1]
    for layer, offset in ((0, 2), (1, 1)):  # the last head of each layer: exactly `offset` back
        top = att[layer][0, 1].argmax(-1)
        assert top[offset:].tolist() == list(range(n - offset))
        a = llm.model.layers[layer].self_attn
        assert not a.q_proj.weight[16:].any() and not a.k_proj.weight[16:].any()
        ov = a.o_proj.weight[:, 16:] @ a.v_proj.weight[16:]  # copies: a projection of rank head_dim
        assert torch.allclose(ov @ ov, ov, atol=1e-5) and torch.isclose(
            ov.trace(), torch.tensor(16.0), atol=1e-4
        )
        assert torch.equal(a.q_proj.weight[:16], a.k_proj.weight[:16])  # head 0 stays mimetic
    with pytest.raises(ValueError, match="layer 5 out of range"):
        tiny(tok, offset_heads={5: [1]})
    with pytest.raises(ValueError, match="offsets"):
        tiny(tok, offset_heads={0: [1, 2, 3]})


def test_induction_model_round_trip(tok, tmp_path):
    m = tiny(tok, induction_offsets=[1, 2], mimetic_heads=2)
    m.save_pretrained(tmp_path)
    back = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert back.config.text_config.attention_bias
    for (n, p), (_, q) in zip(m.named_parameters(), back.named_parameters()):
        assert torch.equal(p, q), n


def test_mimetic_vision_attention(tok):
    plain, mim = tiny(tok), tiny(tok, mimetic_vision=True)
    d = 32  # vision_hidden of the tiny model
    for layer in mim.vision_tower.layers:
        w = layer.self_attn.in_proj_weight
        assert torch.equal(w[:d], w[d : 2 * d])  # packed q rows = k rows
        ov = layer.self_attn.out_proj.weight @ w[2 * d :]
        assert torch.isclose(ov.trace(), torch.tensor(-float(d)), rtol=1e-4)
    p, m = dict(plain.named_parameters()), dict(mim.named_parameters())
    changed = {n for n in p if not torch.equal(p[n], m[n])}
    assert changed == {
        f"vision_tower.layers.{i}.self_attn.{w}"
        for i in range(1)
        for w in ("in_proj_weight", "out_proj.weight")
    }
    assert torch.equal(
        mim.vision_tower(torch.zeros(1, 3, 32, 32)).isfinite(), torch.ones(1, 16, 32, dtype=torch.bool)
    )


def test_summary_token(tok, root, tmp_path):
    m = tiny(tok, summary_token=True)
    assert m.config.num_image_tokens == N_TOK + 1 and tiny(tok).config.num_image_tokens == N_TOK
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = m.vision_tower(pixels)
        assert feats.shape == (2, N_TOK + 1, 32)
        # the summary token (last) reads the whole grid: changing only the bottom-right 8x8 patch of
        # the first image changes its summary, and nothing of the second image
        edited = pixels.clone()
        edited[0, :, 24:, 24:] += 1.0
        again = m.vision_tower(edited)
    assert not torch.allclose(again[0, -1], feats[0, -1])
    assert torch.equal(again[1], feats[1])
    # a learned parameter of the vision group (frozen with the tower), kept by save/load
    assert "vision_tower.summary" in trainable_parameter_names(m)
    assert not any("summary" in n for n, _ in tiny(tok).named_parameters())
    m.save_pretrained(tmp_path / "ckpt")
    back = XMedVLMForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    assert back.config.vision_config.summary_token
    assert torch.equal(back.vision_tower.summary, m.vision_tower.summary)
    freeze(back, vision=True, projector=False, llm=False, audio=True)
    assert "vision_tower.summary" not in trainable_parameter_names(back)
    # end to end: each <image> expands to grid + 1 placeholders and the loss is finite
    proc = XMedProcessor.for_model(tok, back.config)
    assert proc.num_image_tokens == N_TOK + 1
    b = _batch(proc, root, record())
    assert int((b["input_ids"] == proc.image_token_id).sum()) == N_TOK + 1
    with torch.no_grad():
        assert torch.isfinite(back(**b).loss)

"""Learning without Forgetting in the SFT loop: the KL term by hand, the row mask, the ci run."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from model.recipes import ListLogger, RecipeConfigError
from model.recipes.distill import AnswerDistiller, distillation_kl
from model.recipes.reasoning_sft import ReasoningSFTRecipe
from model.vlm.modeling import weighted_answer_loss
from tests.unit.model.recipes._world import fake_reasoning_builder, sft_config, stage_config


def test_kl_matches_hand_worked_values():
    student = torch.tensor([[0.0, 0.0]])  # p = (0.5, 0.5)
    teacher = torch.tensor([[math.log(3.0), 0.0]])  # p = (0.75, 0.25)
    # 0.75 ln(0.75 / 0.5) + 0.25 ln(0.25 / 0.5)
    assert distillation_kl(student, teacher, 1.0).item() == pytest.approx(0.130812, abs=1e-6)
    # T = 2: teacher p = (sqrt3, 1) / (sqrt3 + 1) = (0.63397, 0.36603); KL 0.036341, times T^2
    assert distillation_kl(student, teacher, 2.0).item() == pytest.approx(0.145363, abs=1e-6)
    assert distillation_kl(teacher, teacher, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_gradient_reaches_the_student_only_and_bad_input_is_refused():
    student = torch.zeros(3, 5, requires_grad=True)
    teacher = torch.randn(3, 5, requires_grad=True)
    distillation_kl(student, teacher.detach(), 1.0).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="differ"):
        distillation_kl(torch.zeros(2, 5), torch.zeros(3, 5), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation_kl(torch.zeros(2, 5), torch.zeros(2, 5), 0.0)


class _FixedTeacher(nn.Module):
    """Answers every ``loss_only`` forward with the same supervised-position logits."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.calls = 0

    def forward(self, *, loss_only: bool, loss_weighting: str, **inputs):
        assert loss_only
        self.calls += 1
        return SimpleNamespace(logits=self.logits)


def _batch():
    # row 0 ("own"): 2 supervised tokens; row 1 ("replay"): 1. Labels are shifted inside: column 0
    # is never a target.
    labels = torch.tensor([[-100, -100, 1, 2], [-100, -100, -100, 0]])
    student = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    return labels, student, teacher


def test_distiller_mixes_only_the_distilled_rows():
    labels, student, teacher = _batch()
    fake = _FixedTeacher(teacher)
    d = AnswerDistiller(fake, weight=0.25, temperature=1.0, target_only_ids={"own"})
    got = d.loss(student, {"labels": labels}, ["own", "replay"], "sample", plain_loss=torch.tensor(-1.0))
    ce = nn.functional.cross_entropy(student.detach(), torch.tensor([1, 2, 0]), reduction="none")
    kl_last = distillation_kl(student.detach()[2:], teacher[2:], 1.0)[0]
    # sample weighting: row 0's two tokens weigh 1/2 each, row 1's one token 1; rows count equally
    expected = (0.5 * ce[0] + 0.5 * ce[1] + (0.75 * ce[2] + 0.25 * kl_last)) / 2.0
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert fake.calls == 1 and not any(p.requires_grad for p in fake.parameters())
    got.backward()
    assert student.grad is not None


def test_distiller_skips_the_teacher_when_no_row_is_distilled():
    labels, student, teacher = _batch()
    fake = _FixedTeacher(teacher)
    d = AnswerDistiller(fake, weight=0.5, temperature=1.0, target_only_ids={"a", "b"})
    plain = torch.tensor(0.123)
    assert d.loss(student, {"labels": labels}, ["a", "b"], "square", plain_loss=plain) is plain
    assert fake.calls == 0


def test_distiller_settings_are_validated():
    with pytest.raises(ValueError, match="weight"):
        AnswerDistiller(nn.Linear(2, 2), weight=0.0, temperature=1.0)
    with pytest.raises(ValueError, match="temperature"):
        AnswerDistiller(nn.Linear(2, 2), weight=0.5, temperature=-1.0)


def test_weighted_answer_loss_checks_its_input():
    keep = torch.tensor([[True, False], [True, True]])
    per = torch.tensor([1.0, 2.0, 4.0])
    assert weighted_answer_loss(per, keep, "token").item() == pytest.approx(7 / 3)
    assert weighted_answer_loss(per, keep, "sample").item() == pytest.approx((1.0 + 3.0) / 2)
    with pytest.raises(ValueError, match="expected"):
        weighted_answer_loss(per[:2], keep, "token")
    with pytest.raises(ValueError, match="loss_weighting"):
        weighted_answer_loss(per, keep, "mean")


def _reasoning_run(world, out, *extra):
    cfg = stage_config(
        "reasoning_sft", world, out, f"data.replay_shards={world.shards}", "data.replay_rows=3", *extra
    )
    recipe = ReasoningSFTRecipe(cfg, ListLogger(), build_dataset=fake_reasoning_builder)
    try:
        recipe.setup()
        recipe.train()
        model_dir = recipe.save_checkpoint()
        distiller = recipe.sft.distiller
        teacher = (
            None if distiller is None else {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
        )
        return load_file(f"{model_dir}/model.safetensors"), distiller, teacher
    finally:
        recipe.cleanup()


def test_reasoning_sft_distils_the_replayed_rows_from_a_frozen_copy(world, tmp_path):
    plain, none, _ = _reasoning_run(world, tmp_path / "plain")
    assert none is None  # off by default
    student, distiller, teacher = _reasoning_run(world, tmp_path / "lwf", "distill.weight=0.5")
    own = pq.read_table(tmp_path / "lwf" / "reasoning_train.parquet").column("id").to_pylist()
    assert distiller.target_only_ids == frozenset(own) and distiller.weight == 0.5
    parent = load_file(f"{world.checkpoint}/model.safetensors")
    assert all(torch.equal(teacher[k], parent[k]) for k in parent)  # the teacher never trained
    assert any(not torch.equal(student[k], parent[k]) for k in parent)  # the student did
    # the KL term changes the updates: same data, same seed, different weights
    assert any(not torch.equal(student[k], plain[k]) for k in plain if k.startswith("language_model"))


def test_distillation_settings_are_checked(world, tmp_path):
    with pytest.raises(RecipeConfigError, match="needs replayed rows"):
        stage_config("reasoning_sft", world, tmp_path / "rs", "distill.weight=0.5")
    with pytest.raises(RecipeConfigError, match="needs a teacher"):
        sft_config(world, tmp_path / "sft", "distill.weight=0.5")
    with pytest.raises(RecipeConfigError, match="cannot both be on"):
        sft_config(
            world,
            tmp_path / "sft",
            "distill.weight=0.5",
            f"distill.teacher_dir={world.checkpoint}",
            "data.image_label_weight=0.3",
        )
    cfg = sft_config(
        world, tmp_path / "sft", "distill.weight=0.5", f"distill.teacher_dir={tmp_path / 'nope'}"
    )
    with pytest.raises(FileNotFoundError, match="distill.teacher_dir"):
        cfg.check_paths()


def test_reasoning_sft_with_frozen_attention_moves_only_the_rest_of_the_llm(world, tmp_path):
    """The demo reasoning-SFT combination: distillation, adjacent evidence answers in the replay, the
    LLM's attention frozen (the matches SFT formed stay as they were)."""
    student, _, _ = _reasoning_run(
        world,
        tmp_path / "fa",
        "distill.weight=0.5",
        "freeze.llm_attention=true",
        "data.modality_evidence=true",
        "data.modality_format=adjacent",
    )
    parent = load_file(f"{world.checkpoint}/model.safetensors")
    attention = [k for k in parent if k.startswith("language_model.") and ".self_attn." in k]
    assert attention and all(torch.equal(student[k], parent[k]) for k in attention)
    mlp = [k for k in parent if k.startswith("language_model.") and ".mlp." in k]
    assert any(not torch.equal(student[k], parent[k]) for k in mlp)

"""Learning without Forgetting in the SFT loop: answer tokens also learn a frozen teacher's distribution.

Reasoning SFT replays rows of the stage-1 mix so the short-answer skills survive the long 5-step
answers. Replayed with their targets only, each such row teaches the one right token; the SFT
model's whole distribution over the answer (how sure it was, which answers it kept apart) is
lost. With a distiller (Li and Hoiem's Learning without Forgetting, with Hinton's temperature) a
distilled row's answer token ``t`` costs

    (1 - w) * CE(target_t) + w * T^2 * KL(softmax(teacher_t / T) || softmax(student_t / T))

where the teacher is a frozen copy of the model the stage starts from; rows of the stage's own
new data learn from their targets only. The per-token losses are then averaged with the run's
loss weighting (:func:`model.vlm.modeling.weighted_answer_loss`), as the plain loss is.

The teacher runs only on micro-batches holding at least one distilled row (length-grouped
batches of reasoning rows skip it), without gradients.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from model.vlm.modeling import weighted_answer_loss

__all__ = ["AnswerDistiller", "distillation_kl"]


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-position ``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, shape ``(N,)``.

    Args:
        student: ``(N, vocab)`` logits (gradients flow through these).
        teacher: ``(N, vocab)`` logits of the same positions.
        temperature: ``T > 0``.

    Raises:
        ValueError: shapes differ or ``temperature <= 0``.
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    t = temperature
    log_p_teacher = torch.log_softmax(teacher.float() / t, dim=-1)
    log_p_student = torch.log_softmax(student.float() / t, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1) * (t * t)


class AnswerDistiller:
    """Mixes target cross-entropy with the KL to a frozen teacher on the distilled rows of a batch.

    Args:
        teacher: the frozen model (same vocabulary and media layout as the student); set to eval
            mode with gradients off here.
        weight: the teacher's share ``w`` in ``(0, 1]`` of a distilled token's loss.
        temperature: softmax temperature ``T``.
        target_only_ids: ids of the rows that learn from their targets only.

    Raises:
        ValueError: ``weight`` outside ``(0, 1]`` or ``temperature <= 0``.
    """

    def __init__(
        self, teacher: nn.Module, *, weight: float, temperature: float, target_only_ids: Collection[str] = ()
    ) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"distillation weight must be in (0, 1], got {weight}")
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.target_only_ids = frozenset(target_only_ids)

    def distilled_rows(self, ids: Sequence[str]) -> torch.Tensor:
        """``(B,)`` bool: True for the rows that learn from the teacher too."""
        return torch.tensor([i not in self.target_only_ids for i in ids], dtype=torch.bool)

    def loss(
        self,
        student_logits: torch.Tensor,
        inputs: Mapping[str, Any],
        ids: Sequence[str],
        loss_weighting: str,
        plain_loss: torch.Tensor,
    ) -> torch.Tensor:
        """The micro-batch loss with the KL term on its distilled rows.

        Args:
            student_logits: ``(N, vocab)`` the student's logits at the supervised positions
                (the ``loss_only=True`` forward's ``logits``).
            inputs: the forward's tensors (``labels`` included), on the teacher's device.
            ids: the rows' ids, in batch order.
            loss_weighting: the run's weighting.
            plain_loss: the student's target-only loss, returned as is when no row is distilled.
        """
        rows = self.distilled_rows(ids).to(student_logits.device)
        if not bool(rows.any()):
            return plain_loss
        labels = inputs["labels"]
        keep = labels[:, 1:] != -100
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs, loss_only=True, loss_weighting=loss_weighting).logits
        ce = nn.functional.cross_entropy(student_logits.float(), labels[:, 1:][keep], reduction="none")
        kl = distillation_kl(student_logits, teacher_logits, self.temperature)
        distilled = rows[keep.nonzero()[:, 0]]
        per_token = torch.where(distilled, (1 - self.weight) * ce + self.weight * kl, ce)
        return weighted_answer_loss(per_token, keep, loss_weighting)

"""Training losses beyond next-token cross-entropy (which lives in the model's forward).

* :func:`dpo_loss`: Direct Preference Optimization, sigmoid form (Rafailov et al., 2023).
* :func:`chosen_nll`: the per-token negative log-likelihood of the chosen answers, the term RPO adds
  to DPO (Pang et al., 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["chosen_nll", "dpo_loss"]


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Sigmoid DPO loss over a batch of preference pairs.

    .. math::

        \mathcal{L} = -\frac{1}{B}\sum_i \log\sigma\Big(\beta\big[
            (\log\pi_\theta(y_w|x) - \log\pi_{ref}(y_w|x))
          - (\log\pi_\theta(y_l|x) - \log\pi_{ref}(y_l|x))\big]\Big)

    with implicit rewards :math:`r_w = \beta(\log\pi_\theta(y_w|x) - \log\pi_{ref}(y_w|x))` and
    likewise :math:`r_l`. At initialisation (policy == reference) the loss is :math:`\log 2`.

    Paper: Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a
    Reward Model", NeurIPS 2023, https://arxiv.org/abs/2305.18290 (eq. 7). Provenance: same
    formula as torchtune ``torchtune/rlhf/loss/dpo.py::DPOLoss`` (label_smoothing=0) and TRL's
    ``loss_type="sigmoid"``.

    Args:
        policy_chosen_logps: ``(B,)`` summed log-probs of the chosen answers under the policy.
        policy_rejected_logps: ``(B,)`` same for the rejected answers.
        reference_chosen_logps: ``(B,)`` chosen answers under the frozen reference model.
        reference_rejected_logps: ``(B,)`` rejected answers under the reference model.
        beta: KL-strength (> 0); larger keeps the policy closer to the reference.

    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: the mean loss (scalar, differentiable) and the
        detached per-pair rewards ``(B,)``.

    Raises:
        ValueError: ``beta <= 0`` or the four inputs differ in shape.
    """
    if beta <= 0:
        raise ValueError(f"dpo_loss: beta must be > 0, got {beta}")
    shapes = {
        tuple(t.shape)
        for t in (
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps,
            reference_rejected_logps,
        )
    }
    if len(shapes) != 1:
        raise ValueError(f"dpo_loss: the four log-prob tensors must share one shape, got {sorted(shapes)}")
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses.mean(), beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def chosen_nll(policy_chosen_logps: torch.Tensor, chosen_tokens: torch.Tensor) -> torch.Tensor:
    r"""Mean per-token negative log-likelihood of the chosen answers under the policy.

    .. math:: \mathcal{L}_{NLL} = \frac{1}{B}\sum_i \frac{-\log\pi_\theta(y_w^i|x^i)}{|y_w^i|}

    Added to the DPO loss with weight ``alpha`` it is RPO (Pang et al., "Iterative Reasoning
    Preference Optimization", 2024, https://arxiv.org/abs/2404.19733, eq. 1; TRL's ``rpo_alpha``):
    plain DPO on few pairs can lower the likelihood of the chosen answers too (only the margin is
    pushed), and a long structured answer then stops reaching its last step; the NLL term keeps the
    chosen answers likely.

    Args:
        policy_chosen_logps: ``(B,)`` summed log-probs of the chosen answers under the policy.
        chosen_tokens: ``(B,)`` the number of answer tokens of each chosen answer.

    Raises:
        ValueError: shapes differ or an answer has no token.
    """
    if policy_chosen_logps.shape != chosen_tokens.shape:
        raise ValueError(
            f"chosen_nll: shapes differ, {tuple(policy_chosen_logps.shape)} vs {tuple(chosen_tokens.shape)}"
        )
    if bool((chosen_tokens <= 0).any()):
        raise ValueError(f"chosen_nll: every chosen answer needs >= 1 token, got {chosen_tokens.tolist()}")
    return (-policy_chosen_logps / chosen_tokens.to(policy_chosen_logps.dtype)).mean()

"""model.losses.dpo_loss against hand-worked values.

Derivation (sigmoid DPO, Rafailov et al. 2023, eq. 7): with log-ratios
``c = pi_c - ref_c`` and ``r = pi_r - ref_r``, the per-pair loss is ``-log sigma(beta (c - r))
= log(1 + exp(-beta (c - r)))`` and the rewards are ``beta c`` and ``beta r``.

Pair A: pi_c=-1, pi_r=-3, ref_c=-2, ref_r=-2, beta=0.5 -> c=1, r=-1, beta(c-r)=1
        loss = log(1 + e^-1) = 0.31326168751822286; rewards (0.5, -0.5)
Pair B: pi_c=-2, pi_r=-1, ref_c=-1, ref_r=-2, beta=0.5 -> c=-1, r=1, beta(c-r)=-1
        loss = log(1 + e) = 1 + log(1 + e^-1) = 1.3132616875182228; rewards (-0.5, 0.5)
Batch mean of A and B = 0.31326168751822286 + 0.5 = 0.8132616875182229.
Gradient of pair A's loss: d/d pi_c = -beta * sigma(-1) = -0.5 * 0.2689414213699951 = -0.13447071068499755,
d/d pi_r = +0.13447071068499755.
"""

from __future__ import annotations

import math

import pytest
import torch

from model.losses import dpo_loss


def _t(*values, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


def test_single_pair_hand_value_and_rewards():
    loss, chosen, rejected = dpo_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), beta=0.5)
    assert loss.item() == pytest.approx(0.31326168751822286, abs=1e-12)
    assert chosen.tolist() == [0.5] and rejected.tolist() == [-0.5]


def test_batch_mean_of_a_preferred_and_a_dispreferred_pair():
    loss, chosen, rejected = dpo_loss(
        _t(-1.0, -2.0), _t(-3.0, -1.0), _t(-2.0, -1.0), _t(-2.0, -2.0), beta=0.5
    )
    assert loss.item() == pytest.approx(0.8132616875182229, abs=1e-12)
    assert chosen.tolist() == [0.5, -0.5] and rejected.tolist() == [-0.5, 0.5]


@pytest.mark.parametrize("beta", [0.01, 0.1, 5.0])
def test_policy_equal_to_reference_gives_log_two(beta):
    logps = _t(-4.0, -7.5)
    loss, chosen, rejected = dpo_loss(logps, logps - 1, logps, logps - 1, beta=beta)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-12)
    assert chosen.tolist() == [0.0, 0.0] and rejected.tolist() == [0.0, 0.0]


def test_gradient_hand_value_and_detached_rewards():
    pc, pr = _t(-1.0, grad=True), _t(-3.0, grad=True)
    loss, chosen, rejected = dpo_loss(pc, pr, _t(-2.0), _t(-2.0), beta=0.5)
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.13447071068499755, abs=1e-12)
    assert pr.grad.item() == pytest.approx(0.13447071068499755, abs=1e-12)
    assert not chosen.requires_grad and not rejected.requires_grad


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(_t(0.0), _t(0.0), _t(0.0), _t(0.0), beta=0.0)
    with pytest.raises(ValueError, match="share one shape"):
        dpo_loss(_t(0.0, 1.0), _t(0.0), _t(0.0), _t(0.0), beta=0.1)


def test_chosen_nll_hand_worked():
    # answers of 4 and 2 tokens with summed log-probs -2.0 and -3.0: (0.5 + 1.5) / 2 = 1.0
    from model.losses import chosen_nll

    got = chosen_nll(torch.tensor([-2.0, -3.0]), torch.tensor([4, 2]))
    assert got.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 1 token"):
        chosen_nll(torch.tensor([-2.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match="shapes differ"):
        chosen_nll(torch.tensor([-2.0, -1.0]), torch.tensor([3]))


def test_rpo_alpha_adds_the_chosen_nll(world, tmp_path):
    """Same pairs, same first batch: loss(rpo_alpha=0.5) - loss(0) = 0.5 * the logged chosen NLL."""
    from model.recipes import ListLogger
    from model.recipes.dpo import DPORecipe
    from tests.unit.model.recipes._world import CharF1Scorer, fake_reasoning_builder, stage_config

    first = {}
    for alpha in (0.0, 0.5):
        logger = ListLogger()
        cfg = stage_config(
            "dpo",
            world,
            tmp_path / f"a{alpha}",
            "train.max_steps=1",
            "train.log_every=1",
            f"loss.rpo_alpha={alpha}",
        )
        recipe = DPORecipe(cfg, logger, scorer=CharF1Scorer(), build_dataset=fake_reasoning_builder)
        try:
            recipe.setup()
            recipe.train()
        finally:
            recipe.cleanup()
        first[alpha] = (logger.series("dpo/loss")[0][1], logger.series("dpo/nll_chosen")[0][1])
    (plain, nll0), (rpo, nll1) = first[0.0], first[0.5]
    assert nll0 == pytest.approx(nll1) and nll0 > 0
    assert rpo - plain == pytest.approx(0.5 * nll0, rel=1e-4)

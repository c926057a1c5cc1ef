"""Exact resume: an interrupted run resumed from its last checkpoint ends with the SAME weights.

For each recipe loop (sft, dpo, audio; reasoning_sft runs the sft loop) a run of N steps is
compared with a run that crashes at step k (an exception raised from the loss, or a subprocess
killed with SIGKILL) and is then resumed from ``checkpoints/step_<k-1>``: every parameter must be
``torch.equal``, and the losses logged after the resume must equal the uninterrupted run's losses
at the same steps (so the same batches were replayed). Also: the data order and the LR schedule
are pure functions, and a resume under different batch settings is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.recipes import ListLogger
from model.recipes._common import epoch_batches, find_checkpoint, warmup_cosine
from model.recipes.audio import AudioRecipe
from model.recipes.dpo import DPORecipe
from model.recipes.sft import SFTRecipe
from tests.unit.model.recipes._world import CharF1Scorer, fake_reasoning_builder, sft_config, stage_config

REPO = Path(__file__).resolve().parents[4]


# ---------------------------------------------------------------------------------------------
# pure pieces
# ---------------------------------------------------------------------------------------------


def test_epoch_batches_is_a_seeded_permutation_grouped_by_length():
    lengths = [(i * 37) % 101 for i in range(40)]
    a = epoch_batches(lengths, batch_size=4, seed=3, epoch=0, group_window=5)
    assert a == epoch_batches(lengths, batch_size=4, seed=3, epoch=0, group_window=5)
    assert a != epoch_batches(lengths, batch_size=4, seed=3, epoch=1, group_window=5)
    assert sorted(i for b in a for i in b) == list(range(40))
    plain = epoch_batches(lengths, batch_size=4, seed=3, epoch=0, group_window=None)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(a) < padding(plain)


def test_epoch_batches_shards_ranks_like_a_distributed_sampler():
    lengths = list(range(10))  # 10 examples, batch 2 -> 5 batches, wrapped to 6 for 3 ranks
    ranks = [
        epoch_batches(lengths, batch_size=2, seed=0, epoch=0, group_window=None, world_size=3, rank=r)
        for r in range(3)
    ]
    assert [len(r) for r in ranks] == [2, 2, 2]
    assert {i for r in ranks for b in r for i in b} == set(range(10))
    single = epoch_batches(lengths, batch_size=2, seed=0, epoch=0, group_window=None)
    assert ranks[0] == [single[0], single[3]] and ranks[2] == [single[2], single[0]]


def test_warmup_cosine_hand_values():
    # warmup 2 of 6 steps: 1/2, 2/2, then 0.5 * (1 + cos(pi * k / 4)) for k = 0..3, floor 0.1
    got = [warmup_cosine(s, warmup_steps=2, total_steps=6, min_ratio=0.1) for s in range(7)]
    expected = [0.5, 1.0, 1.0, 0.1 + 0.9 * 0.8535533905932737, 0.55, 0.1 + 0.9 * 0.14644660940672624, 0.1]
    assert got == pytest.approx(expected, abs=1e-12)


def test_find_checkpoint(tmp_path):
    assert find_checkpoint(tmp_path, None) is None
    assert find_checkpoint(tmp_path, "latest") is None  # nothing saved yet: start fresh
    with pytest.raises(FileNotFoundError, match="resume_from"):
        find_checkpoint(tmp_path, str(tmp_path / "nope"))


# ---------------------------------------------------------------------------------------------
# crash + resume per recipe loop
# ---------------------------------------------------------------------------------------------


class SimulatedCrash(RuntimeError):
    pass


def _sft(world, out, *extra):
    return SFTRecipe(
        sft_config(
            world,
            out,
            "train.max_steps=5",
            "train.grad_accum_steps=2",
            "train.save_every=2",
            "train.log_every=1",
            "train.keep_checkpoints=3",
            *extra,
        ),
        ListLogger(),
    )


def _dpo(world, out, *extra):
    cfg = stage_config(
        "dpo",
        world,
        out,
        "train.max_steps=4",
        "train.save_every=2",
        "train.log_every=1",
        "data.max_prompts=5",
        "sampling.max_new_tokens=12",
        "train.group_by_length=true",
        *extra,
    )
    return DPORecipe(cfg, ListLogger(), scorer=CharF1Scorer(), build_dataset=fake_reasoning_builder)


def _audio(world, out, *extra):
    cfg = stage_config(
        "audio", world, out, "train.max_steps=4", "train.save_every=2", "train.log_every=1", *extra
    )
    return AudioRecipe(cfg, ListLogger())


# recipe factory, crash at this optimizer step (counted in micro-batches), checkpoint resumed
CASES = {
    "sft": (_sft, 9, "step_4"),  # micro-batch 9 = first of step 5; crosses into epoch 1 (3 steps/epoch)
    "dpo": (_dpo, 3, "step_2"),
    "audio": (_audio, 3, "step_2"),
}


def _run(recipe, crash_at: int | None = None):
    if crash_at is not None:
        real, calls = recipe._forward_loss, {"n": 0}

        def crashing(*args):
            calls["n"] += 1
            if calls["n"] == crash_at:
                raise SimulatedCrash(f"simulated crash at micro-batch {crash_at}")
            return real(*args)

        recipe._forward_loss = crashing
    try:
        recipe.setup()
        recipe.train()
        recipe.save_checkpoint()
    finally:
        recipe.cleanup()
    return recipe


def _losses(recipe, stage: str) -> dict[int, float]:
    return dict(recipe.logger.series(f"{stage}/loss"))


def _assert_same_weights(dir_a: Path, dir_b: Path) -> None:
    a, b = load_file(dir_a / "model" / "model.safetensors"), load_file(dir_b / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == [], f"parameters differ after resume: {different[:5]}"


@pytest.mark.parametrize("stage", sorted(CASES))
def test_crash_and_resume_ends_with_identical_weights(world, tmp_path, stage):
    make, crash_at, resumed_tag = CASES[stage]
    full = _run(make(world, tmp_path / "full"))
    with pytest.raises(SimulatedCrash):
        _run(make(world, tmp_path / "crash"), crash_at=crash_at)
    assert not (tmp_path / "crash" / "model").exists()
    resumed = _run(make(world, tmp_path / "crash"))
    assert resumed.resumed_from == str(tmp_path / "crash" / "checkpoints" / resumed_tag)
    assert resumed.state.step == full.state.step
    step = int(resumed_tag.split("_")[1])
    assert resumed.logger.series(f"{stage}/resumed_from_step") == [(step, float(step))]
    _assert_same_weights(tmp_path / "full", tmp_path / "crash")
    after = _losses(resumed, stage)
    assert after and after == {s: v for s, v in _losses(full, stage).items() if s in after}
    # a changed model under the same data would show up here: the run must actually have trained
    assert any(v != after[min(after)] for v in _losses(full, stage).values())


def test_sft_killed_subprocess_resumes_exactly(world, tmp_path):
    """SIGKILL (no cleanup, no finally) in a child process at step 5, then resume in this process."""
    full = _run(_sft(world, tmp_path / "full"))
    cfg = _sft(world, tmp_path / "killed").cfg
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))
    child = textwrap.dedent(
        f"""
        import json, os, signal
        from model.recipes.config import SFTConfig
        from model.recipes.sft import SFTRecipe
        recipe = SFTRecipe(SFTConfig.model_validate(json.load(open({str(cfg_path)!r}))))
        real, calls = SFTRecipe._forward_loss, {{"n": 0}}
        def killing(self, *args):
            calls["n"] += 1
            if calls["n"] == 9:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, *args)
        SFTRecipe._forward_loss = killing
        recipe.setup()
        recipe.train()
        """
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    proc = subprocess.run(
        [sys.executable, "-c", child],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step_*")) == [
        "step_2",
        "step_4",
    ]
    resumed = _run(_sft(world, tmp_path / "killed"))
    assert resumed.resumed_from.endswith("step_4")
    _assert_same_weights(tmp_path / "full", tmp_path / "killed")
    assert _losses(resumed, "sft") == {s: v for s, v in _losses(full, "sft").items() if s == 5}


def test_resume_with_other_batch_settings_is_refused(world, tmp_path):
    with pytest.raises(SimulatedCrash):
        _run(_sft(world, tmp_path / "run"), crash_at=5)
    with pytest.raises(ValueError, match="would not\\s+replay the same batches"):
        _run(_sft(world, tmp_path / "run", "train.micro_batch_size=2"))


def test_fresh_start_removes_an_earlier_runs_checkpoints(world, tmp_path):
    """Not resuming: the earlier run's step folders and ``latest`` go, so retention keeps this run's."""
    root = tmp_path / "run" / "checkpoints"
    (root / "step_99").mkdir(parents=True)
    (root / "latest").write_text("step_99")
    _run(_sft(world, tmp_path / "run", "train.resume_from=null"))
    assert sorted(p.name for p in root.glob("step_*")) == ["step_2", "step_4"]
    assert (root / "latest").read_text().strip() == "step_4"
    assert find_checkpoint(tmp_path / "run", "latest") == root / "step_4"


def test_sft_warmup_phase_resumes_exactly(world, tmp_path):
    """A crash inside the warm-up phase (step 3 of 3) resumes there and crosses into the main mix."""
    warm = "data.warmup={steps: 3, task_weights: {single_label: 1.0, region_detection: 0.5}}"
    full = _run(_sft(world, tmp_path / "full", warm))
    with pytest.raises(SimulatedCrash):
        _run(_sft(world, tmp_path / "crash", warm), crash_at=5)
    resumed = _run(_sft(world, tmp_path / "crash", warm))
    assert resumed.resumed_from.endswith("step_2") and resumed.state.epoch == 0
    _assert_same_weights(tmp_path / "full", tmp_path / "crash")
    after = _losses(resumed, "sft")
    assert sorted(after) == [3, 4, 5] and after == {
        s: v for s, v in _losses(full, "sft").items() if s in after
    }

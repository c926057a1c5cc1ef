"""A tiny end-to-end run of each recipe on the ci profile (shipped ci YAML, tiny world, tiny model).

Each run asserts what could break: the loss is finite, trainable parameters changed, the final
folder loads with ``from_pretrained`` and carries the provenance, metrics (loss, lr, throughput,
system) were logged, and checkpoints landed in ``checkpoints/step_N``. A NaN injected into the loss
stops the run with a clear error and leaves no checkpoint for that step.
"""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from model.data.io import iter_parquet_rows
from model.recipes import ListLogger, NonFiniteLossError, RecipeConfigError
from model.recipes.audio import AudioRecipe, run_audio
from model.recipes.dpo import PAIR_SCHEMA, DPORecipe, NoPreferencePairsError, read_pairs, run_dpo
from model.recipes.reasoning_sft import ReasoningSFTRecipe, with_replay
from model.recipes.sft import SFTRecipe, main, run_sft, token_lengths
from model.tokenizer import load_tokenizer
from model.vlm import XMedVLMForConditionalGeneration, build_tiny_vlm_for_tokenizer, read_architecture
from tests.unit.model.recipes._world import CharF1Scorer, fake_reasoning_builder, sft_config, stage_config


def _run(recipe):
    try:
        recipe.setup()
        result = recipe.train()
        result.model_dir = str(recipe.save_checkpoint())
        return result
    finally:
        recipe.cleanup()


def _weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(f"{model_dir}/model.safetensors")


def _changed(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_sft_ci_end_to_end(world, tmp_path):
    logger = ListLogger()
    result = run_sft(sft_config(world, tmp_path / "sft"), logger)
    assert result.steps == 6 and math.isfinite(result.final_loss)
    assert result.num_examples == 24  # the val row is not trained on
    assert result.samples_per_s > 0 and result.tokens_per_s > result.samples_per_s
    model = XMedVLMForConditionalGeneration.from_pretrained(result.model_dir)
    assert model.config.vision_config.image_size == 32
    prov = json.loads((tmp_path / "sft" / "model" / "xmed_provenance.json").read_text())
    assert prov["stage"] == "sft" and prov["steps"] == 6 and "scratch" in prov["parent_checkpoint"]
    assert sorted(p.name for p in (tmp_path / "sft" / "checkpoints").glob("step_*")) == ["step_3", "step_6"]
    steps = [s for s, _ in logger.series("sft/loss")]
    assert steps == [2, 4, 6]
    last = logger.metrics[-1][1]
    for key in (
        "sft/lr",
        "sft/samples_per_s",
        "sft/tokens_per_s",
        "sft/grad_norm",
        "system/cpu_percent",
        "system/rss_mb",
    ):
        assert key in last
    assert logger.params["sft.train.micro_batch_size"] == 4 and logger.params["sft.derived.total_steps"] == 6
    lrs = [v for _, v in logger.series("sft/lr")]
    assert lrs == sorted(lrs, reverse=True)  # cosine decay after the 1-step warmup


def test_token_lengths_match_the_processor(world, tmp_path):
    recipe = SFTRecipe(sft_config(world, tmp_path / "len"))
    recipe.setup()
    try:
        for row, n in zip(recipe.rows, recipe.lengths, strict=True):
            assert len(recipe.processor.encode_example(row, world.data_root)["input_ids"]) == n
    finally:
        recipe.cleanup()
    assert token_lengths([], recipe.processor) == []


def test_sft_nan_loss_stops_without_checkpoint(world, tmp_path, monkeypatch):
    real = SFTRecipe._forward_loss
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        loss = real(self, *args)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(SFTRecipe, "_forward_loss", poisoned)
    out = tmp_path / "nan"
    recipe = SFTRecipe(sft_config(world, out, "train.save_every=1"))
    recipe.setup()
    try:
        with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3 on batch ids \['P0") as err:
            recipe.train()
    finally:
        recipe.cleanup()
    assert err.value.step == 3 and len(err.value.batch_ids) == 4
    assert isinstance(err.value, FloatingPointError)
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_1", "step_2"]
    assert not (out / "model").exists()


def test_sft_cli_main(world, tmp_path, capsys):
    cfg = sft_config(world, tmp_path / "cli", "train.max_steps=2", "train.save_every=2")
    path = tmp_path / "sft.yaml"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    main(["--config", str(path), "--set", "train.log_every=1"])
    assert "sft: 2 steps" in capsys.readouterr().out
    assert (tmp_path / "cli" / "model" / "model.safetensors").is_file()


def test_sft_lora_and_gradient_checkpointing(world, tmp_path):
    cfg = sft_config(
        world,
        tmp_path / "lora",
        "lora.enabled=true",
        "lora.rank=4",
        "train.gradient_checkpointing=true",
        "freeze.vision=true",
        "train.max_steps=2",
        "train.save_every=2",
    )
    result = _run(SFTRecipe(cfg))
    assert math.isfinite(result.final_loss)
    # adapters were merged: the folder is a plain model whose q_proj moved and whose vision did not
    weights = _weights(result.model_dir)
    assert not any("lora" in k for k in weights)
    init = build_tiny_vlm_for_tokenizer(
        load_tokenizer(world.tokenizer_dir), seed=0, **read_architecture(world.architecture)[0]
    ).state_dict()
    q = "language_model.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(init[q], weights[q])
    assert all(torch.equal(init[k], weights[k]) for k in weights if k.startswith("vision_tower."))
    # the LLM trained only through adapters: its norms (not adapted) are untouched
    norm = "language_model.model.norm.weight"
    assert torch.equal(init[norm], weights[norm])


def test_reasoning_sft_ci_end_to_end(world, tmp_path):
    logger = ListLogger()
    cfg = stage_config("reasoning_sft", world, tmp_path / "rs")
    result = _run(ReasoningSFTRecipe(cfg, logger, build_dataset=fake_reasoning_builder))
    assert result.stage == "reasoning_sft" and result.steps == 4 and math.isfinite(result.final_loss)
    assert result.num_examples == 5  # the five train images of the manifest
    assert logger.artifacts == [str(tmp_path / "rs" / "reasoning_train.parquet")]
    assert logger.params["reasoning_sft.dataset.num_rows"] == 5  # the builder's summary
    assert [s for s, _ in logger.series("reasoning_sft/loss")] == [2, 4]
    prov = json.loads((tmp_path / "rs" / "model" / "xmed_provenance.json").read_text())
    assert prov["stage"] == "reasoning_sft" and prov["parent_checkpoint"] == str(world.checkpoint)
    assert _changed(_weights(world.checkpoint), _weights(result.model_dir), "language_model.")


def test_reasoning_sft_replays_stage_one_rows(world, tmp_path):
    logger = ListLogger()
    cfg = stage_config(
        "reasoning_sft", world, tmp_path / "rs", f"data.replay_shards={world.shards}", "data.replay_rows=3"
    )
    result = _run(ReasoningSFTRecipe(cfg, logger, build_dataset=fake_reasoning_builder))
    assert result.num_examples == 5 + 3  # the reasoning rows + the replayed curated train rows
    mix = list(iter_parquet_rows(tmp_path / "rs" / "reasoning_train_mix.parquet"))
    curated = {r["id"] for r in iter_parquet_rows(world.shards) if r["split"] == "train"}
    replayed = [r for r in mix if r["id"] in curated]
    assert len(replayed) == 3 and logger.params["reasoning_sft.dataset.replay_rows"] == 3
    again = with_replay(
        tmp_path / "rs" / "reasoning_train.parquet",
        replay_shards=str(world.shards),
        rows=3,
        seed=0,
        out_path=tmp_path / "again.parquet",
        is_main=True,
    )[0]
    assert [r["id"] for r in iter_parquet_rows(again)] == [r["id"] for r in mix]  # seeded: same sample


def test_replay_rows_need_replay_shards(world, tmp_path):
    with pytest.raises(RecipeConfigError, match="replay_rows > 0 needs data.replay_shards"):
        stage_config("reasoning_sft", world, tmp_path / "rs", "data.replay_rows=3")


def test_dpo_ci_end_to_end(world, tmp_path):
    logger = ListLogger()
    cfg = stage_config("dpo", world, tmp_path / "dpo")
    result = _run(DPORecipe(cfg, logger, scorer=CharF1Scorer(), build_dataset=fake_reasoning_builder))
    pairs = pq.read_table(tmp_path / "dpo" / "preference_pairs.parquet")
    assert pairs.schema.equals(PAIR_SCHEMA)
    rows = pairs.to_pylist()
    assert rows and all(r["chosen_score"] > r["rejected_score"] for r in rows)
    assert all(r["images"] and r["prompt"].startswith("<image>\n") for r in rows)
    assert result.num_examples == len(rows) and result.steps == 2
    first_loss = logger.series("dpo/loss")[0]
    assert first_loss[0] == 1 and first_loss[1] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference
    assert "dpo/rewards_accuracy" in logger.metrics[-1][1]
    assert logger.series("dpo/pairs")[0][1] == len(rows)
    assert str(tmp_path / "dpo" / "preference_pairs.parquet") in logger.artifacts
    assert _changed(_weights(world.checkpoint), _weights(result.model_dir), "language_model.")


class _NeverCalled:
    def score(self, answer: str, reference: str) -> float:
        raise AssertionError("a DPO run on a given preference dataset must not sample")


def _pair(i: int, image: str, **kw) -> dict:
    row = {
        "id": f"p{i}",
        "prompt": "<image>\nWrite the 5-step report.",
        "images": [image],
        "chosen": "Step 5: The lungs are clear.",
        "rejected": "Step 1: lung lung lung",
        "chosen_score": 1.0,
        "rejected_score": 0.0,
        "reference": "The lungs are clear.",
    }
    return row | kw


def test_dpo_trains_on_a_given_preference_dataset_without_sampling(world, tmp_path):
    image = next(r for r in iter_parquet_rows(world.shards) if r["split"] == "train")["images"][0]
    given = tmp_path / "reviewed_pairs.parquet"
    pq.write_table(pa.Table.from_pylist([_pair(i, image) for i in range(3)], schema=PAIR_SCHEMA), given)
    logger = ListLogger()
    cfg = stage_config("dpo", world, tmp_path / "dpo", f"data.pairs_file={given}", "train.max_steps=1")
    result = _run(DPORecipe(cfg, logger, scorer=_NeverCalled(), build_dataset=fake_reasoning_builder))
    assert result.num_examples == 3 and result.steps == 1
    copied = pq.read_table(tmp_path / "dpo" / "preference_pairs.parquet").to_pylist()
    assert [r["id"] for r in copied] == ["p0", "p1", "p2"]  # the run's artifact = the given dataset
    assert _changed(_weights(world.checkpoint), _weights(result.model_dir), "language_model.")


def test_read_pairs_names_the_file_and_the_bad_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([_pair(0, "a.png")]).drop(["rejected"]), path)
    with pytest.raises(
        ValueError, match=r"pairs.parquet: preference dataset lacks column\(s\) \['rejected'\]"
    ):
        read_pairs(path)
    pq.write_table(
        pa.Table.from_pylist([_pair(0, "a.png"), _pair(1, "a.png", chosen=" ")], schema=PAIR_SCHEMA), path
    )
    with pytest.raises(ValueError, match=r"row 1 \(id 'p1'\) has no \['chosen'\]"):
        read_pairs(path)
    pq.write_table(pa.Table.from_pylist([_pair(0, "a.png")], schema=PAIR_SCHEMA), path)
    assert len(read_pairs(path)) == 1
    with pytest.raises(NoPreferencePairsError, match="1 preference pairs, below data.min_pairs=2"):
        read_pairs(path, min_pairs=2)


def test_missing_pairs_file_is_named(world, tmp_path):
    cfg = stage_config("dpo", world, tmp_path / "dpo", f"data.pairs_file={tmp_path / 'nope.parquet'}")
    with pytest.raises(FileNotFoundError, match="data.pairs_file"):
        cfg.check_paths()


class _Constant:
    def score(self, answer: str, reference: str) -> float:
        return 0.5


def test_dpo_all_ties_raise_below_min_pairs(world, tmp_path):
    cfg = stage_config(
        "dpo", world, tmp_path / "tie", "data.max_prompts=2", "sampling.max_new_tokens=4", "data.min_pairs=1"
    )
    recipe = DPORecipe(cfg, ListLogger(), scorer=_Constant(), build_dataset=fake_reasoning_builder)
    with pytest.raises(NoPreferencePairsError, match="0 of 2 prompts"):
        recipe.setup()
    recipe.cleanup()


def test_dpo_all_ties_with_min_pairs_zero_saves_the_model_unchanged(world, tmp_path):
    logger = ListLogger()
    cfg = stage_config(
        "dpo", world, tmp_path / "tie0", "data.max_prompts=2", "sampling.max_new_tokens=4", "data.min_pairs=0"
    )
    result = _run(DPORecipe(cfg, logger, scorer=_Constant(), build_dataset=fake_reasoning_builder))
    assert result.steps == 0 and result.num_examples == 0 and math.isnan(result.final_loss)
    assert logger.series("dpo/pairs") == [(0, 0.0)]
    before, after = _weights(world.checkpoint), _weights(result.model_dir)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_audio_ci_end_to_end(world, tmp_path):
    logger = ListLogger()
    result = run_audio(stage_config("audio", world, tmp_path / "audio"), logger)
    assert result.steps == 4 and math.isfinite(result.final_loss)
    assert result.num_examples == 10  # 5 train images x 2 spoken queries
    assert logger.params["audio.derived.trainable_params"] > 0
    model = XMedVLMForConditionalGeneration.from_pretrained(result.model_dir)
    assert model.audio_encoder is not None


def test_dpo_run_function_uses_given_scorer(world, tmp_path, monkeypatch):
    from model.recipes import dpo

    monkeypatch.setattr(dpo, "default_dataset_builder", lambda: fake_reasoning_builder)
    cfg = stage_config(
        "dpo", world, tmp_path / "run", "train.max_steps=1", "train.save_every=1", "data.max_prompts=3"
    )
    result = run_dpo(cfg, ListLogger(), scorer=CharF1Scorer())
    assert result.model_dir == str(tmp_path / "run" / "model") and result.steps == 1


def test_recipes_reject_the_wrong_config(world, tmp_path):
    cfg = sft_config(world, tmp_path / "x")
    for recipe in (AudioRecipe, DPORecipe, ReasoningSFTRecipe):
        with pytest.raises(TypeError, match="needs a"):
            recipe(cfg)


def test_task_weights_reshape_the_epoch(world, tmp_path):
    cfg = sft_config(
        world, tmp_path / "mix", "data.task_weights={single_label: 2.0, vqa_closed: 0.5, guardrail: 0}"
    )
    recipe = SFTRecipe(cfg)
    recipe.setup()
    try:
        counts = {}
        for i in recipe._epoch_pool(0):
            counts[recipe.rows[i]["task"]] = counts.get(recipe.rows[i]["task"], 0) + 1
        # 6 rows per task in the tiny world: x2, a seeded half, dropped, unchanged
        assert counts == {"single_label": 12, "vqa_closed": 3, "region_detection": 6}
        assert recipe._epoch_pool(0) == recipe._epoch_pool(0)  # a pure function of (seed, epoch)
        planned = sorted(i for b in recipe._epoch_plan(0) for i in b)
        assert planned == sorted(recipe._epoch_pool(0))
    finally:
        recipe.cleanup()


def test_balanced_task_gets_equal_answer_shares(world, tmp_path):
    cfg = sft_config(world, tmp_path / "bal", "data.balanced_tasks=[single_label]")
    recipe = SFTRecipe(cfg)
    recipe.setup()
    try:
        rows = [i for i in range(len(recipe.rows)) if recipe.rows[i]["task"] == "single_label"]
        # make the six modality answers unbalanced: 4 x "CT", 1 each of two others
        for i in rows[:4]:
            recipe.rows[i]["conversations"][-1]["value"] = "CT"
        before = [recipe.rows[i]["conversations"][-1]["value"].lower() for i in rows]
        after = [
            recipe.rows[i]["conversations"][-1]["value"].lower()
            for i in recipe._epoch_pool(0)
            if recipe.rows[i]["task"] == "single_label"
        ]
        assert before.count("ct") == 4 and len(set(before)) == 3
        assert {a: after.count(a) for a in set(after)} == {a: 4 for a in set(before)}
        others = [i for i in recipe._epoch_pool(0) if recipe.rows[i]["task"] != "single_label"]
        assert sorted(others) == [
            i for i in range(len(recipe.rows)) if i not in rows
        ]  # other tasks untouched
    finally:
        recipe.cleanup()


def test_warmup_phase_trains_its_tasks_first(world, tmp_path):
    from model.recipes.sft import WARMUP_EPOCH

    cfg = sft_config(
        world,
        tmp_path / "warm",
        "data.task_weights={guardrail: 0}",
        "data.warmup={steps: 4, task_weights: {single_label: 1.0, guardrail: 0.5}}",
        "train.max_steps=null",
        "train.num_epochs=1",
    )
    recipe = SFTRecipe(cfg)
    recipe.setup()
    try:
        assert recipe.state.epoch == WARMUP_EPOCH
        warm = recipe._epoch_plan(WARMUP_EPOCH)
        # 6 single_label rows + a seeded half of the 6 guardrail rows = 9 rows, batch 4:
        # 3 batches per pass, so the 4 steps take a second, differently shuffled pass
        assert len(warm) == 4
        assert {recipe.rows[i]["task"] for b in warm for i in b} == {"single_label", "guardrail"}
        first_pass = sorted(i for b in warm[:3] for i in b)
        assert len(first_pass) == 9 and first_pass == sorted(recipe._epoch_pool(WARMUP_EPOCH))
        # guardrail is in the warm-up only; the main epoch keeps the other tasks
        main_tasks = {recipe.rows[i]["task"] for b in recipe._epoch_plan(0) for i in b}
        assert main_tasks == {"single_label", "vqa_closed", "region_detection"}
        assert recipe.total_steps == 4 + len(recipe._epoch_plan(0))
        result = recipe.train()
        assert result.steps == recipe.total_steps and recipe.state.epoch == 0
    finally:
        recipe.cleanup()


def test_replay_task_weights_steer_the_sample(world, tmp_path):
    dataset = tmp_path / "reasoning.parquet"
    fake_reasoning_builder(world.manifest_dir, out_path=dataset, data_root=world.data_root, split="train")

    def tasks(weights, rows, name):
        path, n = with_replay(
            dataset,
            replay_shards=str(world.shards),
            rows=rows,
            seed=0,
            out_path=tmp_path / name,
            is_main=True,
            task_weights=weights,
        )
        replayed = [r["task"] for r in iter_parquet_rows(path)][5:]
        assert len(replayed) == n
        return replayed

    # a heavy weight takes all six guardrail rows; weight 0 never replays a task
    assert tasks({"guardrail": 1e6}, 6, "heavy.parquet") == ["guardrail"] * 6
    assert "guardrail" not in tasks({"guardrail": 0}, 12, "none.parquet")
    # more rows asked than the kept tasks hold: all of them, no repeats
    assert (
        sorted(tasks({"guardrail": 0, "vqa_closed": 0, "region_detection": 0}, 50, "few.parquet"))
        == ["single_label"] * 6
    )


def test_dpo_step5_resampling_pairs_share_the_greedy_steps(world, tmp_path, monkeypatch):
    """``sampling.resample_from: step5``: K reports sampled after each prompt's own steps 1-4."""
    from model import generation
    from model.recipes import dpo

    steps_1_4 = (
        "Step 1: Identify the anatomical structures.\nA chest image.\n"
        "Step 2: Detect the regions.\n- left lung.\nStep 3: Describe each region.\n- clear.\n"
        "Step 4: Analyse the findings.\nNo prior study.\nStep 5:"
    )
    greedy = {"n": 0}

    def fake_greedy(model, processor, examples, *, max_new_tokens, batch_size=16):
        # the tiny untrained model writes no step headers: the first prompt's greedy answer has
        # steps 1-4 and a step-5 header, the second none (it gives no pair)
        greedy["n"] += len(examples)
        texts = [steps_1_4 + " Final report: clear.", "no steps at all"] + ["x"] * (len(examples) - 2)
        return [generation.SampledAnswer(t, [], [], True) for t in texts[: len(examples)]]

    monkeypatch.setattr(dpo, "batched_greedy", fake_greedy)
    logger = ListLogger()
    cfg = stage_config(
        "dpo",
        world,
        tmp_path / "s5",
        "data.max_prompts=2",
        "sampling.resample_from=step5",
        "sampling.step5_new_tokens=6",
        "data.min_pairs=1",
        "train.max_steps=1",
    )
    result = _run(DPORecipe(cfg, logger, scorer=CharF1Scorer(), build_dataset=fake_reasoning_builder))
    rows = pq.read_table(tmp_path / "s5" / "preference_pairs.parquet").to_pylist()
    assert greedy["n"] == 2 and len(rows) == 1 and result.steps == 1
    pair = rows[0]
    assert pair["chosen"].startswith(steps_1_4) and pair["rejected"].startswith(steps_1_4)
    assert pair["chosen"] != pair["rejected"] and pair["chosen_score"] > pair["rejected_score"]
    assert logger.series("dpo/prompts_sampled") == [(0, 1.0)]

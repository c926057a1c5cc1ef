"""Training assets: base model -> SFT -> reasoning SFT -> DPO -> audio, each a thin recipe call.

Every checkpoint records the dataset version (DVC md5 of the curated data), its parent checkpoint
and the Dagster run in its metadata, its MLflow run and ``xmed_provenance.json``.
"""

import dagster as dg

from assets._dvc_stage import curated_data_version
from assets._training import TRAIN_RETRY, train_stage
from assets.data import curated_dataset, image_manifest
from model.base import build_base_model
from orchestration.resources import DvcResource, MlflowResource, PathsResource
from orchestration.training import TrainingResource

__all__ = ["audio_checkpoint", "base_model", "dpo_checkpoint", "reasoning_checkpoint", "sft_checkpoint"]


@dg.asset(group_name="training", deps=[curated_dataset], retry_policy=TRAIN_RETRY, kinds={"pytorch"})
def base_model(
    context: dg.AssetExecutionContext,
    paths: PathsResource,
    dvc: DvcResource,
    mlflow: MlflowResource,
    training: TrainingResource,
) -> dg.MaterializeResult:
    """Tokenizer trained on the curated train split + the initialised (untrained) tiny VLM."""
    import mlflow as mlf

    version = curated_data_version(dvc, paths)
    out = training.model_dir("base_model")
    with mlflow.run(context, run_name="train:base_model", data_version=version):
        summary = build_base_model(
            shards_dir=paths.data_root / "curated" / "shards",
            architecture_path=training.architecture_path(),
            out_dir=out,
            init_seed=0,
        )
        mlf.log_dict(summary, "base_model.json")
        mlf.log_artifacts(str(out), artifact_path="model")
    return dg.MaterializeResult(
        data_version=dg.DataVersion(summary["weights_sha256"][:32]),
        metadata={"model_dir": dg.MetadataValue.path(str(out)), "data_version": version,
                  "summary": dg.MetadataValue.json(summary)},
    )


def _stage_asset(name: str, stage: str, run: str, parent: str, extra_deps=()):
    @dg.asset(name=name, group_name="training", deps=[parent, *extra_deps], retry_policy=TRAIN_RETRY,
              kinds={"pytorch", "deepspeed"}, description=f"The `{stage}` recipe on DeepSpeed, from `{parent}`.")
    def _asset(
        context: dg.AssetExecutionContext,
        paths: PathsResource,
        dvc: DvcResource,
        mlflow: MlflowResource,
        training: TrainingResource,
    ) -> dg.MaterializeResult:
        return train_stage(context, stage=stage, run=run, parent=_PARENT_STAGE[parent], paths=paths, dvc=dvc,
                           mlflow=mlflow, training=training)

    return _asset


_PARENT_STAGE = {"base_model": "base_model", "sft_checkpoint": "sft", "reasoning_checkpoint": "reasoning_sft",
                 "dpo_checkpoint": "dpo"}

# recipes are imported when the asset runs (torch/DeepSpeed stay out of Definitions loading)
sft_checkpoint = _stage_asset("sft_checkpoint", "sft", "model.recipes.sft:run_sft", "base_model")
reasoning_checkpoint = _stage_asset(
    "reasoning_checkpoint", "reasoning_sft", "model.recipes.reasoning_sft:run_reasoning_sft", "sft_checkpoint",
    extra_deps=[image_manifest],
)
dpo_checkpoint = _stage_asset(
    "dpo_checkpoint", "dpo", "model.recipes.dpo:run_dpo", "reasoning_checkpoint", extra_deps=[image_manifest]
)
audio_checkpoint = _stage_asset(
    "audio_checkpoint", "audio", "model.recipes.audio:run_audio", "dpo_checkpoint", extra_deps=[image_manifest]
)

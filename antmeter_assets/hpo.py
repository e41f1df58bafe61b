"""Hyperparameter search assets: one Optuna study per model type on the training dataset's purged
walk-forward folds; its best parameters become the next candidate's tuned settings."""

import json

import dagster as dg

from antmeter_assets.models import DATASET_DIR, MODEL_TYPES, training_dataset, tuned_path
from antmeter_resources import AntmeterSettings, MarketStoreResource, MlflowResource

TRAINER_QUEUE = {"dagster-celery/queue": "trainer"}


def storage_url(settings: AntmeterSettings, store: MarketStoreResource) -> str:
    """The study storage: ``settings.hpo_storage_url``, by default the project's database (the market
    store: SQLite on a laptop, PostgreSQL in deployment)."""
    return settings.hpo_storage_url or store.url


def build_hpo_asset(model_type: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=f"{model_type}_hpo",
        group_name="models",
        kinds={"optuna", "pytorch", "mlflow"},
        deps=[training_dataset],
        pool="training",
        op_tags=TRAINER_QUEUE,
        tags={"antmeter/model_type": model_type},
    )
    def hpo(
        context: dg.AssetExecutionContext,
        settings: AntmeterSettings,
        store: MarketStoreResource,
        mlflow: MlflowResource,
    ) -> dg.MaterializeResult:
        """An Optuna study over the preset's search space, each trial scored on the purged walk-forward
        folds (never the holdout) and pruned from inside Lightning; stored in the project's database so
        a killed study resumes; budget ``hpo_trials`` / ``hpo_minutes``; every trial a nested MLflow run.
        The best parameters are written for the next candidate training (``tuned.json``)."""
        import sqlalchemy as sa

        from antmeter.learn.datasets import load_samples
        from antmeter.learn.hpo import HpoConfig, run_study
        from antmeter.learn.recipe import RecipeConfig
        from antmeter.registry.tracking import log_study

        target = tuned_path(settings, model_type)
        if settings.hpo_trials == 0:
            target.write_text(json.dumps({"params": {}, "study": None}))
            return dg.MaterializeResult(metadata={"trials": 0, "note": "HPO switched off (hpo_trials = 0)"})
        samples = load_samples(settings.path(*DATASET_DIR, "x").parent)
        url = storage_url(settings, store)
        config = HpoConfig(
            recipe=RecipeConfig(
                model_type=model_type, preset=settings.preset, primary_horizon=settings.primary_horizon
            ),
            n_trials=settings.hpo_trials,
            timeout_minutes=settings.hpo_minutes,
            storage_url=url,
        )
        work = settings.path("runs", model_type, context.run_id, "hpo", "x").parent
        summary = run_study(samples, config, work, progress=context.log.info)
        mlflow.client()
        run_id = log_study(summary, model_type, tags={"dagster_run_id": context.run_id})
        target.write_text(
            json.dumps(
                {"params": summary.best_params, "study": summary.study_name, "value": summary.best_value}
            )
        )
        return dg.MaterializeResult(
            metadata={
                "study": summary.study_name,
                "storage": sa.make_url(url).render_as_string(hide_password=True),
                "trials": dg.MetadataValue.json(summary.counts),
                "trials_run_now": summary.ran_now,
                "best_value": summary.best_value if summary.best_value is not None else "none",
                "best_params": dg.MetadataValue.json(summary.best_params),
                "importance": dg.MetadataValue.json(summary.importance),
                "pictures": dg.MetadataValue.md(summary.pictures_markdown()),
                "mlflow_run_id": run_id,
                "seconds": round(summary.seconds, 1),
            }
        )

    return hpo


hpo_assets = [build_hpo_asset(t) for t in MODEL_TYPES]

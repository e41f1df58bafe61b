"""The main job: materialize the whole default asset graph into the local Dagster instance.

Runs every job of the graph in dependency order, in this one process (each import of torch,
Lightning and MLflow costs seconds, so nothing is re-imported per run), one Dagster run per
partition, all recorded in ``$DAGSTER_HOME`` so ``bash run.sh ui`` shows them. Usage::

    bash run.sh main [--days 14] [--symbols BTCUSDT,ETHUSDT] [--end-date YYYY-MM-DD]
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from antmeter_assets.partitions import DEFAULT_SYMBOLS, START_DATE, symbol_day_key, symbol_partitions


@dataclass
class Phase:
    """One job run over a list of partition keys (None = unpartitioned)."""

    job: str
    partitions: list[str | dg.MultiPartitionKey | None]
    done: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def plan(symbols: list[str], days: list[str], phases: list[str]) -> list[Phase]:
    """The runs of the main job, in dependency order."""
    per_symbol_day = [symbol_day_key(s, d) for d in days for s in symbols]
    partitions = {
        "harvest_job": per_symbol_day,
        "news_job": list(days),
        "export_job": list(days[:-1]),
        "feature_job": per_symbol_day,
        "training_job": [None],
        "pattern_job": [None],
        "live_job": [None],
    }
    return [Phase(job, partitions[job]) for job in phases if job in partitions]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days",
        type=int,
        default=int(os.environ.get("ANTMETER_MAIN_DAYS", 14)),
        help="complete days of history before today (default 14)",
    )
    parser.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS), help="comma-separated symbols")
    parser.add_argument("--end-date", default=None, help="the last (live) day, default today UTC")
    args = parser.parse_args(argv)

    # The example plants chart patterns in the simulator and harvests the days the shipped
    # annotation file covers, so the pattern classifiers have their ground truth (antmeter_assets.patterns).
    os.environ.setdefault("ANTMETER_SIM_PATTERNS", "on")
    from antmeter_assets.definitions import defs
    from antmeter_assets.patterns import example_annotation_days

    started = time.monotonic()
    instance = dg.DagsterInstance.get()
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    end = pd.Timestamp(args.end_date or pd.Timestamp.now(tz="UTC").date())
    first = max(end - pd.Timedelta(days=args.days), pd.Timestamp(START_DATE))
    days = [str(d.date()) for d in pd.date_range(first, end, freq="D")]
    if os.environ["ANTMETER_SIM_PATTERNS"] == "on":
        days = sorted(set(days) | {d for d in example_annotation_days() if d >= START_DATE})
    new = [s for s in symbols if not instance.has_dynamic_partition(symbol_partitions.name, s)]
    if new:
        instance.add_dynamic_partitions(symbol_partitions.name, new)

    job_names = [j.name for j in defs.resolve_all_job_defs()]
    phases = plan(
        symbols,
        days,
        [
            j
            for j in (
                "harvest_job",
                "news_job",
                "export_job",
                "feature_job",
                "training_job",
                "pattern_job",
                "live_job",
            )
            if j in job_names
        ],
    )
    print(
        f"Antmeter main job: {len(symbols)} symbols x {len(days)} days ({days[0]} .. {days[-1]}), "
        f"DAGSTER_HOME={instance.root_directory}",
        flush=True,
    )
    for phase in phases:
        job = defs.resolve_job_def(phase.job)
        t0 = time.monotonic()
        for i, key in enumerate(phase.partitions, 1):
            result = job.execute_in_process(
                instance=instance,
                partition_key=key,
                raise_on_error=False,
                tags={"antmeter/launched_by": "main_job"},
            )
            if result.success:
                phase.done += 1
            else:
                phase.failed.append(f"{key}: run {result.run_id}")
            label = key if key is not None else "-"
            print(
                f"  [{phase.job} {i}/{len(phase.partitions)}] {label}: "
                f"{'ok' if result.success else 'FAILED'}",
                flush=True,
            )
        phase.seconds = time.monotonic() - t0
    return summarize(phases, instance, time.monotonic() - started)


def summarize(phases: list[Phase], instance: dg.DagsterInstance, seconds: float) -> int:
    """Print what was materialized, row counts, where results are and how to look at them."""
    from antmeter_resources import default_data_dir

    print("\nSummary")
    for phase in phases:
        print(f"  {phase.job:<13} {phase.done}/{len(phase.partitions)} runs ok in {phase.seconds:6.1f}s")
        for failure in phase.failed:
            print(f"      failed: {failure}")
    for key in instance.get_asset_keys():
        record = instance.get_latest_materialization_event(key)
        if record is None or record.asset_materialization is None:
            continue
        meta = record.asset_materialization.metadata
        facts = {
            k: v.value
            for k, v in meta.items()
            if k in ("rows", "articles", "samples", "model_version", "gate", "predictions", "verified")
        }
        print(f"  {key.to_user_string():<28} {facts}")
    data = default_data_dir()
    print(f"\nResults: market store and files under {data}")
    print(f"Dagster runs: DAGSTER_HOME={instance.root_directory}; open the UI with `bash run.sh ui`")
    print("MLflow runs and registry: `bash run.sh mlflow`")
    print(f"Total {seconds:.1f}s")
    return 0 if all(not p.failed for p in phases) else 1


if __name__ == "__main__":
    sys.exit(run())

"""The main job: materialize the whole default asset graph into the local Dagster instance.

Runs every job of the graph in dependency order, in this one process (each import of torch,
Lightning and MLflow costs seconds, so nothing is re-imported per run), one Dagster run per
partition, all recorded in ``$DAGSTER_HOME`` so ``bash run.sh ui`` shows them. Every run carries
the code location's origin (location ``antmeter``, the one ``bash run.sh ui`` loads), so it is
listed on its job's page and the Overview timeline and can be re-executed from the UI.

The console shows one progress bar per phase, one line per trained model, the gate decisions
and a closing summary; the full Dagster logs stay in the instance (``--verbose`` prints them too).
Usage::

    bash run.sh main [--days 14] [--symbols BTCUSDT,ETHUSDT] [--end-date YYYY-MM-DD] [--verbose]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

from antmeter.market.symbols import InvalidSymbolError, validate_symbols

# The code location every main-job run is recorded under (deploy/local/workspace.yaml loads it
# under this name for `bash run.sh ui`; the deployment's workspace.yaml uses the same name).
LOCATION_NAME = "antmeter"
DEFINITIONS_MODULE = "antmeter_assets.definitions"
REPOSITORY_NAME = "__repository__"
REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("harvest_job", "news_job", "export_job", "feature_job", "training_job", "pattern_job", "live_job")
SUMMARY_FACTS = ("rows", "articles", "samples", "model_version", "gate", "predictions", "verified")
_EPOCH = re.compile(r"epoch (\d+): (.*)")
_FOLD = re.compile(r"^(\w+) seed \d+ fold (\d+)/(\d+)")


@dataclass
class Phase:
    """One job run over a list of partition keys (None = unpartitioned)."""

    job: str
    partitions: list[str | dg.MultiPartitionKey | None]
    done: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_ids: list[str] = field(default_factory=list)


def plan(symbols: list[str], days: list[str], phases: list[str]) -> list[Phase]:
    """The runs of the main job, in dependency order."""
    from antmeter_assets.partitions import symbol_day_key

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


class OriginRunner:
    """Executes jobs of the code location in this process as runs that carry its origin.

    Each run is created with the location's remote job origin (so the UI lists it on the job's page,
    on the Overview timeline and can re-execute it) and its Python origin, then executed in process
    through a reconstructable job (the in-process executor: no subprocess re-imports torch).
    """

    def __init__(self, instance: dg.DagsterInstance, verbose: bool):
        from dagster._core.definitions.reconstruct import ReconstructableRepository
        from dagster._core.remote_origin import (
            ManagedGrpcPythonEnvCodeLocationOrigin,
            RemoteJobOrigin,
            RemoteRepositoryOrigin,
        )
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        self.instance = instance
        self.repository = ReconstructableRepository.for_module(
            DEFINITIONS_MODULE, "defs", working_directory=str(REPO_ROOT)
        )
        location = ManagedGrpcPythonEnvCodeLocationOrigin(
            LoadableTargetOrigin(
                executable_path=sys.executable,
                module_name=DEFINITIONS_MODULE,
                working_directory=str(REPO_ROOT),
            ),
            location_name=LOCATION_NAME,
        )
        self._repository_origin = RemoteRepositoryOrigin(location, REPOSITORY_NAME)
        self._job_origin = RemoteJobOrigin
        self.run_config = {
            "execution": {"config": {"in_process": {}}},
            # the console shows the progress display; every event still goes to the instance
            "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "CRITICAL"}}},
        }

    def create(self, job_name: str, partition_key: str | None, tags: dict[str, str]) -> dg.DagsterRun:
        from antmeter_assets.definitions import defs

        job = defs.resolve_job_def(job_name)
        recon = self.repository.get_reconstructable_job(job_name)
        run_tags = dict(job.tags) | tags
        if partition_key is not None:
            run_tags |= job.partitions_def.get_tags_for_partition_key(partition_key)
        return self.instance.create_run_for_job(
            job,
            run_config=self.run_config,
            tags=run_tags,
            remote_job_origin=self._job_origin(self._repository_origin, job_name),
            job_code_origin=recon.get_python_origin(),
        )

    def execute(self, run: dg.DagsterRun) -> bool:
        from dagster._core.execution.api import execute_run

        recon = self.repository.get_reconstructable_job(run.job_name)
        return execute_run(recon, run, self.instance).success


class RunWatcher:
    """Follows a running run's log messages (from the instance) for the progress display."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, on_message):
        self.instance, self.run_id, self.on_message = instance, run_id, on_message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._cursor = None

    def __enter__(self) -> RunWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._drain()

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            self._drain()

    def _drain(self) -> None:
        try:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self._cursor)
        except Exception:  # a read racing the writer; the next poll retries
            return
        self._cursor = connection.cursor
        for record in connection.records:
            entry = record.event_log_entry
            if entry.user_message and not entry.is_dagster_event:
                self.on_message(entry.step_key or "", entry.user_message)


class EpochLines:
    """Collects the training log into one line per model: epochs per fold and the last losses."""

    def __init__(self) -> None:
        self.models: dict[str, dict[int, list[str]]] = {}
        self.current: dict[str, int] = {}

    def add(self, step_key: str, message: str) -> str | None:
        """Record one log message; returns a short status for the live display."""
        model = step_key.removesuffix("_candidate")
        fold = _FOLD.match(message.strip())
        if fold:
            self.current[model] = int(fold.group(2))
            self.models.setdefault(model, {})[int(fold.group(2))] = []
            return f"{model} fold {fold.group(2)}/{fold.group(3)}"
        epoch = _EPOCH.search(message)
        if epoch and model in self.current:
            self.models[model][self.current[model]].append(epoch.group(2))
            return f"{model} fold {self.current[model]} epoch {epoch.group(1)}: {epoch.group(2)[:60]}"
        return None

    def lines(self) -> list[str]:
        out = []
        for model, folds in self.models.items():
            parts = []
            for fold, epochs in folds.items():
                last = _losses(epochs[-1]) if epochs else ""
                parts.append(f"fold {fold}: {len(epochs)} epochs{' (' + last + ')' if last else ''}")
            out.append(f"  {model}: " + "; ".join(parts))
        return out


def _losses(values: str) -> str:
    pairs = dict(p.split("=", 1) for p in values.split(", ") if "=" in p)
    return ", ".join(f"{k} {pairs[k]}" for k in ("train_loss", "val_loss") if k in pairs)


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--verbose" not in argv:
        _quiet_console()  # before the code location is imported: its Beta warnings stay quiet
    from antmeter_assets.partitions import DEFAULT_SYMBOLS, START_DATE, add_symbols

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
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="print every Dagster log line (they are in the instance anyway)",
    )
    args = parser.parse_args(argv)

    try:
        symbols = validate_symbols([s.strip().upper() for s in args.symbols.split(",") if s.strip()])
    except InvalidSymbolError as exc:
        parser.error(f"--symbols: {exc}")
    from rich.console import Console

    # The example plants chart patterns in the simulator and harvests the days the shipped
    # annotation file covers, so the pattern classifiers have their ground truth (antmeter_assets.patterns).
    os.environ.setdefault("ANTMETER_SIM_PATTERNS", "on")
    from antmeter_assets.definitions import defs
    from antmeter_assets.patterns import example_annotation_coverage

    console = Console(highlight=False, soft_wrap=True)
    started = time.monotonic()
    instance = dg.DagsterInstance.get()
    add_symbols(instance, symbols)
    end = pd.Timestamp(args.end_date or pd.Timestamp.now(tz="UTC").date())
    first = max(end - pd.Timedelta(days=args.days), pd.Timestamp(START_DATE))
    days = [str(d.date()) for d in pd.date_range(first, end, freq="D")]
    skipped = set()
    annotated_days, annotated_symbols = example_annotation_coverage()
    if os.environ["ANTMETER_SIM_PATTERNS"] == "on" and set(annotated_symbols) <= set(symbols):
        days = sorted(set(days) | {d for d in annotated_days if d >= START_DATE})
    else:  # the annotations name symbols this run does not harvest: no ground truth to learn from
        skipped.add("pattern_job")
        console.print(
            f"pattern_job skipped: the annotation files cover {annotated_symbols}, this run harvests {symbols}"
        )

    job_names = {j.name for j in defs.resolve_all_job_defs()}
    phases = plan(symbols, days, [j for j in PHASES if j in job_names and j not in skipped])
    console.print(
        f"[bold]Antmeter main job[/bold]: {len(symbols)} symbols x {len(days)} days "
        f"({days[0]} .. {days[-1]}), DAGSTER_HOME={instance.root_directory}"
    )
    runner = OriginRunner(instance, args.verbose)
    for phase in phases:
        _run_phase(phase, runner, console, args.verbose)
    return summarize(phases, instance, time.monotonic() - started, symbols, days, console)


def _run_phase(phase: Phase, runner: OriginRunner, console, verbose: bool) -> None:
    """Run a phase's partitions one after another under a progress bar (done/total, elapsed, ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    epochs = EpochLines()
    columns = [
        TextColumn(f"{phase.job:<13}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    ]
    t0 = time.monotonic()
    with Progress(*columns, console=console, disable=verbose or not console.is_terminal) as progress:
        task = progress.add_task(phase.job, total=len(phase.partitions), status="")

        def show(step_key: str, message: str) -> None:
            status = epochs.add(step_key, message)
            if status:
                progress.update(task, status=status)

        for key in phase.partitions:
            run = runner.create(phase.job, key, {"antmeter/launched_by": "main_job"})
            phase.run_ids.append(run.run_id)
            with RunWatcher(runner.instance, run.run_id, show):
                ok = runner.execute(run)
            if ok:
                phase.done += 1
            else:
                phase.failed.append(f"{key if key is not None else '-'}: run {run.run_id}")
            progress.update(task, advance=1, status="" if ok else f"[red]{len(phase.failed)} failed")
    phase.seconds = time.monotonic() - t0
    mark = "ok" if not phase.failed else f"[red]{len(phase.failed)} FAILED[/red]"
    console.print(f"{phase.job:<13} {phase.done}/{len(phase.partitions)} runs {mark} in {phase.seconds:.1f}s")
    for line in epochs.lines():
        console.print(line)
    if phase.job == "training_job":
        for line in gate_lines(runner.instance):
            console.print(line)


def gate_lines(instance: dg.DagsterInstance) -> list[str]:
    """Each model type's newest gate decision with its reason's first line."""
    lines = []
    for key in sorted(instance.get_asset_keys(), key=lambda k: k.to_user_string()):
        if not key.to_user_string().endswith("_champion"):
            continue
        record = instance.get_latest_materialization_event(key)
        if record is None or record.asset_materialization is None:
            continue
        meta = record.asset_materialization.metadata
        gate = meta["gate"].value if "gate" in meta else "?"
        reason = str(meta["reason"].value).strip().splitlines()[0] if "reason" in meta else ""
        lines.append(f"  gate {key.to_user_string()}: {gate}. {reason[:160]}{_edge_ratios(instance, key)}")
    return lines


def _edge_ratios(instance: dg.DagsterInstance, champion: dg.AssetKey) -> str:
    """The candidate's edge ratios (share of the oracle's edge over the majority class) as a suffix."""
    candidate = dg.AssetKey(champion.to_user_string().removesuffix("_champion") + "_candidate")
    record = instance.get_latest_materialization_event(candidate)
    if record is None or record.asset_materialization is None:
        return ""
    shown = [
        f"{name} {value.value:.2f}" if isinstance(value.value, float) else f"{name} {value.value}"
        for name, value in record.asset_materialization.metadata.items()
        if name.startswith("edge_ratio_")
    ]
    return f" ({', '.join(shown)})" if shown else ""


def partition_coverage(symbols: list[str], days: list[str]) -> list[str]:
    """Which partitions the run filled, why the rest look missing, and how to fill more."""
    from antmeter_assets.partitions import COVERAGE_NOTE, daily_partitions

    total = len(daily_partitions.get_partition_keys())
    return [
        f"Partitions filled: {len(days)} of {total} days ({days[0]} .. {days[-1]}) x {len(symbols)} "
        f"symbols ({', '.join(symbols)}).",
        COVERAGE_NOTE,
    ]


def summarize(
    phases: list[Phase],
    instance: dg.DagsterInstance,
    seconds: float,
    symbols: list[str],
    days: list[str],
    console=None,
) -> int:
    """Print what was materialized, row counts, where results are and how to look at them."""
    from rich.console import Console

    from antmeter_resources import default_data_dir

    console = console or Console(highlight=False, soft_wrap=True)
    console.print("\n[bold]Summary[/bold]")
    for phase in phases:
        console.print(
            f"  {phase.job:<13} {phase.done}/{len(phase.partitions)} runs ok in {phase.seconds:6.1f}s"
        )
        for failure in phase.failed:
            console.print(f"      [red]failed[/red]: {failure}")
    for key in instance.get_asset_keys():
        record = instance.get_latest_materialization_event(key)
        if record is None or record.asset_materialization is None:
            continue
        meta = record.asset_materialization.metadata
        facts = {k: v.value for k, v in meta.items() if k in SUMMARY_FACTS}
        console.print(f"  {key.to_user_string():<28} {facts}")
    for line in partition_coverage(symbols, days):
        console.print(line)
    data = os.environ.get("ANTMETER_DATA_DIR") or default_data_dir()
    console.print(f"\nResults: market store and files under {data}")
    console.print(
        f"Dagster runs: DAGSTER_HOME={instance.root_directory}; open the UI with `bash run.sh ui` "
        "(full run logs are there)"
    )
    console.print("MLflow runs and registry: `bash run.sh mlflow`")
    console.print(f"Total {seconds:.1f}s")
    return 0 if all(not p.failed for p in phases) else 1


def _quiet_console() -> None:
    """Keep library chatter (INFO logs, Beta/Preview warnings) off the console."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("mlflow", "alembic", "lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")


if __name__ == "__main__":
    sys.exit(run())

"""The code location loads, stays light, and holds every job, schedule, sensor and asset the README names."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

from antmeter_assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]
HEAVY_MODULES = ("torch", "mlflow", "lightning", "onnxruntime", "sklearn")
README_SCHEDULES = (
    "harvest_schedule",
    "news_schedule",
    "export_schedule",
    "predictions_schedule",
    "verification_schedule",
    "weekly_retrain_schedule",
    "retention_schedule",
)
README_SENSORS = ("antmeter_automation", "retrain_on_drift", "run_failure_alert")


def readme() -> str:
    return (REPO / "README.md").read_text()


def test_definitions_are_loadable():
    dg.Definitions.validate_loadable(defs)


def test_loading_the_code_location_imports_no_heavy_library():
    probe = (
        "import sys, antmeter_assets.definitions; "
        f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules) or 'none')"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none"


def test_every_schedule_and_sensor_of_the_readme_exists():
    text = readme()
    documented_schedules = set(re.findall(r"`(\w+_schedule)`", text))
    assert documented_schedules == set(README_SCHEDULES)
    for name in README_SENSORS:
        assert f"`{name}`" in text, name
    schedules = {s.name: s for s in defs.schedules}
    sensors = {s.name: s for s in defs.sensors}
    assert set(README_SCHEDULES) <= set(schedules)
    assert set(README_SENSORS) <= set(sensors)
    # every schedule's job resolves, and every job a sensor can launch exists
    job_names = {j.name for j in defs.resolve_all_job_defs()}
    for schedule in schedules.values():
        assert schedule.job_name in job_names, schedule.name
    assert {
        "incremental_retrain_job",
        "training_job",
        "harvest_job",
        "news_job",
        "export_job",
        "predictions_job",
        "verification_job",
        "retention_job",
        "feature_job",
        "live_job",
    } <= job_names
    # the sensor retrains one model type at a time: that type's incremental and full jobs
    targets = {t.job_name for t in sensors["retrain_on_drift"].targets}
    for model_type in ("lstm", "transformer", "patchtst"):
        assert {f"{model_type}_incremental_retrain_job", f"{model_type}_training_job"} <= targets
        selected = defs.resolve_job_def(
            f"{model_type}_incremental_retrain_job"
        ).asset_layer.executable_asset_keys
        assert {k.to_user_string() for k in selected} == {
            "training_dataset",
            f"{model_type}_candidate",
            f"{model_type}_champion",
        }


def test_every_asset_of_the_readme_exists():
    rows = re.findall(r"^\| \w+ \| `([^`]+)` \|", readme(), flags=re.MULTILINE)
    names = []
    for row in rows:
        braces = re.fullmatch(r"\{([\w,]+)\}(\w+)", row)
        names += [f"{t}{braces.group(2)}" for t in braces.group(1).split(",")] if braces else [row]
    assert len(names) >= 13
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(names) <= keys, set(names) - keys

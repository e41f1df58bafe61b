"""The Dagster UI on the instance the reduced main job filled: a candidate's plots are pictures, and
the main job's runs are listed on their job's page (they carry the code location's origin).

Also makes the README's two screenshots (asset graph, a candidate's metadata) under docs/screenshots/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from antmeter_deploy.topology import free_port
from antmeter_tests.browser.conftest import REPO, FilledPipeline, screenshot

STARTUP_TIMEOUT_S = 120
LOCATION = "antmeter"


@pytest.fixture(scope="module")
def dagster_ui(filled_pipeline: FilledPipeline) -> Iterator[str]:
    """dagster-webserver on a free loopback port, on the filled instance, loading the code location
    the way `bash run.sh ui` does (deploy/local/workspace.yaml, location "antmeter")."""
    port = free_port()
    env = {**filled_pipeline.env, "PYTHONPATH": str(REPO)}
    log = filled_pipeline.root / "webserver.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("dagster-webserver")),
                "-w",
                str(REPO / "deploy" / "local" / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=filled_pipeline.dagster_home,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, log.read_text()[-4000:]
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def _instance(filled_pipeline: FilledPipeline) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(filled_pipeline.dagster_home))


def test_main_job_runs_carry_the_code_location_origin(filled_pipeline):
    instance = _instance(filled_pipeline)
    runs = instance.get_runs(dg.RunsFilter(tags={"antmeter/launched_by": "main_job"}))
    assert {r.job_name for r in runs} >= {"harvest_job", "feature_job", "training_job", "live_job"}
    for run in runs:
        assert run.remote_job_origin is not None, run.job_name
        assert run.remote_job_origin.location_name == LOCATION
        assert run.remote_job_origin.job_name == run.job_name
        assert run.job_code_origin is not None
    labelled = instance.get_runs(dg.RunsFilter(tags={".dagster/repository": f"__repository__@{LOCATION}"}))
    assert {r.run_id for r in labelled} == {r.run_id for r in runs}
    # the console shows progress and the closing summary, not Dagster's DEBUG stream
    assert "DEBUG" not in filled_pipeline.log
    assert "training_job  1/1 runs ok" in filled_pipeline.log
    assert "Partitions filled:" in filled_pipeline.log and "gate lstm_champion:" in filled_pipeline.log


PLOTS = ("confusion_matrix", "calibration", "predictions_vs_outcomes")
PAGE_TIMEOUT_MS = 90_000
# Dagster's one-time "Join the community" dialog would cover the pages
SKIP_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', '1')"


def _show_plot(page, name: str) -> dict:
    """Open a plot's Markdown metadata (a dialog in the UI) and return its loaded <img>'s state."""
    row = page.locator("tr").filter(has=page.get_by_text(f"plot_{name}", exact=True))
    row.get_by_text("[Show Markdown]").click()
    image = page.get_by_role("dialog").locator("img[src^='data:image/png']")
    image.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    return image.evaluate("img => ({alt: img.alt, width: img.naturalWidth, height: img.naturalHeight})")


def test_candidate_page_shows_plots_and_training_job_lists_its_run(dagster_ui, filled_pipeline, page):
    instance = _instance(filled_pipeline)
    (training,) = instance.get_runs(dg.RunsFilter(job_name="training_job"))
    candidate = f"{filled_pipeline.model_type}_candidate"
    page.context.add_init_script(SKIP_COMMUNITY_DIALOG)

    page.goto(f"{dagster_ui}/locations/{LOCATION}/asset-groups/models/lineage")
    page.get_by_text(candidate, exact=True).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function("() => !document.body.innerText.includes('Loading...')", timeout=PAGE_TIMEOUT_MS)
    screenshot(page, "asset_graph")

    page.goto(f"{dagster_ui}/assets/{candidate}?view=events")
    page.get_by_text("holdout_vs_baselines").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    for name in PLOTS:
        image = _show_plot(page, name)
        assert image["alt"] == name.replace("_", " ") and image["width"] > 100, image
        if name == "calibration":
            screenshot(page, "candidate_metadata")
        page.keyboard.press("Escape")
        page.get_by_role("dialog").wait_for(state="detached", timeout=PAGE_TIMEOUT_MS)

    page.goto(f"{dagster_ui}/locations/{LOCATION}/jobs/training_job/runs")
    page.get_by_text(training.run_id[:8]).first.wait_for(timeout=PAGE_TIMEOUT_MS)

    # the run can be re-executed from its page, against the job it ran (no "may be different" warning)
    page.goto(f"{dagster_ui}/runs/{training.run_id}")
    reexecute = page.get_by_role("button", name="Re-execute all")
    reexecute.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.includes('Re-execute all')"
        " && !b.disabled)",
        timeout=PAGE_TIMEOUT_MS,
    )
    reexecute.hover()
    page.wait_for_timeout(1_500)
    assert page.get_by_text("may be different than the one used for the original run").count() == 0
    assert page.console_errors == []

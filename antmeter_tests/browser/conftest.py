"""Shared fixtures of the browser tests: one filled pipeline, one headless Chromium.

``filled_pipeline`` runs a reduced main job once per session (``bash run.sh main`` with 1 symbol,
2 days, 1 model type) into its own DAGSTER_HOME, data directory, market store and MLflow store, as a
user would; every browser test (Dagster UI, API dashboard) reads that one result. ``browser`` is
Debian's ``chromium`` (``/usr/bin/chromium``, or ``ANTMETER_CHROMIUM``) driven by Playwright —
Playwright's own browser download is never used. ``page`` fails its test on any console error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ANTMETER_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = REPO / "docs" / "screenshots"
MAIN_JOB_TIMEOUT_S = 900

pytestmark = pytest.mark.browser


@dataclass(frozen=True)
class FilledPipeline:
    """Where the reduced main job left its results, and the environment that reaches them."""

    root: Path
    env: dict[str, str]
    symbol: str
    model_type: str
    log: str

    @property
    def dagster_home(self) -> Path:
        return Path(self.env["DAGSTER_HOME"])

    @property
    def data_dir(self) -> Path:
        return Path(self.env["ANTMETER_DATA_DIR"])


@pytest.fixture(scope="package")
def filled_pipeline(tmp_path_factory) -> FilledPipeline:
    """The reduced main job (1 symbol, 2 days, 1 model type), run once for every browser test."""
    root = tmp_path_factory.mktemp("filled_pipeline")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("ANTMETER_", "DAGSTER_", "MLFLOW_"))
    }
    env = {
        **inherited,
        "DAGSTER_HOME": str(home),
        "ANTMETER_DATA_DIR": str(root / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "ANTMETER_MLFLOW_ARTIFACT_ROOT": (root / "mlartifacts").as_uri(),
        "ANTMETER_MODEL_TYPES": "lstm",
        "ANTMETER_SIM_PATTERNS": "on",  # as `bash run.sh main` / `bash run.sh ui` set it
        "PYTHONUNBUFFERED": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "antmeter_assets.main_job", "--days", "2", "--symbols", "BTCUSDT"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=MAIN_JOB_TIMEOUT_S,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    return FilledPipeline(root=root, env=env, symbol="BTCUSDT", model_type="lstm", log=log)


@pytest.fixture(scope="package")
def browser() -> Iterator:
    """Headless Debian Chromium through Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh 1280x900 page; the test fails if the page logs a console error or throws."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors
    try:
        yield page
    finally:
        context.close()


def screenshot(page, name: str) -> Path:
    """Save a screenshot under docs/screenshots/ (the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path

"""antmeter.learn.hpo: Optuna studies on the purged walk-forward folds, pruned from inside Lightning,
stored in a real database (SQLite here; Postgres in the Dagster test) and resumed after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from antmeter.learn.hpo import GRACE_S, HpoConfig, open_study, run_study
from antmeter.learn.models import load_preset, load_search_space
from antmeter_tests.unit import hpo_child

REPO = Path(__file__).resolve().parents[2]
MAX_EPOCHS = load_preset("ci", "lstm")["training"]["max_epochs"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def samples():
    return hpo_child.samples()


def test_study_scores_trials_on_folds_and_draws_pictures(samples, tmp_path):
    config = HpoConfig(recipe=hpo_child.RECIPE, n_trials=2, storage_url=f"sqlite:///{tmp_path / 'o.db'}")
    summary = run_study(samples, config, tmp_path / "work", progress=lambda _m: None)
    assert summary.counts.get("complete", 0) + summary.counts.get("pruned", 0) == 2
    assert set(summary.best_params) == set(load_search_space("ci", "lstm"))
    best = next(t for t in summary.trials if t["number"] == summary.best_trial)
    folds = best["user_attrs"]["fold_val_loss"]
    assert len(folds) == hpo_child.RECIPE.n_folds and summary.best_value == pytest.approx(sum(folds) / 2)
    assert 0.3 < best["user_attrs"]["fold_log_loss_5"][0] < 1.0
    # the running mean reported during the last fold ends at the trial's value (mean of best fold losses)
    steps = sorted(best["intermediate"])
    assert steps[0] == 0 and steps[-1] >= MAX_EPOCHS
    assert min(best["intermediate"][s] for s in steps if s >= MAX_EPOCHS) <= summary.best_value + 1e-9
    for name, png in summary.pictures.items():
        assert png.startswith(b"\x89PNG") and len(png) <= 100_000, name
    assert "data:image/png;base64," in summary.pictures_markdown()
    again = run_study(samples, config, tmp_path / "work", progress=lambda _m: None)
    assert again.ran_now == 0 and again.best_value == summary.best_value  # budget already spent


def test_lightning_callback_prunes_on_the_running_fold_mean(samples, tmp_path):
    """A stored trial that reported 0.0 at every step makes any real trial worse than the median from
    the first step after the warm-up fold: it is pruned there, from inside Lightning."""
    config = HpoConfig(recipe=hpo_child.RECIPE, n_trials=2, storage_url=f"sqlite:///{tmp_path / 'p.db'}")
    study = open_study(config, samples)
    space = load_search_space("ci", "lstm")
    distributions = {
        "training.lr": optuna.distributions.FloatDistribution(
            space["training.lr"]["low"], space["training.lr"]["high"], log=True
        ),
        "model.dropout": optuna.distributions.FloatDistribution(0.0, 0.3),
    }
    study.add_trial(
        optuna.trial.create_trial(
            params={"training.lr": 0.005, "model.dropout": 0.1},
            distributions=distributions,
            value=0.0,
            intermediate_values={s: 0.0 for s in range(2 * MAX_EPOCHS)},
        )
    )
    summary = run_study(samples, config, tmp_path / "work", progress=lambda _m: None)
    (pruned,) = [t for t in summary.trials if t["state"] == "pruned"]
    assert sorted(pruned["intermediate"]) == list(range(MAX_EPOCHS + 1))  # fold 1 epochs, fold 2 epoch 0
    fold1 = [pruned["intermediate"][s] for s in range(MAX_EPOCHS)]
    assert pruned["intermediate"][MAX_EPOCHS] > 0 and all(v > 0 for v in fold1)


def test_killed_study_resumes_with_its_completed_trials(samples, tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "antmeter_tests.unit.hpo_child", url, str(tmp_path / "work"), "4"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in child.stdout:  # kill once trial 1 has begun: trial 0 is stored complete
            lines.append(line)
            if line.startswith("trial 1 fold 1/"):
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, "".join(lines)
    stored = optuna.load_study(study_name="killed-study", storage=url)
    before = {t.number: (t.state, t.value, t.params) for t in stored.get_trials()}
    assert before[0][0] == optuna.trial.TrialState.COMPLETE
    assert before[1][0] == optuna.trial.TrialState.RUNNING  # killed mid-trial
    time.sleep(GRACE_S + 1)  # the killed trial's heartbeat goes stale

    summary = run_study(samples, hpo_child.config(url, 3), tmp_path / "work2", progress=lambda _m: None)
    after = {t["number"]: t for t in summary.trials}
    assert after[0]["state"] == "complete" and after[0]["value"] == before[0][1]
    assert after[0]["params"] == before[0][2]
    assert after[1]["state"] == "fail"
    assert summary.ran_now == 2  # the budget counts the trial that survived the kill
    assert summary.counts.get("complete", 0) + summary.counts.get("pruned", 0) == 3

"""Child process for the killed-study test: run an HPO study on the synthetic samples of ``test_hpo``.

Usage: ``python hpo_child.py STORAGE_URL WORK_DIR N_TRIALS``; prints one line per progress message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from antmeter.learn.datasets import DatasetSpec, SampleSet, build_samples
from antmeter.learn.hpo import HpoConfig, run_study
from antmeter.learn.recipe import RecipeConfig
from antmeter_tests.unit.synthetic_frames import FEATURES, synthetic_frame

SPEC = DatasetSpec(window=20, stride=2, horizons=(5, 10), task="binary")
RECIPE = RecipeConfig(model_type="lstm", preset="ci", n_folds=2, holdout_fraction=0.2, primary_horizon=5)


def samples() -> SampleSet:
    """Two symbols of 1,500 minutes whose ``signal`` feature drives the returns."""
    frames = {
        symbol: synthetic_frame(1500, seed=seed, horizons=SPEC.horizons, signal_strength=2.0)
        for seed, symbol in enumerate(("BTCUSDT", "ETHUSDT"))
    }
    return build_samples(frames, FEATURES, SPEC)


def config(storage_url: str, n_trials: int) -> HpoConfig:
    return HpoConfig(recipe=RECIPE, n_trials=n_trials, storage_url=storage_url, study_name="killed-study")


if __name__ == "__main__":
    torch.set_num_threads(1)
    url, work, trials = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    run_study(samples(), config(url, trials), work, progress=lambda m: print(m, flush=True))
    print("finished", flush=True)

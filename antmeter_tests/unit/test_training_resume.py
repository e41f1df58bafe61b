"""A training run killed with SIGKILL part-way resumes from last.ckpt and ends with exactly the weights
(and per-epoch history) of an uninterrupted run with the same seed.

The training runs in subprocesses (``python -m antmeter_tests.unit.test_training_resume DIR``) so the kill
is real; both the reference and the interrupted run use the same driver code, data and thread count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

MAX_EPOCHS = 6
KILL_AFTER_EPOCHS = 3  # kill once last.ckpt holds epoch index >= 2 (three epochs complete)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _synthetic_datasets() -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """Windows whose last steps of feature 0 drive both targets, split 720 train / 180 validation."""
    rng = np.random.default_rng(7)
    n, window, features = 900, 16, 5
    x = rng.normal(size=(n, window, features)).astype(np.float32)
    drive = x[:, -4:, 0].mean(axis=1)
    y_reg = np.stack([drive * (h + 1) + 0.3 * rng.normal(size=n) for h in range(3)], axis=1).astype(
        np.float32
    )
    y_class = (y_reg > 0).astype(np.int64)
    full = torch.utils.data.TensorDataset(
        torch.from_numpy(x),
        torch.from_numpy(y_class),
        torch.from_numpy(y_reg),
        torch.zeros(n, dtype=torch.int64),
    )
    return torch.utils.data.Subset(full, range(720)), torch.utils.data.Subset(full, range(720, n))


def _drive(run_dir: Path) -> None:
    """Train (or resume) the small LSTM into ``run_dir`` and write the result next to it."""
    from antmeter.learn.lightning_loop import save_weights, train_model

    torch.set_num_threads(1)
    train_ds, val_ds = _synthetic_datasets()
    result = train_model(
        "lstm",
        train_ds,
        val_ds,
        n_features=5,
        window=16,
        horizons=(1, 2, 3),
        n_classes=2,
        params={"lstm_units": [24, 12], "dropout": 0.2, "dense_units": 8},
        seed=123,
        checkpoint_dir=run_dir / "checkpoints",
        max_epochs=MAX_EPOCHS,
        patience=MAX_EPOCHS,
        batch_size=32,
        lr=3e-3,
        lr_schedule="cosine",
        warmup_fraction=0.1,
    )
    save_weights(result.model, run_dir / "weights", target_scaler=result.target_scaler)
    summary = {
        "history": result.history,
        "epochs_run": result.epochs_run,
        "best_val_loss": result.best_val_loss,
        "resumed_from": str(result.resumed_from) if result.resumed_from else None,
    }
    (run_dir / "result.json").write_text(json.dumps(summary), encoding="utf-8")


def _start(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "antmeter_tests.unit.test_training_resume", str(run_dir)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: float = 90) -> None:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output


def _completed_epochs(run_dir: Path) -> int:
    progress = run_dir / "checkpoints" / "progress.json"
    try:
        return int(json.loads(progress.read_text(encoding="utf-8"))["completed_epochs"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _last_checkpoint_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[
        "state_dict"
    ]


def _kill_after_epochs(process: subprocess.Popen, run_dir: Path, outcome: dict[str, object]) -> None:
    """Poll the run's progress file and SIGKILL it once ``KILL_AFTER_EPOCHS`` epochs are checkpointed."""
    deadline = time.monotonic() + 90
    while _completed_epochs(run_dir) < KILL_AFTER_EPOCHS:
        if process.poll() is not None:
            outcome["error"] = "the run ended before it could be killed part-way"
            return
        if time.monotonic() > deadline:
            outcome["error"] = f"no checkpoint of epoch {KILL_AFTER_EPOCHS} within 90 s"
            process.kill()
            return
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    outcome.update(returncode=process.returncode, completed_epochs=_completed_epochs(run_dir))


def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    reference_dir, interrupted_dir = tmp_path / "reference", tmp_path / "interrupted"
    interrupted = _start(interrupted_dir)
    outcome: dict[str, object] = {}
    killer = threading.Thread(target=_kill_after_epochs, args=(interrupted, interrupted_dir, outcome))
    killer.start()
    threads = torch.get_num_threads()
    try:
        _drive(reference_dir)  # the uninterrupted reference, in this process while the other one runs
    finally:
        torch.set_num_threads(threads)
        killer.join()
    assert "error" not in outcome, outcome["error"]
    assert outcome["returncode"] == -signal.SIGKILL
    assert KILL_AFTER_EPOCHS <= outcome["completed_epochs"] < MAX_EPOCHS  # type: ignore[operator]
    assert not (interrupted_dir / "result.json").exists()
    assert (interrupted_dir / "checkpoints" / "last.ckpt").exists()

    _finish(_start(interrupted_dir))

    reference_result = json.loads((reference_dir / "result.json").read_text(encoding="utf-8"))
    resumed_result = json.loads((interrupted_dir / "result.json").read_text(encoding="utf-8"))
    assert reference_result["resumed_from"] is None
    assert resumed_result["resumed_from"] == str(interrupted_dir / "checkpoints" / "last.ckpt")
    assert resumed_result["epochs_run"] == reference_result["epochs_run"] == MAX_EPOCHS
    assert resumed_result["history"] == reference_result["history"]
    assert resumed_result["best_val_loss"] == reference_result["best_val_loss"]

    best_reference = _weights(reference_dir / "weights" / "model.safetensors")
    best_resumed = _weights(interrupted_dir / "weights" / "model.safetensors")
    assert best_reference.keys() == best_resumed.keys()
    for key, value in best_reference.items():
        assert torch.equal(value, best_resumed[key]), key

    last_reference, last_resumed = (
        _last_checkpoint_state(reference_dir),
        _last_checkpoint_state(interrupted_dir),
    )
    assert last_reference.keys() == last_resumed.keys()
    for key, value in last_reference.items():
        assert torch.equal(value, last_resumed[key]), key
    # training really moved the weights away from initialization and improved the validation loss
    history = reference_result["history"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]


if __name__ == "__main__":
    _drive(Path(sys.argv[1]))

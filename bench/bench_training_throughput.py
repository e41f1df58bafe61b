"""Training throughput: the Lightning path (``antmeter.training.train_model``) vs a bare PyTorch loop.

Same model (LSTM 128-64-32, dropout 0.2, dense 16, two horizons' heads), same synthetic data (60 x 40 windows,
three horizons, binary task), same batch size 256, optimizer (AdamW), loss, gradient clipping and one
validation pass per epoch, in the same process. The two paths run interleaved (bare, Lightning, Lightning,
bare) to even out load from other processes on the machine; each run is timed end to end (the Lightning
run includes its Trainer setup and the ``last.ckpt``/``best.ckpt`` written every epoch). Goal: Lightning at
>= 0.95x the bare loop's samples/s (wall clock). ``cpu_time_ratio`` (bare CPU seconds / Lightning CPU
seconds) is reported too: on a shared machine it is less disturbed by other processes than wall time.
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from antmeter.models import MultiTaskLoss, build_model
from antmeter.training import TargetScaler, train_model

WINDOW, FEATURES, HORIZONS, N_CLASSES = 60, 40, (5, 10, 30), 2
LSTM = {"lstm_units": [128, 64, 32], "dropout": 0.2, "dense_units": 16}
LR, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 1.0


def synthetic(n: int, seed: int) -> TensorDataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WINDOW, FEATURES)).astype(np.float32)
    y_reg = (x[:, -5:, :3].mean(axis=1) + 0.5 * rng.normal(size=(n, 3))).astype(np.float32)
    y_class = (y_reg > 0).astype(np.int64)
    return TensorDataset(
        torch.from_numpy(x), torch.from_numpy(y_class), torch.from_numpy(y_reg), torch.zeros(n, dtype=torch.int64)
    )


def bare_loop(train: TensorDataset, val: TensorDataset, epochs: int, batch_size: int, seed: int) -> float:
    """The same training written as a plain loop; returns the last validation loss."""
    L.seed_everything(seed, verbose=False)
    model = build_model("lstm", n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=N_CLASSES, params=LSTM)
    scaler = TargetScaler.fit(train.tensors[2].numpy())
    mean, std = torch.tensor(scaler.mean), torch.tensor(scaler.std)
    loss_fn = MultiTaskLoss(len(HORIZONS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val, batch_size=batch_size)
    val_loss = float("nan")
    for _ in range(epochs):
        model.train()
        for x, y_class, y_reg, _ in train_loader:
            loss = loss_fn(*model(x), y_class, (y_reg - mean) / std)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
        model.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for x, y_class, y_reg, _ in val_loader:
                total += float(loss_fn(*model(x), y_class, (y_reg - mean) / std)["loss"]) * x.shape[0]
                count += x.shape[0]
        val_loss = total / count
    return val_loss


def lightning_path(train: TensorDataset, val: TensorDataset, epochs: int, batch_size: int, seed: int) -> float:
    with tempfile.TemporaryDirectory() as checkpoint_dir:
        result = train_model(
            "lstm",
            train,
            val,
            n_features=FEATURES,
            window=WINDOW,
            horizons=HORIZONS,
            n_classes=N_CLASSES,
            params=LSTM,
            seed=seed,
            checkpoint_dir=checkpoint_dir,
            max_epochs=epochs,
            patience=epochs,
            batch_size=batch_size,
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            gradient_clip=CLIP,
            accelerator="cpu",
        )
    return result.history[-1]["val_loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2048)
    parser.add_argument("--val-samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val = synthetic(args.train_samples, 0), synthetic(args.val_samples, 1)
    started = time.perf_counter()
    seconds: dict[str, list[float]] = {"bare": [], "lightning": []}
    cpu_seconds: dict[str, list[float]] = {"bare": [], "lightning": []}
    final_val_loss: dict[str, float] = {}
    for path in ("bare", "lightning", "lightning", "bare"):
        run = bare_loop if path == "bare" else lightning_path
        t0, c0 = time.perf_counter(), time.process_time()
        final_val_loss[path] = run(train, val, args.epochs, args.batch_size, seed=0)
        seconds[path].append(time.perf_counter() - t0)
        cpu_seconds[path].append(time.process_time() - c0)
    samples = args.train_samples * args.epochs
    rate = {path: samples * len(runs) / sum(runs) for path, runs in seconds.items()}
    ratio = rate["lightning"] / rate["bare"]
    cpu_ratio = sum(cpu_seconds["bare"]) / sum(cpu_seconds["lightning"])
    print(
        json.dumps(
            {
                "bench": "training_throughput",
                "model": "lstm 128-64-32 dropout 0.2 dense 16",
                "window": WINDOW,
                "features": FEATURES,
                "batch_size": args.batch_size,
                "train_samples": args.train_samples,
                "val_samples": args.val_samples,
                "epochs_per_run": args.epochs,
                "runs_per_path": 2,
                "threads": args.threads,
                "bare_samples_per_s": round(rate["bare"], 1),
                "lightning_samples_per_s": round(rate["lightning"], 1),
                "ratio": round(ratio, 3),
                "goal_ratio": 0.95,
                "meets_goal": ratio >= 0.95,
                "cpu_time_ratio": round(cpu_ratio, 3),
                "run_seconds": {path: [round(s, 1) for s in runs] for path, runs in seconds.items()},
                "run_cpu_seconds": {path: [round(s, 1) for s in runs] for path, runs in cpu_seconds.items()},
                "load_average_1min": round(os.getloadavg()[0], 2),
                "final_val_loss": {path: round(v, 4) for path, v in final_val_loss.items()},
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Training throughput: the Lightning path (``antmeter.learn.lightning_loop.train_model``) vs a bare PyTorch loop.

Same model (LSTM 128-64-32, dropout 0.2, dense 16, heads for three horizons), same synthetic data (60 x 40
windows, binary task), same batch size 256, optimizer (AdamW), loss, gradient clipping and one validation pass
per epoch, in the same process. Each path runs with torch's deterministic algorithms on (the default of
``train_model``, needed for bitwise-identical resumes) and off; the headline ``ratio`` compares the two paths
on the same kernels (deterministic on). The configurations run round-robin, twice, in opposite orders, to even
out load from other processes; each run is timed end to end (a Lightning run includes its Trainer setup and
the ``last.ckpt``/``best.ckpt`` written every epoch) after one untimed warm-up epoch of each path. Goal: Lightning >= 0.95x the bare loop's samples/s.
CPU-time ratios and the median time of one training-loop iteration (batch fetch + step, measured between
consecutive batch starts) are reported too: on a shared machine they are less disturbed by other processes
than end-to-end wall time.
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
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from antmeter.learn.lightning_loop import TargetScaler, train_model
from antmeter.learn.models import MultiTaskLoss, build_model

WINDOW, FEATURES, HORIZONS, N_CLASSES = 60, 40, (5, 10, 30), 2
LSTM = {"lstm_units": [128, 64, 32], "dropout": 0.2, "dense_units": 16}
LR, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 1.0


def synthetic(n: int, seed: int) -> TensorDataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WINDOW, FEATURES)).astype(np.float32)
    y_reg = (x[:, -5:, :3].mean(axis=1) + 0.5 * rng.normal(size=(n, 3))).astype(np.float32)
    y_class = (y_reg > 0).astype(np.int64)
    return TensorDataset(
        torch.from_numpy(x),
        torch.from_numpy(y_class),
        torch.from_numpy(y_reg),
        torch.zeros(n, dtype=torch.int64),
    )


class IterationClock(Callback):
    """Records the wall time between consecutive training-batch starts (one full loop iteration)."""

    def __init__(self, sink: list[float]):
        self.sink, self.last = sink, None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.last = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.sink.append(now - self.last)
        self.last = now


def bare_loop(
    train: TensorDataset,
    val: TensorDataset,
    epochs: int,
    batch_size: int,
    seed: int,
    deterministic: bool,
    iterations: list[float],
) -> float:
    """The same training written as a plain loop; returns the last validation loss."""
    torch.use_deterministic_algorithms(deterministic)
    L.seed_everything(seed, verbose=False)
    model = build_model(
        "lstm", n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=N_CLASSES, params=LSTM
    )
    scaler = TargetScaler.fit(train.tensors[2].numpy())
    mean, std = torch.tensor(scaler.mean), torch.tensor(scaler.std)
    loss_fn = MultiTaskLoss(len(HORIZONS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True)
    val_loader = DataLoader(val, batch_size=batch_size)
    val_loss = float("nan")
    for _ in range(epochs):
        model.train()
        last = None
        for x, y_class, y_reg, _ in train_loader:
            now = time.perf_counter()
            if last is not None:
                iterations.append(now - last)
            last = now
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
    torch.use_deterministic_algorithms(False)
    return val_loss


def lightning_path(
    train: TensorDataset,
    val: TensorDataset,
    epochs: int,
    batch_size: int,
    seed: int,
    deterministic: bool,
    iterations: list[float],
) -> float:
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
            deterministic=deterministic,
            callbacks=[IterationClock(iterations)],
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
    for warm_up in (bare_loop, lightning_path):  # one-time costs (lazy imports, allocator growth), untimed
        warm_up(train, val, 1, args.batch_size, 0, True, [])
    configs = [("bare", True), ("lightning", True), ("bare", False), ("lightning", False)]
    seconds: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    cpu_seconds: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    final_val_loss: dict[tuple[str, bool], float] = {}
    iterations: dict[tuple[str, bool], list[float]] = {c: [] for c in configs}
    for config in configs + configs[::-1]:
        path, deterministic = config
        run = bare_loop if path == "bare" else lightning_path
        t0, c0 = time.perf_counter(), time.process_time()
        final_val_loss[config] = run(
            train, val, args.epochs, args.batch_size, 0, deterministic, iterations[config]
        )
        seconds[config].append(time.perf_counter() - t0)
        cpu_seconds[config].append(time.process_time() - c0)
    samples = args.train_samples * args.epochs * 2
    rate = {c: samples / sum(seconds[c]) for c in configs}
    cpu_rate = {c: samples / sum(cpu_seconds[c]) for c in configs}

    def name(config: tuple[str, bool]) -> str:
        return f"{config[0]}_{'deterministic' if config[1] else 'fast'}"

    ratio = rate[("lightning", True)] / rate[("bare", True)]
    median_iteration = {c: float(np.median(iterations[c])) for c in configs}
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
                "runs_per_config": 2,
                "threads": args.threads,
                "samples_per_s": {name(c): round(rate[c], 1) for c in configs},
                "ratio": round(ratio, 3),
                "ratio_fast_kernels": round(rate[("lightning", False)] / rate[("bare", False)], 3),
                "ratio_default_lightning_vs_fast_bare": round(
                    rate[("lightning", True)] / rate[("bare", False)], 3
                ),
                "cpu_time_ratio": round(cpu_rate[("lightning", True)] / cpu_rate[("bare", True)], 3),
                "cpu_time_ratio_fast_kernels": round(
                    cpu_rate[("lightning", False)] / cpu_rate[("bare", False)], 3
                ),
                "median_iteration_ms": {name(c): round(v * 1e3, 1) for c, v in median_iteration.items()},
                "median_iteration_ratio": round(
                    median_iteration[("bare", True)] / median_iteration[("lightning", True)], 3
                ),
                "median_iteration_ratio_fast_kernels": round(
                    median_iteration[("bare", False)] / median_iteration[("lightning", False)], 3
                ),
                "goal_ratio": 0.95,
                "meets_goal": ratio >= 0.95,
                "run_seconds": {name(c): [round(s, 1) for s in seconds[c]] for c in configs},
                "final_val_loss": {name(c): round(v, 4) for c, v in final_val_loss.items()},
                "load_average_1min": round(os.getloadavg()[0], 2),
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

"""PatchTST/42 on ETTh1 (multivariate, horizon 96) next to the paper's test MSE/MAE 0.375/0.399.

The paper's setup (Nie et al., 2023, Table 3, PatchTST/42): look-back 336, patch 16, stride 8 (42 patches
with end padding), 3 encoder layers, 4 heads, d_model 16, d_ff 128, dropout 0.3, RevIN without affine,
Adam lr 1e-4 held for the first epochs then x0.9 per epoch (the reference code's ``type3`` schedule:
epoch k, 0-based, uses ``1e-4 * 0.9 ** max(0, k - 3)``), batch 128, MSE loss on standardized data.
Data: the standard ETT borders — train rows [0, 8640), validation [8640 - 336, 11520), test
[11520 - 336, 14400) — with the scaler fitted on the training rows only. Test metrics are reported on the
reference code's batches (last partial test batch dropped, 2,688 windows) and on all 2,785 windows.

The paper trains 100 epochs; this bench stops at ``--max-epochs``, after ``--patience`` epochs without a
better validation loss, or when the next epoch would overrun ``--max-minutes``, and evaluates the best
validation epoch's weights. The same-run reference is the naive forecast (repeat the last observed value).
Prints one JSON object on its last line; per-epoch progress goes to stderr.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from antmeter.learn.models import PatchTSTForecaster

DEFAULT_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"
LOOKBACK, TRAIN_END, VAL_END, TEST_END = 336, 12 * 30 * 24, 16 * 30 * 24, 20 * 30 * 24
PAPER = {"mse": 0.375, "mae": 0.399, "epochs": 100}


class ForecastWindows(Dataset):
    """``(x [lookback, C], y [horizon, C])`` windows over a standardized segment."""

    def __init__(self, values: np.ndarray, lookback: int, horizon: int):
        self.values = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        self.lookback, self.horizon = lookback, horizon

    def __len__(self) -> int:
        return self.values.shape[0] - self.lookback - self.horizon + 1

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        split = i + self.lookback
        return self.values[i:split], self.values[split : split + self.horizon]


def load_splits(csv: Path, horizon: int) -> dict[str, ForecastWindows]:
    """Standardize with train statistics and cut the standard ETT train/validation/test segments."""
    frame = pd.read_csv(csv)
    values = frame.drop(columns=["date"]).to_numpy(dtype=np.float64)
    if values.shape[0] < TEST_END:
        raise ValueError(f"{csv}: expected at least {TEST_END} rows, found {values.shape[0]}")
    train = values[:TRAIN_END]
    scaled = (values - train.mean(axis=0)) / train.std(axis=0)
    segments = {
        "train": scaled[:TRAIN_END],
        "val": scaled[TRAIN_END - LOOKBACK : VAL_END],
        "test": scaled[VAL_END - LOOKBACK : TEST_END],
    }
    return {name: ForecastWindows(seg, LOOKBACK, horizon) for name, seg in segments.items()}


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader) -> dict[str, float]:
    """MSE and MAE over every element of every window the loader yields, plus the naive forecast's."""
    model.eval()
    sums = {"mse": 0.0, "mae": 0.0, "naive_mse": 0.0, "naive_mae": 0.0}
    count = 0
    for x, y in loader:
        error = model(x) - y
        naive = x[:, -1:, :] - y
        sums["mse"] += float(error.pow(2).sum())
        sums["mae"] += float(error.abs().sum())
        sums["naive_mse"] += float(naive.pow(2).sum())
        sums["naive_mae"] += float(naive.abs().sum())
        count += y.numel()
    return {k: v / count for k, v in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--max-minutes", type=float, default=25.0)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2021)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    started = time.perf_counter()
    splits = load_splits(args.csv, args.horizon)
    model = PatchTSTForecaster(
        n_channels=7,
        window=LOOKBACK,
        horizon=args.horizon,
        revin=True,
        revin_affine=False,
        head_dropout=0.0,
        patch_len=16,
        stride=8,
        d_model=16,
        n_heads=4,
        depth=3,
        d_ff=128,
        dropout=0.3,
        attn_dropout=0.0,
    )
    generator = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(
        splits["train"], batch_size=args.batch_size, shuffle=True, drop_last=True, generator=generator
    )
    val_loader = DataLoader(splits["val"], batch_size=args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 0.9 ** max(0, epoch - 3))

    best = {"val_mse": float("inf"), "epoch": -1, "state": copy.deepcopy(model.state_dict())}
    epoch_seconds: list[float] = []
    stopped_by = "max_epochs"
    for epoch in range(args.max_epochs):
        elapsed = time.perf_counter() - started
        if epoch_seconds and elapsed + max(epoch_seconds) > args.max_minutes * 60:
            stopped_by = "time_budget"
            break
        epoch_start = time.perf_counter()
        epoch_lr = optimizer.param_groups[0]["lr"]
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
        schedule.step()
        val_mse = evaluate(model, val_loader)["mse"]
        epoch_seconds.append(time.perf_counter() - epoch_start)
        improved = val_mse < best["val_mse"]
        if improved:
            best = {"val_mse": val_mse, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
        print(
            f"epoch {epoch + 1}: val_mse {val_mse:.4f}{' *' if improved else ''} "
            f"({epoch_seconds[-1]:.0f} s, lr {epoch_lr:.2e})",
            flush=True,
            file=sys.stderr,
        )
        if epoch - best["epoch"] >= args.patience:
            stopped_by = "patience"
            break

    model.load_state_dict(best["state"])
    paper_batches = evaluate(model, DataLoader(splits["test"], batch_size=args.batch_size, drop_last=True))
    all_windows = evaluate(model, DataLoader(splits["test"], batch_size=args.batch_size))
    n_test = len(splits["test"])
    print(
        json.dumps(
            {
                "bench": "patchtst_etth1",
                "horizon": args.horizon,
                "lookback": LOOKBACK,
                "patches": model.backbone.n_patches,
                "test_mse": round(paper_batches["mse"], 4),
                "test_mae": round(paper_batches["mae"], 4),
                "paper_mse": PAPER["mse"],
                "paper_mae": PAPER["mae"],
                "test_windows": n_test - n_test % args.batch_size,
                "test_mse_all_windows": round(all_windows["mse"], 4),
                "test_mae_all_windows": round(all_windows["mae"], 4),
                "test_windows_all": n_test,
                "naive_last_value_mse": round(paper_batches["naive_mse"], 4),
                "naive_last_value_mae": round(paper_batches["naive_mae"], 4),
                "best_val_mse": round(best["val_mse"], 4),
                "best_epoch": best["epoch"] + 1,
                "epochs_run": len(epoch_seconds),
                "paper_epochs": PAPER["epochs"],
                "stopped_by": stopped_by,
                "epoch_s_mean": round(float(np.mean(epoch_seconds)), 1) if epoch_seconds else None,
                "wall_s": round(time.perf_counter() - started, 1),
                "threads": args.threads,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
    )


if __name__ == "__main__":
    main()

"""Inference latency of the LSTM 128-64-32 (60 x 40 windows): torch eager fp32 vs ONNX Runtime fp32 vs
ONNX Runtime dynamic INT8, one thread each, for one window and for a batch of 256.

The weights are trained briefly (``train_model``, one epoch on 2,048 synthetic windows whose last steps drive
the targets), not random, so the INT8 parity figures mean something. Every case runs untimed warm-up calls,
then timed calls (``--single-calls`` for one window, ``--batch-calls`` for 256 windows, each case also capped
at ``--max-seconds-per-case``; the JSON says how many calls each case made). Each timed call returns class
probabilities (softmax) and regression outputs. Goals: INT8 >= 2x faster than torch eager at p50 for one
window, INT8 p99 <= 1 ms for one window. The same run measures all three, so the ratios compare like with like.
Prints one JSON object on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from antmeter.learn.lightning_loop import train_model
from antmeter.learn.onnx import OnnxPredictor, check_parity, export_onnx, parity_report, quantize_int8

WINDOW, FEATURES, HORIZONS = 60, 40, (5, 10, 30)
LSTM = {"lstm_units": [128, 64, 32], "dropout": 0.2, "dense_units": 16}
REFERENCE_MS = {"torch_fp32_p50": 0.51, "onnx_fp32_p50": 0.26, "onnx_int8_p50": 0.14, "onnx_int8_p99": 0.23}


def synthetic(n: int, seed: int) -> TensorDataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, WINDOW, FEATURES)).astype(np.float32)
    y_reg = (x[:, -5:, :3].mean(axis=1) + 0.5 * rng.normal(size=(n, 3))).astype(np.float32)
    return TensorDataset(
        torch.from_numpy(x),
        torch.from_numpy((y_reg > 0).astype(np.int64)),
        torch.from_numpy(y_reg),
        torch.zeros(n, dtype=torch.int64),
    )


def latency(call: Callable[[], object], calls: int, warm_up: int, max_seconds: float) -> dict[str, float]:
    """p50/p99/mean in milliseconds over up to ``calls`` timed calls (stopping early at ``max_seconds``)."""
    for _ in range(warm_up):
        call()
    times = []
    deadline = time.perf_counter() + max_seconds
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
        if start > deadline:
            break
    ms = np.array(times) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "calls": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single-calls", type=int, default=2000)
    parser.add_argument("--batch-calls", type=int, default=1000)
    parser.add_argument("--max-seconds-per-case", type=float, default=30.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(
            "lstm",
            synthetic(2048, 0),
            synthetic(512, 1),
            n_features=FEATURES,
            window=WINDOW,
            horizons=HORIZONS,
            n_classes=2,
            params=LSTM,
            seed=0,
            checkpoint_dir=Path(tmp) / "checkpoints",
            max_epochs=1,
            batch_size=256,
            lr=2e-3,
            accelerator="cpu",
        )
        model = result.model.eval()
        fp32 = export_onnx(model, FEATURES, WINDOW, Path(tmp) / "lstm.onnx")
        int8 = quantize_int8(fp32, Path(tmp) / "lstm.int8.onnx")
        test = synthetic(2048, 2)
        x_test, y_test = test.tensors[0].numpy(), test.tensors[1].numpy()
        parity = parity_report(model, fp32, int8, x_test, "binary", y_class=y_test)
        onnx_fp32, onnx_int8 = (
            OnnxPredictor(fp32, intra_op_threads=1),
            OnnxPredictor(int8, intra_op_threads=1),
        )

        def torch_call(x: torch.Tensor) -> Callable[[], object]:
            def run() -> object:
                with torch.inference_mode():
                    logits, regression = model(x)
                    return torch.softmax(logits, dim=-1).numpy(), regression.numpy()

            return run

        results: dict[str, dict[str, dict[str, float]]] = {}
        for case, size, calls, warm_up in (
            ("single", 1, args.single_calls, 100),
            ("batch256", 256, args.batch_calls, 10),
        ):
            x = np.ascontiguousarray(x_test[:size])
            results[case] = {
                "torch_fp32": latency(
                    torch_call(torch.from_numpy(x)), calls, warm_up, args.max_seconds_per_case
                ),
                "onnx_fp32": latency(
                    lambda x=x: onnx_fp32.predict(x), calls, warm_up, args.max_seconds_per_case
                ),
                "onnx_int8": latency(
                    lambda x=x: onnx_int8.predict(x), calls, warm_up, args.max_seconds_per_case
                ),
            }

    single = results["single"]
    speedup = single["torch_fp32"]["p50_ms"] / single["onnx_int8"]["p50_ms"]
    print(
        json.dumps(
            {
                "bench": "inference_latency",
                "model": "lstm 128-64-32 dropout 0.2 dense 16, window 60 x 40 features, 3 horizons, binary",
                "weights": "trained 1 epoch on 2,048 synthetic windows",
                "threads": 1,
                "single": single,
                "batch256": results["batch256"],
                "int8_speedup_vs_torch_single_p50": round(speedup, 2),
                "onnx_fp32_speedup_vs_torch_single_p50": round(
                    single["torch_fp32"]["p50_ms"] / single["onnx_fp32"]["p50_ms"], 2
                ),
                "int8_speedup_vs_torch_batch256_p50": round(
                    results["batch256"]["torch_fp32"]["p50_ms"] / results["batch256"]["onnx_int8"]["p50_ms"],
                    2,
                ),
                "goal_int8_speedup_2x": speedup >= 2.0,
                "goal_int8_single_p99_le_1ms": single["onnx_int8"]["p99_ms"] <= 1.0,
                "reference_ms_from_notes": REFERENCE_MS,
                "parity": {
                    key: round(parity[key], 6)
                    for key in (
                        "fp32_max_abs_proba_diff",
                        "int8_max_abs_proba_diff",
                        "int8_class_agreement_decisive",
                        "int8_log_loss_increase",
                    )
                },
                "parity_problems": check_parity(parity),
                "onnx_bytes": {"fp32": parity["fp32_bytes"], "int8": parity["int8_bytes"]},
                "load_average_1min": round(os.getloadavg()[0], 2),
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

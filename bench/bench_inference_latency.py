"""Inference latency of the LSTM 128-64-32 (60 x 40 windows): torch eager fp32 vs ONNX Runtime fp32 vs
ONNX Runtime dynamic INT8, one thread each, for one window and for a batch of 256.

The weights are trained briefly (``train_model``, one epoch on 2,048 synthetic windows whose last steps drive
the targets), not random, so the INT8 parity figures mean something. Every case runs untimed warm-up calls,
then timed calls (``--single-calls`` for one window, ``--batch-calls`` for 256 windows, each case also capped
at ``--max-seconds-per-case``; the JSON says how many calls each case made). Each timed call returns class
probabilities (softmax) and regression outputs. Goals: INT8 >= 2x faster than torch eager at p50 for one
window, INT8 p99 <= 1 ms for one window. The same run measures all three, so the ratios compare like with like.

The serving path is measured against its floor on the same INT8 model: ``ServingModel.predict_windows``
of a bundle written like the training recipe writes it (scaler, ``serving.json``, ``model.int8.onnx``)
on *unscaled* windows (scaling, shape checks, session call, target unscaling) next to a bare
``onnxruntime.InferenceSession.run`` (one intra-op thread, as the bundle's) on the already-scaled
windows, their calls alternating so both see the same machine load. Goals: bundle / bare <= 1.2 at p50,
bundle p99 <= 1 ms for one window on an idle core (the JSON reports the load average; on a loaded machine
the p99 mostly measures waiting for a core). A breakdown of the bundle path's stages (median
microseconds) shows where its time goes. Prints one JSON object on its last line.
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
import onnxruntime as ort
import torch
from torch.utils.data import TensorDataset

from antmeter.learn.bundle import ONNX_INT8, SERVING_FILE, ServingModel
from antmeter.learn.datasets import FeatureScaler, FeatureSchema
from antmeter.learn.lightning_loop import train_model
from antmeter.learn.onnx import (
    INPUT_NAME,
    OUTPUT_NAMES,
    OnnxPredictor,
    check_parity,
    export_onnx,
    parity_report,
    quantize_int8,
)

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


def _summary(ms: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "calls": len(ms),
    }


def paired_latency(
    calls: dict[str, Callable[[], object]], rounds: int, warm_up: int, max_seconds: float
) -> dict[str, dict[str, float]]:
    """Like :func:`latency` for several calls at once, one of each per round (same load for all)."""
    for _ in range(warm_up):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.perf_counter() + max_seconds
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
        if time.perf_counter() > deadline:
            break
    return {name: _summary(np.array(t) * 1e3) for name, t in times.items()}


def write_bundle(directory: Path, int8: Path, x_train: np.ndarray, y_reg: np.ndarray) -> ServingModel:
    """A served bundle as the recipe writes it (scaler fit on training rows, target scaler, INT8 model)."""
    schema = FeatureSchema(tuple(f"f{i}" for i in range(FEATURES)), ("float32",) * FEATURES)
    FeatureScaler.fit(x_train.reshape(-1, FEATURES), schema).save(directory)
    (directory / ONNX_INT8).write_bytes(int8.read_bytes())
    serving = {
        "window": WINDOW,
        "horizons": list(HORIZONS),
        "task": "binary",
        "n_classes": 2,
        "target_scaler": {"mean": y_reg.mean(axis=0).tolist(), "std": y_reg.std(axis=0).tolist()},
    }
    (directory / SERVING_FILE).write_text(json.dumps(serving))
    return ServingModel.load(directory, prefer_int8=True)


def bare_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def bundle_breakdown(bundle: ServingModel, x: np.ndarray, calls: int) -> dict[str, float]:
    """Median microseconds of each stage of the bundle's predict path on ``x``."""
    stages: dict[str, list[float]] = {"scale": [], "session_call": [], "unscale": [], "whole_path": []}
    session = bundle._predictor.session
    for _ in range(calls):
        t0 = time.perf_counter()
        scaled = bundle.scaler.transform(x)
        t1 = time.perf_counter()
        _, reg = session.run(list(OUTPUT_NAMES), {INPUT_NAME: scaled})
        t2 = time.perf_counter()
        reg = reg * bundle._target_std
        reg += bundle._target_mean
        t3 = time.perf_counter()
        bundle.predict_windows(x)
        t4 = time.perf_counter()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[name].append(seconds)
    return {name: round(float(np.median(v)) * 1e6, 1) for name, v in stages.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single-calls", type=int, default=2000)
    parser.add_argument("--batch-calls", type=int, default=1000)
    parser.add_argument("--max-seconds-per-case", type=float, default=30.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    load_start = os.getloadavg()

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

        train = synthetic(2048, 0)
        bundle = write_bundle(Path(tmp) / "bundle", int8, train.tensors[0].numpy(), train.tensors[2].numpy())
        bare = bare_session(int8)
        serving: dict[str, dict] = {}
        for case, size, calls, warm_up in (
            ("single", 1, args.single_calls, 100),
            ("batch256", 256, args.batch_calls, 10),
        ):
            raw = np.ascontiguousarray(x_test[:size])
            scaled = bundle.scaler.transform(raw)
            proba_bundle, _ = bundle.predict_windows(raw)
            proba_bare, _ = bare.run(list(OUTPUT_NAMES), {INPUT_NAME: scaled})
            assert np.array_equal(proba_bundle, proba_bare), "bundle and bare session disagree"
            timed = paired_latency(
                {
                    "bare_session_run": lambda s=scaled: bare.run(list(OUTPUT_NAMES), {INPUT_NAME: s}),
                    "bundle_predict_windows": lambda r=raw: bundle.predict_windows(r),
                },
                calls,
                warm_up,
                args.max_seconds_per_case,
            )
            serving[case] = {
                **timed,
                "ratio_bundle_vs_bare_p50": round(
                    timed["bundle_predict_windows"]["p50_ms"] / timed["bare_session_run"]["p50_ms"], 3
                ),
                "ratio_bundle_vs_bare_p99": round(
                    timed["bundle_predict_windows"]["p99_ms"] / timed["bare_session_run"]["p99_ms"], 3
                ),
                "bundle_breakdown_median_us": bundle_breakdown(bundle, raw, min(calls, 300)),
            }
        load_after_serving = os.getloadavg()

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
                "serving_path_int8": serving,
                "goal_bundle_vs_bare_p50_le_1_2": all(
                    serving[c]["ratio_bundle_vs_bare_p50"] <= 1.2 for c in serving
                ),
                "goal_bundle_single_p99_le_1ms": serving["single"]["bundle_predict_windows"]["p99_ms"] <= 1.0,
                "cpu_count": os.cpu_count(),
                "loadavg_start": [round(v, 2) for v in load_start],
                "loadavg_after_serving_path": [round(v, 2) for v in load_after_serving],
                "load_average_1min": round(os.getloadavg()[0], 2),
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()

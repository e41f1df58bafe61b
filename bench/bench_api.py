"""Throughput and latency of the API's GET /predict and POST /invocations next to a framework-free floor.

Both servers run as uvicorn subprocesses (one worker each) on loopback over the same store and MLflow
registry (the embedded default after ``bash run.sh main``, or the usual environment variables): the
FastAPI app, and a plain Starlette app whose two routes call the same domain functions
(``InferenceService.predict_latest``, ``InferenceService.score_windows``) on the same ONNX session and
answer the same JSON, without FastAPI's validation and serialization. The load comes from a separate
process (asyncio + httpx, ``c`` requests in flight) for ``--seconds`` per cell, at concurrency 1 and 32.

Goals per endpoint: throughput >= 0.8x the floor's (keys with ``ratio``) and p99 <= 1.5x the floor's.
Usage: ``python bench/bench_api.py [--seconds 5] [--symbol BTCUSDT]``. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from antmeter_deploy.topology import free_ports

REPO = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 32)


def floor_app():
    """The floor: the same domain work in plain Starlette routes."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from antmeter_api.app import build_service
    from antmeter_api.settings import ApiSettings

    service = build_service(ApiSettings.from_env())

    def predict(request: Request) -> JSONResponse:
        return JSONResponse(service.predict_latest(request.query_params["symbol"]))

    async def invocations(request: Request) -> JSONResponse:
        windows = np.asarray((await request.json())["inputs"], dtype=np.float64)
        served, proba, regression = service.score_windows(windows)
        horizons = served.model.horizons
        return JSONResponse(
            {
                "predictions": [
                    {
                        **{f"prob_up_{h}m": float(proba[i, k, -1]) for k, h in enumerate(horizons)},
                        **{f"return_{h}m": float(regression[i, k]) for k, h in enumerate(horizons)},
                    }
                    for i in range(len(windows))
                ]
            }
        )

    return Starlette(
        routes=[Route("/predict", predict), Route("/invocations", invocations, methods=["POST"])]
    )


def start_server(kind: str, port: int, env: dict[str, str]) -> subprocess.Popen:
    target = ["antmeter_api.app:create_app"] if kind == "api" else ["bench.bench_api:floor_app"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *target,
            "--factory",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
    )


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not ready within {timeout_s}s")


def _load(url: str, method: str, body: bytes | None, concurrency: int, seconds: float, out) -> None:
    """The load generator (its own process): ``concurrency`` requests in flight for ``seconds``."""
    import httpx

    async def run() -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"content-type": "application/json"}
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            end = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < end:
                    t0 = time.perf_counter()
                    response = await client.request(method, url, content=body, headers=headers)
                    latencies.append(time.perf_counter() - t0)
                    errors += response.status_code != 200

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors

    started = time.perf_counter()
    latencies, errors = asyncio.run(run())
    out.put({"latencies": latencies, "errors": errors, "seconds": time.perf_counter() - started})


def measure(url: str, method: str, body: bytes | None, concurrency: int, seconds: float) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_load, args=(url, method, body, concurrency, seconds, queue))
    process.start()
    result = queue.get(timeout=seconds + 300)
    process.join(60)
    latencies = np.asarray(result["latencies"]) * 1000
    return {
        "requests": int(len(latencies)),
        "errors": int(result["errors"]),
        "rps": round(len(latencies) / result["seconds"], 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
    }


def invocation_body(symbol: str) -> bytes:
    """One window of the champion's features from the newest stored candles, as MLflow ``inputs``."""
    from antmeter_api.app import build_service
    from antmeter_api.settings import ApiSettings

    service = build_service(ApiSettings.from_env())
    served = service.champion(service.default_model_type())
    needed = served.model.window + int(service.warmup / service.step) + 5
    newest = service.store.candle_stats(symbol, "1m")["last_open_time"]
    candles = service.store.read_candles(symbol, "1m", newest - needed * service.step, None)
    windows = service.windows_from_features(service.features_for(symbol, candles))
    return json.dumps({"inputs": windows[-1:].tolist()}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--symbol", default="BTCUSDT")
    args = parser.parse_args()
    # GET /predict refuses stale input; a benchmark on yesterday's fill measures the same work
    env = {
        **os.environ,
        "ANTMETER_API_STALE_AFTER_MINUTES": os.environ.get("ANTMETER_API_STALE_AFTER_MINUTES", "100000"),
    }
    os.environ.update(env)
    body = invocation_body(args.symbol)
    ports = dict(zip(("api", "floor"), free_ports(2), strict=True))
    servers = {kind: start_server(kind, port, env) for kind, port in ports.items()}
    load_before = os.getloadavg()
    results: dict[str, object] = {}
    try:
        for kind, port in ports.items():
            wait_ready(f"http://127.0.0.1:{port}/predict?symbol={args.symbol}", servers[kind])
        for endpoint, method, payload in (
            (f"/predict?symbol={args.symbol}", "GET", None),
            ("/invocations", "POST", body),
        ):
            name = "predict" if method == "GET" else "invocations"
            for concurrency in CONCURRENCY:
                cell = {}
                for kind, port in ports.items():
                    url = f"http://127.0.0.1:{port}{endpoint}"
                    measure(url, method, payload, concurrency, 1.0)  # warm-up
                    cell[kind] = measure(url, method, payload, concurrency, args.seconds)
                    print(f"{name} c={concurrency} {kind}: {cell[kind]}", flush=True)
                results[f"{name}_c{concurrency}"] = {
                    **cell,
                    "throughput_ratio": round(cell["api"]["rps"] / cell["floor"]["rps"], 3),
                    "p99_vs_floor": round(cell["api"]["p99_ms"] / cell["floor"]["p99_ms"], 3),
                }
    finally:
        for process in servers.values():
            process.terminate()
            process.wait(30)
    summary = {
        "bench": "api",
        "seconds_per_cell": args.seconds,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        **results,
        "min_throughput_ratio": min(v["throughput_ratio"] for v in results.values()),
        "max_p99_vs_floor": max(v["p99_vs_floor"] for v in results.values()),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

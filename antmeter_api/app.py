"""The Antmeter API: MLflow-style scoring, domain endpoints, operator actions and the live dashboard.

Run it with ``bash run.sh serve`` (port ``PORT``, default 8000) or ``python -m antmeter_api``.
OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import datetime as dt
import hmac
import importlib.metadata
import json
from collections.abc import Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from antmeter.live._frames import LiveInputError
from antmeter.live.pattern_service import PatternService
from antmeter.live.service import BadInput, InferenceService, ServiceError
from antmeter.market.candles import CANDLE_COLUMNS, CandleValidationError
from antmeter_api import schemas
from antmeter_api.operator import DagsterLauncher, DagsterUnavailable, LaunchFailed
from antmeter_api.settings import OPERATOR_TOKEN_ENV, ApiSettings

STATIC = Path(__file__).parent / "static"
Symbol = Annotated[str, Query(pattern=schemas.SYMBOL_PATTERN, examples=["BTCUSDT"])]


def _service(request: Request) -> InferenceService:
    return request.app.state.service


Service = Annotated[InferenceService, Depends(_service)]


def _patterns(request: Request) -> PatternService:
    """The pattern service over the app's inference service (its own champion cache, built once)."""
    state = request.app.state
    if getattr(state, "patterns", None) is None or state.patterns.inference is not state.service:
        state.patterns = build_pattern_service(state.service, state.settings)
    return state.patterns


Patterns = Annotated[PatternService, Depends(_patterns)]


def build_service(settings: ApiSettings) -> InferenceService:
    """The service over the store and MLflow registry the settings name."""
    import mlflow

    from antmeter.market.store import MarketStore
    from antmeter.registry.versions import ChampionCache

    store = MarketStore(settings.store_url)
    store.migrate()
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    cache = ChampionCache(client, settings.cache_dir, refresh_s=settings.champion_refresh_s)
    return InferenceService(store, client, cache, settings.service)


def build_pattern_service(service: InferenceService, settings: ApiSettings) -> PatternService:
    """Pattern classifiers served from the same registry by alias (cached beside the direction models)."""
    from antmeter.learn.patterns import CONFIG_FILE, PatternBundle
    from antmeter.registry.versions import ChampionCache

    cache = ChampionCache(
        service.client,
        settings.cache_dir.parent / "patterns",
        refresh_s=settings.champion_refresh_s,
        load=PatternBundle.load,
        marker=CONFIG_FILE,
    )
    return PatternService(service, cache)


class BodyLimit:
    """ASGI middleware: bodies over ``limit`` bytes get 413 before the app parses them."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(send, int(declared))
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge(seen)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge as exc:
            await self._too_large(send, exc.size)

    async def _too_large(self, send, size: int) -> None:
        body = json.dumps(
            {
                "error": "BodyTooLarge",
                "detail": f"request body of {size} bytes exceeds the limit of {self.limit} bytes "
                "(ANTMETER_API_MAX_BODY_BYTES); use POST /predict/batch for long ranges",
                "field": "body",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        self.size = size


def _iso(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        return None
    if value is pd.NA:
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def records(frame: pd.DataFrame, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """JSON-ready rows: ISO times, None for NaN/NA."""
    if frame.empty:
        return []
    frame = frame[columns] if columns else frame
    return [{k: _iso(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]


def utc(value, field: str) -> pd.Timestamp | None:
    """A request time as UTC; naive times are rejected naming the field."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        raise BadInput(
            f"{field} must carry a UTC offset (e.g. 2024-01-01T00:00:00Z), got {value}", field=field
        )
    return stamp.tz_convert("UTC")


def candle_frame(rows: list[dict[str, Any]], source: str) -> pd.DataFrame:
    """A candle frame from JSON rows, ready for the candle contract (which checks everything else)."""
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame(columns=CANDLE_COLUMNS)
    extra = [c for c in frame.columns if c not in (*CANDLE_COLUMNS, "symbol")]
    if extra:
        raise BadInput(
            f"{source}: unknown column(s) {extra}; expected {CANDLE_COLUMNS}", field=",".join(map(str, extra))
        )
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInput(
            f"{source}: missing column(s) {missing}; expected {CANDLE_COLUMNS}", field=",".join(missing)
        )
    try:
        frame["open_time"] = pd.to_datetime(frame["open_time"], format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise BadInput(
            f"{source}: open_time must be ISO 8601 times with a UTC offset, all alike ({exc})",
            field="open_time",
        ) from None
    for column in CANDLE_COLUMNS[1:]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInput(
                f"{source}: {column} is not a number: {frame[column].iloc[row]!r}", field=column, row=row
            )
        frame[column] = numbers.astype("float64")
    return frame


def create_app(settings: ApiSettings | None = None, service: InferenceService | None = None) -> FastAPI:
    """The FastAPI app; ``service`` defaults to one built from ``settings`` (default: the environment)."""
    settings = settings or ApiSettings.from_env()
    launcher = DagsterLauncher(settings.dagster_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Iterator[None]:
        if getattr(app.state, "service", None) is None:
            app.state.service = build_service(settings)
        yield

    app = FastAPI(
        title="Antmeter API",
        version=_version(),
        description="Predictions of Antmeter's champion models: MLflow-style scoring (/invocations), "
        "domain endpoints, operator actions through Dagster and a live dashboard (/dashboard).",
        lifespan=lifespan,
    )
    app.state.service, app.state.settings = service, settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(CandleValidationError)
    @app.exception_handler(LiveInputError)
    async def bad_rows(_: Request, exc: CandleValidationError | LiveInputError):
        return JSONResponse(
            {"error": "BadInput", "detail": str(exc), "field": exc.field, "row": exc.row}, status_code=422
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ())]
        row = next((int(p) for p in loc if p.isdigit()), None)
        field = ".".join(p for p in loc if not p.isdigit()) or "body"
        return JSONResponse(
            {
                "error": "BadInput",
                "detail": f"{field}: {first.get('msg')}",
                "field": field,
                "row": row,
                "errors": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in errors[:20]],
            },
            status_code=422,
        )

    # -- MLflow scoring conventions ---------------------------------------------------------------

    @app.get("/ping", tags=["scoring"])
    def ping() -> dict[str, str]:
        """Liveness: the server answers."""
        return {"status": "ok"}

    @app.get("/health", tags=["scoring"])
    def health(service: Service) -> JSONResponse:
        """Each dependency's status: the market store, MLflow, the Dagster webserver and each champion.
        200 when the store and MLflow answer and at least one champion is loaded, else 503."""
        checks: dict[str, Any] = {}
        try:
            checks["store"] = {"status": "ok", "symbols": service.store.symbols()}
        except Exception as exc:  # a health check reports every failure instead of raising it
            checks["store"] = {"status": "error", "detail": type(exc).__name__}
        models: dict[str, Any] = {}
        try:
            service.client.search_registered_models(max_results=1)
            checks["mlflow"] = {"status": "ok"}
            for model_type in service.settings.model_types:
                served = service.champions.get(service.settings.registered_name(model_type))
                models[model_type] = (
                    {
                        "status": "ok",
                        "name": served.name,
                        "version": served.version,
                        "precision": served.model.precision,
                    }
                    if served
                    else {"status": "no_champion", "name": service.settings.registered_name(model_type)}
                )
        except Exception as exc:
            checks["mlflow"] = {"status": "error", "detail": type(exc).__name__}
        checks["models"] = models
        checks["dagster_webserver"] = {
            "status": "ok" if launcher.ping() else "unreachable",
            "url": settings.dagster_url,
        }
        healthy = (
            checks["store"]["status"] == "ok"
            and checks["mlflow"]["status"] == "ok"
            and any(m["status"] == "ok" for m in models.values())
        )
        return JSONResponse(
            {"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503
        )

    @app.get("/version", tags=["scoring"])
    def version(service: Service) -> dict[str, Any]:
        """The API's version, the libraries that score, and each champion's name and version."""
        served = {}
        for model_type in service.settings.model_types:
            champion = service.champions.get(service.settings.registered_name(model_type))
            served[model_type] = (
                None if champion is None else {"name": champion.name, "version": champion.version}
            )
        return {
            "antmeter": _version(),
            "mlflow": importlib.metadata.version("mlflow"),
            "onnxruntime": importlib.metadata.version("onnxruntime"),
            "models": served,
        }

    @app.post("/invocations", tags=["scoring"], response_model=schemas.Invocations)
    def invocations(body: schemas.Invocation, service: Service) -> dict[str, Any]:
        """Score MLflow-style input (see the ``Invocation`` schema): tensors of feature windows or a data
        frame of raw candles. Answers ``{"predictions": [...]}``."""
        given = [
            k
            for k in ("dataframe_split", "dataframe_records", "instances", "inputs")
            if getattr(body, k) is not None
        ]
        if len(given) != 1:
            raise BadInput(
                f"give exactly one of dataframe_split, dataframe_records, instances, inputs (got {given or 'none'})",
                field="body",
            )
        params = body.params or {}
        model = params.get("model")
        kind = given[0]
        if kind in ("instances", "inputs"):
            tensor = getattr(body, kind)
            if isinstance(tensor, dict):
                raise BadInput(
                    f"{kind} must be a [batch, window, features] list, not named tensors", field=kind
                )
            try:
                windows = np.asarray(tensor, dtype=np.float64)
            except (ValueError, TypeError):
                raise BadInput(
                    f"{kind} must be a rectangular [batch, window, features] list of numbers", field=kind
                ) from None
            served, proba, regression = service.score_windows(windows, model)
            classes = service.class_names(served)
            out = []
            for i in range(len(windows)):
                entry: dict[str, Any] = {}
                for h_index, horizon in enumerate(served.model.horizons):
                    p = proba[i, h_index]
                    for c_index, name in enumerate(classes):
                        entry[f"prob_{name}_{horizon}m"] = float(p[c_index])
                    entry[f"class_{horizon}m"] = int(p.argmax())
                    entry[f"confidence_{horizon}m"] = float(p.max())
                    entry[f"return_{horizon}m"] = float(regression[i, h_index])
                out.append(entry)
            return {"predictions": out}
        if kind == "dataframe_split":
            split = body.dataframe_split
            if not isinstance(split.get("columns"), list) or not isinstance(split.get("data"), list):
                raise BadInput("dataframe_split needs 'columns' and 'data' lists", field="dataframe_split")
            if any(not isinstance(r, list) or len(r) != len(split["columns"]) for r in split["data"]):
                raise BadInput(
                    "every dataframe_split.data row must have one value per column",
                    field="dataframe_split.data",
                )
            rows = [dict(zip(split["columns"], r, strict=True)) for r in split["data"]]
        else:
            rows = body.dataframe_records
        frame = candle_frame(rows, kind)
        symbol = params.get("symbol")
        if "symbol" in frame.columns:
            symbols = frame.pop("symbol").astype(str).unique()
            if len(symbols) != 1:
                raise BadInput(f"{kind}: one symbol per request, got {list(symbols)[:5]}", field="symbol")
            symbol = symbols[0]
        if not symbol:
            raise BadInput(f"{kind}: name the symbol in a 'symbol' column or params.symbol", field="symbol")
        predictions = service.predict_candles(frame, str(symbol), model)
        return {"predictions": records(predictions, PREDICTION_FIELDS)}

    # -- domain endpoints -------------------------------------------------------------------------

    @app.get("/predict", tags=["predictions"], response_model=schemas.LatestPrediction)
    def predict_latest(service: Service, symbol: Symbol, model: str | None = None) -> dict[str, Any]:
        """The champion's prediction from the newest closed candles in the store (cached per candle).
        Without ``model``: ``ANTMETER_API_DEFAULT_MODEL``, else the type whose champion has the best gate
        score. 503 when no champion serves or the newest candle is older than the staleness limit."""
        return service.predict_latest(symbol, model)

    @app.post("/predict", tags=["predictions"], response_model=schemas.PredictionRows)
    def predict_candles(body: schemas.PredictRequest, service: Service) -> dict[str, Any]:
        """Per-candle predictions from raw candles (checked by the project's candle contract), computed
        by the pipeline's feature code and the champion's ONNX bundle."""
        frame = candle_frame([c.model_dump() for c in body.candles], "candles")
        rows = service.predict_candles(frame, body.symbol, body.model)
        return {"count": len(rows), "predictions": records(rows, PREDICTION_FIELDS)}

    @app.post("/predict/batch", tags=["predictions"], response_model=schemas.PredictionRows)
    def predict_batch(body: schemas.BatchRequest, service: Service) -> dict[str, Any]:
        """Predictions for every stored candle of a symbol with open time in ``[start, end)``, in day chunks."""
        rows = service.predict_range(body.symbol, utc(body.start, "start"), utc(body.end, "end"), body.model)
        return {"count": len(rows), "predictions": records(rows, PREDICTION_FIELDS)}

    @app.get("/features", tags=["predictions"])
    def features(
        service: Service, symbol: Symbol, lookback: Annotated[int, Query(ge=1, le=20_000)] = 60
    ) -> dict[str, Any]:
        """The newest ``lookback`` rows of engineered features, as the pipeline computes them."""
        frame = service.features(symbol, lookback)
        return {"symbol": symbol, "count": len(frame), "columns": list(frame.columns), "rows": records(frame)}

    @app.get("/candles", tags=["predictions"])
    def candles(
        service: Service,
        symbol: Symbol,
        start: Annotated[dt.datetime | None, Query()] = None,
        end: Annotated[dt.datetime | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=20_000)] = 1_440,
    ) -> dict[str, Any]:
        """Stored candles of a symbol (newest ``limit`` in ``[start, end)``)."""
        service.check_symbol(symbol)
        frame = service.store.read_candles(
            symbol, service.settings.interval, utc(start, "start"), utc(end, "end")
        )
        return {"symbol": symbol, "candles": records(frame.tail(limit))}

    @app.get("/models", tags=["models"])
    def models(service: Service) -> dict[str, Any]:
        """Every registered model, its versions, the ``champion`` alias, gate results, holdout metrics."""
        return {"default_model": service.default_model_type(), "models": service.models()}

    @app.get("/models/{name}/versions/{version}", tags=["models"])
    def model_version(name: str, version: str, service: Service) -> dict[str, Any]:
        return service.model_version(name, version)

    @app.get("/model/labels", tags=["models"])
    def model_labels(service: Service, model: str | None = None) -> dict[str, Any]:
        """The champion's horizons, class names (probability order), window and feature order."""
        return service.labels(service.model_type(model))

    @app.get("/predictions", tags=["predictions"], response_model=schemas.PredictionRows)
    def predictions(
        service: Service,
        symbol: Annotated[str | None, Query(pattern=schemas.SYMBOL_PATTERN)] = None,
        model: str | None = None,
        horizon: Annotated[int | None, Query(ge=1)] = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=50_000)] = 5_000,
    ) -> dict[str, Any]:
        """Stored predictions (the pipeline's ``predictions`` table), newest ``limit``."""
        frame = service.stored_predictions(
            symbol, model, horizon, utc(start, "start"), utc(end, "end"), limit
        )
        return {"count": len(frame), "predictions": records(frame, PREDICTION_FIELDS)}

    @app.get("/outcomes", tags=["predictions"], response_model=schemas.Outcomes)
    def outcomes(
        service: Service,
        symbol: Annotated[str | None, Query(pattern=schemas.SYMBOL_PATTERN)] = None,
        model: str | None = None,
        horizon: Annotated[int | None, Query(ge=1)] = None,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=50_000)] = 5_000,
    ) -> dict[str, Any]:
        """Stored predictions joined with what the market did, the majority and persistence baselines (and
        the simulator's oracle on simulated candles) on the same rows, their accuracy over the returned
        rows and the rolling accuracy."""
        joined, summary, rolling = service.outcomes(
            symbol, model, horizon, utc(start, "start"), utc(end, "end"), limit
        )
        columns = [*PREDICTION_FIELDS, "realized_return", "realized_class", "correct"]
        columns += [
            c for c in ("majority_correct", "persistence_correct", "oracle_correct") if c in joined.columns
        ]
        return {
            "count": len(joined),
            "rolling_window": service.settings.rolling_window,
            "summary": records(summary),
            "rolling": records(rolling),
            "outcomes": records(joined, columns) if len(joined) else [],
        }

    # -- operator actions -------------------------------------------------------------------------

    def operator(authorization: Annotated[str | None, Header()] = None) -> None:
        if not settings.operator_token:
            raise OperatorRefused(
                403,
                f"operator endpoints are disabled: set {OPERATOR_TOKEN_ENV} on the API to enable them "
                "(then send 'Authorization: Bearer <token>')",
            )
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.encode(), settings.operator_token.encode()
        ):
            raise OperatorRefused(
                401, "operator endpoints need 'Authorization: Bearer <token>' with the right token"
            )

    Operator = Depends(operator)

    @app.exception_handler(OperatorRefused)
    async def refused(_: Request, exc: OperatorRefused):
        return JSONResponse({"error": "OperatorRefused", "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(DagsterUnavailable)
    async def no_dagster(_: Request, exc: DagsterUnavailable):
        return JSONResponse({"error": "DagsterUnavailable", "detail": str(exc)}, status_code=503)

    @app.exception_handler(LaunchFailed)
    async def launch_failed(_: Request, exc: LaunchFailed):
        return JSONResponse({"error": "LaunchFailed", "detail": str(exc)}, status_code=502)

    @app.post("/operator/verify", tags=["operator"], response_model=schemas.Launch, dependencies=[Operator])
    def verify() -> dict[str, Any]:
        """Launch the verification job (predictions joined with outcomes, report) on the webserver."""
        return launcher.launch_job("verification_job").__dict__

    @app.post("/operator/retrain", tags=["operator"], response_model=schemas.Launch, dependencies=[Operator])
    def retrain(body: schemas.RetrainRequest, service: Service) -> dict[str, Any]:
        """Launch a full or incremental retrain of one model type (dataset, candidate, promotion gate)."""
        model_type = service.model_type(body.model_type)
        assets = ["training_dataset", f"{model_type}_candidate", f"{model_type}_champion"]
        if body.mode == "full":
            return launcher.launch_job("training_job", assets).__dict__
        config = {"ops": {f"{model_type}_candidate": {"config": {"mode": "incremental"}}}}
        return launcher.launch_job("incremental_retrain_job", assets, run_config=config).__dict__

    @app.post("/operator/relabel", tags=["operator"], response_model=schemas.Launch, dependencies=[Operator])
    def relabel(body: schemas.RelabelRequest, service: Service) -> dict[str, Any]:
        """Backfill the features and labels partitions of a symbol over a date range (inclusive)."""
        service.check_symbol(body.symbol)
        if body.end_date < body.start_date or (body.end_date - body.start_date).days > 366:
            raise BadInput(
                "end_date must be on or after start_date, at most 366 days later", field="end_date"
            )
        days = pd.date_range(str(body.start_date), str(body.end_date), freq="D")
        partitions = [f"{d.date()}|{body.symbol}" for d in days]
        title = f"relabel {body.symbol} {body.start_date}..{body.end_date}"
        return launcher.backfill_assets(["features", "labels"], partitions, title).__dict__

    # -- chart patterns ---------------------------------------------------------------------------

    @app.get("/patterns/models", tags=["patterns"], response_model=schemas.PatternModels)
    def pattern_models(patterns: Patterns) -> dict[str, Any]:
        """Each pattern classifier (``rf``, ``hgb``): its registered name and its champion, if any."""
        return {"models": patterns.models()}

    @app.get("/patterns/labels", tags=["patterns"], response_model=schemas.PatternLabels)
    def pattern_labels(patterns: Patterns, kind: Literal["rf", "hgb"] | None = None) -> dict[str, Any]:
        """The champion pattern classifier's labels with their chart colours (``O``, no pattern, left out)."""
        return patterns.labels(kind)

    @app.post("/patterns/predict", tags=["patterns"], response_model=schemas.PatternPrediction)
    def pattern_predict(body: schemas.PatternPredictRequest, patterns: Patterns) -> dict[str, Any]:
        """Predicted pattern spans (consecutive candles with one label, mean confidence) from the champion
        pattern classifier, and where they disagree with the stored human annotations."""
        candles = (
            None if body.candles is None else candle_frame([c.model_dump() for c in body.candles], "candles")
        )
        spans, info = patterns.predict(
            body.symbol,
            candles,
            utc(body.start, "start"),
            utc(body.end, "end"),
            body.kind,
            body.min_confidence,
        )
        columns = ["symbol", "start_time", "end_time", "label", "confidence", "candles"]
        return {
            "symbol": body.symbol,
            "model_info": info,
            "spans": records(spans, columns),
            "disagreements": records(
                patterns.disagreements(body.symbol, spans).drop(columns="symbol", errors="ignore")
            ),
        }

    @app.post(
        "/patterns/feedback",
        tags=["patterns"],
        response_model=schemas.AnnotationRecord,
        dependencies=[Operator],
    )
    def pattern_feedback(body: schemas.FeedbackRequest, patterns: Patterns) -> dict[str, Any]:
        """Accept a predicted span (stored as a ``human`` annotation) or dismiss it (a ``human_correction``
        labelled ``O``, the model's prediction attached); the next ``pattern_dataset`` trains on it."""
        return patterns.feedback(
            body.symbol,
            utc(body.start_time, "start_time"),
            utc(body.end_time, "end_time"),
            body.label,
            body.accepted,
            body.confidence,
        )

    @app.get("/annotations/export", tags=["patterns"], response_model=schemas.AnnotationExport)
    def annotations_export(
        patterns: Patterns,
        symbol: Annotated[str | None, Query(pattern=schemas.SYMBOL_PATTERN)] = None,
        min_confidence: Annotated[float, Query(ge=0, le=1)] = 0.0,
    ) -> dict[str, Any]:
        """The stored annotations (files, feedback) in the pipeline's annotation JSON format."""
        return patterns.export(symbol, min_confidence)

    # -- dashboard --------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    @app.get("/dashboard", include_in_schema=False)
    def dashboard_index(service: Service) -> RedirectResponse:
        symbols = service.store.symbols()
        return RedirectResponse(f"/dashboard/{symbols[0] if symbols else 'BTCUSDT'}")

    @app.get("/dashboard/{symbol}", include_in_schema=False)
    def dashboard(symbol: str) -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html")

    return app


class OperatorRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


PREDICTION_FIELDS = [
    "symbol",
    "prediction_time",
    "horizon_min",
    "model_name",
    "model_version",
    "prob_down",
    "prob_flat",
    "prob_up",
    "predicted_class",
    "confidence",
    "predicted_return",
]


def _version() -> str:
    try:
        return importlib.metadata.version("antmeter")
    except importlib.metadata.PackageNotFoundError:
        return "0+local"

"""Pattern classifiers in MLflow: logging, registration and the macro-F1 paired-bootstrap gate.

The gate compares the candidate with the champion (scored through its own ONNX bundle on the same
held-out candles) or, for the first champion, with the best of the majority baseline and the TA-Lib
rule. Holdout candles are autocorrelated (a span covers tens of candles), so the paired bootstrap
resamples *blocks* of consecutive candles (moving-block bootstrap, ``block`` candles, default longer
than any span). The candidate is promoted when the one-sided bootstrap p-value of "macro-F1
difference <= 0" is below ``alpha``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from antmeter.learn.patterns import PatternCandidate, PatternSamples, export_pattern_bundle
from antmeter.registry import versions
from antmeter.registry.tracking import git_commit


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> float:
    """Macro F1 over ``labels`` (a label with no support and no prediction scores 0, like scikit-learn's
    ``zero_division=0``), from a confusion count; vectorised for the bootstrap."""
    index = {label: i for i, label in enumerate(labels)}
    t = np.array([index.get(v, -1) for v in y_true])
    p = np.array([index.get(v, -1) for v in y_pred])
    return _macro_f1_codes(t, p, len(labels))


def _macro_f1_codes(t: np.ndarray, p: np.ndarray, k: int) -> float:
    tp = np.bincount(t[(t == p) & (t >= 0)], minlength=k)[:k].astype(float)
    true_n = np.bincount(t[t >= 0], minlength=k)[:k].astype(float)
    pred_n = np.bincount(p[p >= 0], minlength=k)[:k].astype(float)
    denominator = true_n + pred_n
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1.mean())


def paired_block_bootstrap(
    y_true: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    labels: list[str],
    block: int = 60,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Macro-F1 difference (candidate - reference) with a moving-block paired bootstrap: its 95% interval
    and the one-sided p-value ``P(diff <= 0)``. Rows must be in time order (per symbol blocks are cut
    through, which only shortens dependence)."""
    n = len(y_true)
    if n == 0:
        raise ValueError("paired_block_bootstrap needs at least one row")
    index = {label: i for i, label in enumerate(labels)}
    t, c, r = (np.array([index.get(v, -1) for v in arr]) for arr in (y_true, candidate, reference))
    k = len(labels)
    observed = _macro_f1_codes(t, c, k) - _macro_f1_codes(t, r, k)
    block = max(1, min(block, n))
    n_blocks = int(np.ceil(n / block))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        starts = rng.integers(0, n - block + 1, n_blocks)
        rows = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
        diffs[b] = _macro_f1_codes(t[rows], c[rows], k) - _macro_f1_codes(t[rows], r[rows], k)
    return {
        "diff": float(observed),
        "ci_low": float(np.quantile(diffs, 0.025)),
        "ci_high": float(np.quantile(diffs, 0.975)),
        "p_value": float((np.sum(diffs <= 0) + 1) / (n_boot + 1)),
        "n_boot": float(n_boot),
        "block": float(block),
    }


@dataclass(frozen=True)
class PatternGateDecision:
    promote: bool
    reason: str
    reference: str
    test: dict[str, float]


def decide_pattern_promotion(
    y_true: np.ndarray,
    candidate_pred: np.ndarray,
    references: dict[str, np.ndarray],
    labels: list[str],
    alpha: float = 0.05,
    block: int = 60,
    n_boot: int = 1000,
    seed: int = 0,
) -> PatternGateDecision:
    """Promote when the candidate's macro-F1 is significantly above the strongest reference (the
    champion when ``references`` holds one, else the baselines): bootstrap p-value < ``alpha``."""
    if not references:
        raise ValueError("decide_pattern_promotion needs at least one reference (champion or baselines)")
    scores = {name: macro_f1(y_true, pred, labels) for name, pred in references.items()}
    strongest = max(scores, key=scores.get)
    test = paired_block_bootstrap(y_true, candidate_pred, references[strongest], labels, block, n_boot, seed)
    promote = test["p_value"] < alpha and test["diff"] > 0
    reason = (
        f"macro-F1 {macro_f1(y_true, candidate_pred, labels):.4f} vs {strongest} {scores[strongest]:.4f}: "
        f"diff {test['diff']:+.4f} (95% CI {test['ci_low']:+.4f} .. {test['ci_high']:+.4f}, "
        f"block-bootstrap p {test['p_value']:.4f} {'<' if promote else '>='} {alpha})"
    )
    return PatternGateDecision(promote, ("PROMOTED: " if promote else "REJECTED: ") + reason, strongest, test)


def _flat_metrics(prefix: str, scores: dict[str, Any]) -> dict[str, float]:
    out = {f"{prefix}.{k}": float(v) for k, v in scores.items() if isinstance(v, int | float)}
    for label, values in scores.get("per_class", {}).items():
        for name in ("precision", "recall", "f1"):
            out[f"{prefix}.{name}.{label}"] = float(values[name])
    return out


def log_pattern_candidate(
    client,
    registered_name: str,
    candidate: PatternCandidate,
    samples: PatternSamples,
    dataset: dict[str, Any],
) -> tuple[str, str, Path, dict[str, float]]:
    """Log the candidate's holdout metrics (next to the baselines), folds, confusion matrix, report and
    feature importance to MLflow, export its ONNX bundle and register it; returns (run id, version,
    bundle dir, ONNX parity)."""
    import mlflow

    bundle = Path(tempfile.mkdtemp(prefix=f"antmeter-{registered_name}-"))
    parity = export_pattern_bundle(candidate, samples, bundle)
    with mlflow.start_run(run_name=f"{registered_name}-{candidate.kind}") as run:
        mlflow.set_tags(
            {
                "model_family": "pattern",
                "kind": candidate.kind,
                "git_commit": git_commit(),
                "dataset_fingerprint": str(dataset.get("fingerprint", "")),
            }
        )
        mlflow.log_params(
            {
                **{f"spec.{k}": v for k, v in vars(candidate.spec).items()},
                "train_samples": candidate.train_samples,
                "holdout_samples": len(candidate.holdout),
                "classes": ",".join(candidate.classes),
            }
        )
        metrics = _flat_metrics("holdout", candidate.metrics)
        for name, scores in candidate.baselines.items():
            metrics.update(_flat_metrics(f"baseline.{name}", scores))
        for fold in candidate.folds:
            metrics.update({f"fold{fold['fold']}.{k}": float(v) for k, v in fold.items() if k != "fold"})
        metrics.update(parity)
        mlflow.log_metrics(metrics)
        mlflow.log_dict(candidate.metrics["confusion_matrix"], "confusion_matrix.json")
        mlflow.log_text(candidate.metrics["report"], "classification_report.txt")
        for name, scores in candidate.baselines.items():
            mlflow.log_text(scores["report"], f"baselines/{name}_classification_report.txt")
        ranked = dict(sorted(candidate.feature_importance.items(), key=lambda kv: -kv[1]))
        mlflow.log_dict(ranked, "feature_importance.json")
        mlflow.log_dict(samples.statistics, "dataset_statistics.json")
        (bundle / "metrics.json").write_text(json.dumps({k: v for k, v in metrics.items()}, indent=1))
        run_id = run.info.run_id
    version = versions.register_bundle(
        client, registered_name, run_id, bundle, tags={"model_family": "pattern"}
    )
    return run_id, str(version.version), bundle, parity

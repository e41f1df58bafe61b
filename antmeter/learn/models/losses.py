"""The multi-task loss: per-horizon cross-entropy (or focal loss) plus weighted MSE on standardized returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

LOSS_DEFAULTS = {"class_weight": 1.0, "regression_weight": 0.5, "focal_gamma": 0.0, "horizon_weights": None}


class MultiTaskLoss(nn.Module):
    """``class_weight * mean_h CE_h + regression_weight * mean_h MSE_h`` (horizons weighted if given).

    ``focal_gamma > 0`` replaces cross-entropy with focal loss ``-(1 - p_t)^gamma log p_t``. Regression
    targets must already be standardized (the training module does it with train-set statistics).
    """

    def __init__(
        self,
        n_horizons: int,
        *,
        class_weight: float = 1.0,
        regression_weight: float = 0.5,
        focal_gamma: float = 0.0,
        horizon_weights: Sequence[float] | None = None,
    ):
        super().__init__()
        if class_weight < 0 or regression_weight < 0 or class_weight + regression_weight == 0:
            raise ValueError(
                f"loss weights must be >= 0 and not both 0, got class_weight={class_weight}, "
                f"regression_weight={regression_weight}"
            )
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
        weights = (
            torch.ones(n_horizons)
            if horizon_weights is None
            else torch.as_tensor(horizon_weights, dtype=torch.float32)
        )
        if weights.shape != (n_horizons,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(
                f"horizon_weights must be {n_horizons} non-negative numbers, got {horizon_weights}"
            )
        self.register_buffer("horizon_weights", weights / weights.sum(), persistent=False)
        self.class_weight, self.regression_weight, self.focal_gamma = (
            class_weight,
            regression_weight,
            focal_gamma,
        )

    @classmethod
    def from_config(cls, n_horizons: int, config: Mapping | None) -> MultiTaskLoss:
        """Build from a config mapping (keys of :data:`LOSS_DEFAULTS`); unknown keys are an error."""
        config = dict(config or {})
        unknown = sorted(set(config) - set(LOSS_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown loss setting(s) {unknown}; expected some of {sorted(LOSS_DEFAULTS)}")
        return cls(n_horizons, **{**LOSS_DEFAULTS, **config})

    def forward(
        self,
        logits: torch.Tensor,
        regression: torch.Tensor,
        y_class: torch.Tensor,
        y_reg_standardized: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "class_loss", "regression_loss"}`` for logits ``[B, H, C]`` and outputs ``[B, H]``."""
        log_proba = F.log_softmax(logits.float(), dim=-1)
        log_p_true = log_proba.gather(-1, y_class.long().unsqueeze(-1)).squeeze(-1)  # [B, H]
        per_sample = -log_p_true
        if self.focal_gamma > 0:
            per_sample = per_sample * (1.0 - log_p_true.exp()).pow(self.focal_gamma)
        class_loss = (per_sample.mean(dim=0) * self.horizon_weights).sum()
        regression_loss = (
            (regression.float() - y_reg_standardized).pow(2).mean(dim=0) * self.horizon_weights
        ).sum()
        loss = self.class_weight * class_loss + self.regression_weight * regression_loss
        return {"loss": loss, "class_loss": class_loss, "regression_loss": regression_loss}

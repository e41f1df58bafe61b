"""Stacked LSTM classifier/regressor (the Coinsphere layout).

``x [B, W, F]`` → LSTM(128) → dropout → LSTM(64) → dropout → LSTM(32) → dropout → last time step →
Dense(16, ReLU) → class logits ``[B, H, C]`` and regression ``[B, H]``. Every size comes from params.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from antmeter.learn.models.layers import MultiTaskHead

DEFAULTS = {"lstm_units": [128, 64, 32], "dropout": 0.2, "dense_units": 16}


class StackedLSTM(nn.Module):
    """LSTM layers of decreasing width with dropout between them, then a dense layer and two heads."""

    def __init__(
        self,
        *,
        n_features: int,
        n_horizons: int,
        n_classes: int,
        lstm_units: Sequence[int] = (128, 64, 32),
        dropout: float = 0.2,
        dense_units: int = 16,
    ):
        super().__init__()
        if not lstm_units or any(int(u) < 1 for u in lstm_units):
            raise ValueError(f"lstm_units must be a non-empty list of positive sizes, got {list(lstm_units)}")
        sizes = [n_features, *(int(u) for u in lstm_units)]
        self.lstms = nn.ModuleList(
            nn.LSTM(input_size, hidden, batch_first=True)
            for input_size, hidden in zip(sizes, sizes[1:], strict=False)
        )
        self.dropout = nn.Dropout(dropout)
        self.dense = nn.Sequential(nn.Linear(sizes[-1], dense_units), nn.ReLU())
        self.head = MultiTaskHead(dense_units, n_horizons, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for lstm in self.lstms:
            x, _ = lstm(x)
            x = self.dropout(x)
        return self.head(self.dense(x[:, -1]))

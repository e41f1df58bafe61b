"""Transformer encoder over the window (the TickerML layout).

``x [B, W, F]`` → Linear(F, d_model) → + sinusoidal positions → ``depth`` pre-norm encoder layers
(``n_heads`` heads, GELU feed-forward) → LayerNorm → the **last** position → class logits ``[B, H, C]``
and regression ``[B, H]``. Defaults: d_model 128, 4 heads, depth 4, d_ff 512, dropout 0.1.
"""

from __future__ import annotations

import torch
from torch import nn

from antmeter.learn.models.layers import Encoder, MultiTaskHead, SinusoidalPositionalEncoding

DEFAULTS = {"d_model": 128, "n_heads": 4, "depth": 4, "d_ff": 512, "dropout": 0.1}


class TransformerModel(nn.Module):
    """Input projection, positional encoding, an encoder stack and heads on the last time step."""

    def __init__(
        self,
        *,
        n_features: int,
        window: int,
        n_horizons: int,
        n_classes: int,
        d_model: int = 128,
        n_heads: int = 4,
        depth: int = 4,
        d_ff: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.projection = nn.Linear(n_features, d_model)
        self.positions = SinusoidalPositionalEncoding(d_model, window)
        self.input_dropout = nn.Dropout(dropout)
        self.encoder = Encoder(
            depth, d_model=d_model, n_heads=n_heads, d_ff=d_ff, dropout=dropout, norm="layer", pre_norm=True
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.head = MultiTaskHead(d_model, n_horizons, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(self.input_dropout(self.positions(self.projection(x))))
        return self.head(self.final_norm(hidden[:, -1]))

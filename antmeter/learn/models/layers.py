"""Building blocks shared by the sequence models: positional encoding, encoder layer, RevIN, heads.

Everything here is plain ``torch.nn`` that the TorchScript ONNX exporter handles (no fused attention
kernels, no data-dependent control flow), so every model built from it exports with a dynamic batch axis.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine encoding of Vaswani et al. to ``x [B, T, D]`` (T <= ``max_len``)."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
        )
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.table[: x.shape[1]]


class BatchNormOverTime(nn.Module):
    """``BatchNorm1d`` over the feature axis of ``[B, T, D]`` (PatchTST's encoder norm)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, d_model: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(d_model)
    if kind == "batch":
        return BatchNormOverTime(d_model)
    raise ValueError(f"norm must be 'layer' or 'batch', got {kind!r}")


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention written out (exports to plain MatMul/Softmax ONNX nodes).

    ``forward`` takes optional pre-softmax scores of the previous layer (``residual`` attention, as in
    PatchTST) and returns ``(output, scores)``.
    """

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.scale = self.head_dim**-0.5

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        length, width = x.shape[1], x.shape[2]
        q, k, v = (
            t.reshape(-1, length, self.n_heads, self.head_dim).transpose(1, 2)
            for t in self.qkv(x).chunk(3, dim=-1)
        )
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        if prev_scores is not None:
            scores = scores + prev_scores
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(weights, v).transpose(1, 2).reshape(-1, length, width)
        return self.out(context), scores


class EncoderLayer(nn.Module):
    """One transformer encoder layer: self-attention and a GELU feed-forward, each with a residual.

    ``pre_norm`` normalizes before each sub-layer (stable for deep stacks); otherwise after the residual
    sum (the original transformer and PatchTST). ``norm`` is ``"layer"`` or ``"batch"``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float,
        *,
        attn_dropout: float = 0.0,
        norm: str = "layer",
        pre_norm: bool = True,
    ):
        super().__init__()
        self.attention = MultiHeadSelfAttention(d_model, n_heads, attn_dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.norm_attention, self.norm_feed_forward = _norm(norm, d_model), _norm(norm, d_model)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self, x: torch.Tensor, prev_scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pre_norm:
            attended, scores = self.attention(self.norm_attention(x), prev_scores)
            x = x + self.dropout(attended)
            return x + self.dropout(self.feed_forward(self.norm_feed_forward(x))), scores
        attended, scores = self.attention(x, prev_scores)
        x = self.norm_attention(x + self.dropout(attended))
        return self.norm_feed_forward(x + self.dropout(self.feed_forward(x))), scores


class Encoder(nn.Module):
    """A stack of :class:`EncoderLayer`; ``residual_attention`` passes scores from layer to layer."""

    def __init__(self, depth: int, *, residual_attention: bool = False, **layer_kwargs):
        super().__init__()
        if depth < 1:
            raise ValueError(f"encoder depth must be >= 1, got {depth}")
        self.layers = nn.ModuleList(EncoderLayer(**layer_kwargs) for _ in range(depth))
        self.residual_attention = residual_attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = None
        for layer in self.layers:
            x, layer_scores = layer(x, scores)
            scores = layer_scores if self.residual_attention else None
        return x


class RevIN(nn.Module):
    """Reversible instance normalization (Kim et al., 2022) over the time axis of ``x [B, T, C]``.

    :meth:`normalize` returns the normalized series and the per-instance ``(mean, std)`` statistics;
    :meth:`denormalize` maps a ``[B, T', C]`` output back to the input's scale with them.
    """

    def __init__(self, n_channels: int, *, affine: bool = False, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(n_channels))
            self.bias = nn.Parameter(torch.zeros(n_channels))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        out = (x - mean) / std
        if self.affine:
            out = out * self.weight + self.bias
        return out, (mean, std)

    def denormalize(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        mean, std = stats
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


class MultiTaskHead(nn.Module):
    """Class logits ``[B, H, C]`` and regression outputs ``[B, H]`` from a feature vector ``[B, D]``."""

    def __init__(self, in_features: int, n_horizons: int, n_classes: int):
        super().__init__()
        self.n_horizons, self.n_classes = n_horizons, n_classes
        self.classifier = nn.Linear(in_features, n_horizons * n_classes)
        self.regressor = nn.Linear(in_features, n_horizons)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(features).reshape(-1, self.n_horizons, self.n_classes)
        return logits, self.regressor(features)


class LinearHighway(nn.Module):
    """A model plus a linear map of the window's last time step added to its outputs (LSTNet's
    autoregressive "highway", Lai et al. 2018): the network learns the non-linear rest on top of what a
    linear model of the newest features already explains. Same interface as the wrapped model."""

    def __init__(self, body: nn.Module, n_features: int, n_horizons: int, n_classes: int):
        super().__init__()
        self.body = body
        self.linear = MultiTaskHead(n_features, n_horizons, n_classes)
        for layer in (self.linear.classifier, self.linear.regressor):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, regression = self.body(x)
        linear_logits, linear_regression = self.linear(x[:, -1])
        return logits + linear_logits, regression + linear_regression

"""PatchTST (Nie et al., 2023): channel-independent patch transformer with RevIN.

Each of the ``C`` input channels (features) is one univariate series. RevIN normalizes every series by its
own mean and std over the window, the series is cut into patches of ``patch_len`` steps every ``stride``
steps (the end is padded by repeating the last value ``stride`` times, as in the reference code), each
patch is embedded linearly, a learned position is added, and one shared encoder (BatchNorm, residual
attention, post-norm) reads every channel's patch sequence independently.

Two heads on that backbone:

* :class:`PatchTSTForecaster` — the paper's flatten head: ``[B, L, C]`` → ``[B, horizon, C]`` forecasts in
  the input's scale (RevIN is undone). Used standalone for the ETTh1 check in ``bench/``.
* :class:`PatchTSTModel` — the multi-task interface: each channel's patch tokens are pooled (``"mean"`` over
  patches or a learned ``"cls"`` token), the channels' vectors are concatenated and fed to class + regression
  heads: ``[B, W, F]`` → ``(logits [B, H, C], regression [B, H])``.
"""

from __future__ import annotations

import torch
from torch import nn

from antmeter.learn.models.layers import Encoder, MultiTaskHead, RevIN

DEFAULTS = {
    "patch_len": 12,
    "stride": 6,
    "d_model": 64,
    "n_heads": 4,
    "depth": 3,
    "d_ff": 128,
    "dropout": 0.2,
    "attn_dropout": 0.0,
    "head_dropout": 0.0,
    "pooling": "cls",
    "revin": True,
    "revin_affine": False,
}
POOLINGS = ("cls", "mean")


def patch_count(window: int, patch_len: int, stride: int, *, pad_end: bool = True) -> int:
    """How many patches a window yields (42 for window 336, patch 16, stride 8 with end padding)."""
    if patch_len < 1 or stride < 1:
        raise ValueError(f"patch_len and stride must be >= 1, got {patch_len} and {stride}")
    if window < patch_len:
        raise ValueError(f"window ({window}) must be at least patch_len ({patch_len})")
    return (window + (stride if pad_end else 0) - patch_len) // stride + 1


class PatchTSTBackbone(nn.Module):
    """Patching, patch embedding + learned positions, and the channel-independent encoder.

    ``forward(x [B, L, C])`` → ``[B, C, tokens, d_model]`` where ``tokens`` is the patch count, plus one
    leading token when ``cls_token`` is set.
    """

    def __init__(
        self,
        *,
        window: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 128,
        n_heads: int = 16,
        depth: int = 3,
        d_ff: int = 256,
        dropout: float = 0.2,
        attn_dropout: float = 0.0,
        cls_token: bool = False,
    ):
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        self.n_patches = patch_count(window, patch_len, stride)
        # Patch p covers steps p*stride .. p*stride + patch_len - 1; steps past the end repeat the last value
        # (the reference code's ReplicationPad1d((0, stride)) + unfold), as one gather that exports to ONNX.
        starts = torch.arange(self.n_patches).unsqueeze(1) * stride
        index = (starts + torch.arange(patch_len)).clamp(max=window - 1)
        self.register_buffer("patch_index", index, persistent=False)
        self.embed = nn.Linear(patch_len, d_model)
        n_tokens = self.n_patches + int(cls_token)
        self.positions = nn.Parameter(torch.empty(n_tokens, d_model).uniform_(-0.02, 0.02))
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if cls_token else None
        self.dropout = nn.Dropout(dropout)
        self.encoder = Encoder(
            depth,
            residual_attention=True,
            d_model=d_model,
            n_heads=n_heads,
            d_ff=d_ff,
            dropout=dropout,
            attn_dropout=attn_dropout,
            norm="batch",
            pre_norm=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_channels = x.shape[2]
        patches = x.transpose(1, 2)[:, :, self.patch_index]  # [B, C, N, P]
        tokens = self.embed(patches).reshape(-1, self.n_patches, self.embed.out_features)  # [B*C, N, D]
        if self.cls is not None:
            tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        hidden = self.encoder(self.dropout(tokens + self.positions))
        return hidden.reshape(-1, n_channels, hidden.shape[1], hidden.shape[2])


class PatchTSTForecaster(nn.Module):
    """The paper's forecaster: ``x [B, L, C]`` → ``[B, horizon, C]`` in the input's scale."""

    def __init__(
        self,
        *,
        n_channels: int,
        window: int,
        horizon: int,
        revin: bool = True,
        revin_affine: bool = False,
        head_dropout: float = 0.0,
        **backbone_params,
    ):
        super().__init__()
        self.revin = RevIN(n_channels, affine=revin_affine) if revin else None
        self.backbone = PatchTSTBackbone(window=window, cls_token=False, **backbone_params)
        d_model = self.backbone.embed.out_features
        self.head = nn.Sequential(
            nn.Flatten(start_dim=-2),
            nn.Dropout(head_dropout),
            nn.Linear(self.backbone.n_patches * d_model, horizon),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        forecast = self.head(self.backbone(x)).transpose(1, 2)  # [B, horizon, C]
        if self.revin is not None:
            forecast = self.revin.denormalize(forecast, stats)
        return forecast


class PatchTSTModel(nn.Module):
    """PatchTST for the multi-task interface: pooled channel tokens → class logits and regression."""

    def __init__(
        self,
        *,
        n_features: int,
        window: int,
        n_horizons: int,
        n_classes: int,
        pooling: str = "cls",
        revin: bool = True,
        revin_affine: bool = False,
        head_dropout: float = 0.0,
        **backbone_params,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"patchtst pooling must be one of {POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        self.revin = RevIN(n_features, affine=revin_affine) if revin else None
        self.backbone = PatchTSTBackbone(window=window, cls_token=pooling == "cls", **backbone_params)
        d_model = self.backbone.embed.out_features
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = MultiTaskHead(n_features * d_model, n_horizons, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.revin is not None:
            x, _ = self.revin.normalize(x)
        hidden = self.backbone(x)  # [B, C, tokens, D]
        pooled = hidden[:, :, 0] if self.pooling == "cls" else hidden.mean(dim=2)
        return self.head(self.head_dropout(pooled.flatten(start_dim=1)))

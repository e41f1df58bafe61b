"""Training recipe for the multi-task models: Lightning fit with early stopping, resumable checkpoints,
prediction, safetensors weights and fine-tuning.

Reproducibility: :func:`train_model` seeds everything once, and at the start of every epoch the module
reseeds torch from ``(seed, epoch)`` while the sampler draws that epoch's order from its own generator
seeded the same way. Together with ``last.ckpt`` (written at the end of every epoch) a run killed part-way
and started again with the same arguments resumes at the next epoch and ends with exactly the weights of
an uninterrupted run. Checkpoints are Lightning ``.ckpt`` files written by this code; they are read back
with ``weights_only=True`` (no unpickling of arbitrary objects). Exported weights are ``safetensors`` plus a
JSON config, rebuilt from code by :func:`load_weights`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from antmeter.learn.models import ModelSpec, MultiTaskLoss, build_model, build_model_from_spec

if TYPE_CHECKING:
    from antmeter.learn.distributed import DistributedConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
PROGRESS_FILE = "progress.json"
FORMAT = "antmeter-model/1"
LR_SCHEDULES = ("constant", "cosine")
_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*isinstance\(treespec, LeafSpec\).*",
)


@dataclass(frozen=True)
class TargetScaler:
    """Per-horizon standardization of regression targets, fitted on training targets only."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, y_reg: np.ndarray) -> TargetScaler:
        """Fit on training targets ``[N, H]`` (all finite); a constant horizon gets std 1."""
        y = np.asarray(y_reg, dtype=np.float64)
        if y.ndim != 2 or y.shape[0] == 0:
            raise ValueError(f"regression targets must have shape (N >= 1, H), got {y.shape}")
        bad = np.argwhere(~np.isfinite(y))
        if bad.size:
            row, col = (int(v) for v in bad[0])
            raise ValueError(
                f"training regression target at sample {row}, horizon index {col} is {y[row, col]}"
            )
        std = y.std(axis=0)
        std[std < 1e-12] = 1.0
        return cls(tuple(float(v) for v in y.mean(axis=0)), tuple(float(v) for v in std))

    def transform(self, y_reg: np.ndarray) -> np.ndarray:
        """Raw returns → standardized units."""
        return ((np.asarray(y_reg, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def inverse(self, standardized: np.ndarray) -> np.ndarray:
        """Model outputs (standardized units) → raw returns."""
        return (np.asarray(standardized, dtype=np.float64) * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetScaler:
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


@dataclass
class TrainResult:
    """What a fit produced. ``model`` holds the best-validation weights, in eval mode, on the CPU."""

    model: nn.Module
    module: MultiTaskModule
    best_val_loss: float
    epochs_run: int
    history: list[dict[str, float]]
    checkpoint_path: Path | None
    last_checkpoint_path: Path | None
    target_scaler: TargetScaler
    resumed_from: Path | None = None
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class EpochSeededSampler(Sampler[int]):
    """A random permutation per epoch drawn from ``(seed, epoch)`` alone, so a resumed run sees the same
    order as an uninterrupted one. Lightning calls :meth:`set_epoch` before every training epoch."""

    def __init__(self, n_samples: int, seed: int):
        self.n_samples, self.seed, self.epoch = n_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n_samples, generator=generator).tolist())


def _epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**63 - 1)


class MultiTaskModule(L.LightningModule):
    """Lightning wrapper around any multi-task model: standardizes regression targets with
    ``target_scaler``, applies :class:`MultiTaskLoss`, optimizes with AdamW and an optional per-step
    schedule, and records one history row per epoch (kept in checkpoints, so it survives a resume)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        target_scaler: TargetScaler,
        loss: Mapping[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_schedule: str = "constant",
        warmup_fraction: float = 0.0,
        seed: int = 0,
        on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    ):
        super().__init__()
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.model = model
        n_horizons = len(target_scaler.mean)
        self.loss_fn = MultiTaskLoss.from_config(n_horizons, loss)
        self.register_buffer("target_mean", torch.tensor(target_scaler.mean, dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor(target_scaler.std, dtype=torch.float32))
        self.lr, self.weight_decay = lr, weight_decay
        self.lr_schedule, self.warmup_fraction, self.seed = lr_schedule, warmup_fraction, seed
        self.on_epoch_end = on_epoch_end
        self.history: list[dict[str, float]] = []
        self._sums: dict[str, torch.Tensor] = {}
        self._val_means: dict[str, float] = {}

    @property
    def target_scaler(self) -> TargetScaler:
        return TargetScaler(tuple(self.target_mean.tolist()), tuple(self.target_std.tolist()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x)

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y_class, y_reg = batch[0], batch[1], batch[2]
        logits, regression = self.model(x)
        losses = self.loss_fn(
            logits, regression, y_class, (y_reg.float() - self.target_mean) / self.target_std
        )
        n = x.shape[0]
        totals = torch.stack([losses["loss"], losses["class_loss"], losses["regression_loss"]]).detach() * n
        self._sums[stage] = self._sums.get(stage, torch.zeros(4, device=x.device)) + torch.cat(
            [totals, torch.tensor([n], dtype=totals.dtype, device=x.device)]
        )
        return losses["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def _epoch_means(self, stage: str) -> dict[str, float]:
        sums = self._sums.pop(stage, None)
        if sums is None or sums[3] == 0:
            return {}
        values = (sums[:3] / sums[3]).tolist()
        return {
            f"{stage}_loss": values[0],
            f"{stage}_class_loss": values[1],
            f"{stage}_regression_loss": values[2],
        }

    def on_train_epoch_start(self) -> None:
        self._sums.pop("train", None)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Reseed at the first batch, after Lightning has (re)created the data iterators (whose creation
        # draws from the global generator differently on a fresh and on a resumed run).
        if batch_idx == 0:
            seed = _epoch_seed(self.seed, self.current_epoch)
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)

    def on_validation_epoch_start(self) -> None:
        self._sums.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._val_means = self._epoch_means("val")
        if self._val_means:
            self.log("val_loss", self._val_means["val_loss"], prog_bar=True)

    def on_train_epoch_end(self) -> None:
        row: dict[str, float] = {"epoch": int(self.current_epoch), **self._epoch_means("train")}
        row.update(self._val_means)
        row["lr"] = (
            float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else self.lr
        )
        self.history.append(row)
        if self.on_epoch_end is not None:
            self.on_epoch_end(dict(row))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(total * self.warmup_fraction)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["antmeter_history"] = [dict(row) for row in self.history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = [dict(row) for row in checkpoint.get("antmeter_history", [])]


class _ProgressFile(Callback):
    """Writes ``progress.json`` atomically at each epoch start (the previous epoch's ``last.ckpt`` is
    complete by then) and at the end of training, so other processes can follow a run."""

    def __init__(self, path: Path):
        self.path = path

    def _write(self, payload: dict[str, Any]) -> None:
        _atomic_write_text(self.path, json.dumps(payload))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # one writer in a DDP process group
            self._write({"completed_epochs": int(trainer.current_epoch), "finished": False})

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._write({"completed_epochs": len(getattr(pl_module, "history", [])), "finished": True})


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False, encoding="utf-8"
    ) as fh:
        fh.write(text)
        tmp = fh.name
    os.replace(tmp, path)


def dataset_targets(dataset: Dataset) -> np.ndarray:
    """The regression targets ``[N, H]`` of a dataset with the ``(x, y_class, y_reg, symbol_id)`` layout
    (read from a ``y_reg`` array attribute when the dataset has one, else by iterating it)."""
    n = len(dataset)  # type: ignore[arg-type]
    direct = getattr(dataset, "y_reg", None)
    if isinstance(direct, np.ndarray) and direct.ndim == 2 and direct.shape[0] == n:
        return direct
    parts = [batch[2].numpy() for batch in DataLoader(dataset, batch_size=4096, shuffle=False)]
    if not parts:
        raise ValueError("the training dataset is empty")
    return np.concatenate(parts).reshape(n, -1)


def dataset_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    """``x``, ``y_class`` and ``y_reg`` of a ``(x, y_class, y_reg, ...)`` dataset as stacked arrays."""
    parts: dict[str, list[np.ndarray]] = {"x": [], "y_class": [], "y_reg": []}
    for batch in DataLoader(dataset, batch_size=4096, shuffle=False):
        for name, tensor in zip(parts, batch[:3], strict=True):
            parts[name].append(tensor.numpy())
    if not parts["x"]:
        raise ValueError("the dataset is empty")
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def _check_sizes(train_ds: Dataset, val_ds: Dataset, batch_size: int, max_epochs: int, patience: int) -> None:
    for name, ds in (("train_ds", train_ds), ("val_ds", val_ds)):
        if len(ds) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{name} is empty")
    for name, value in (("batch_size", batch_size), ("max_epochs", max_epochs), ("patience", patience)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info banners and known-harmless warnings for the duration of a fit."""
    lightning_logger = logging.getLogger("lightning.pytorch")
    level = lightning_logger.level
    lightning_logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        lightning_logger.setLevel(level)


@contextlib.contextmanager
def _restore_determinism_flags() -> Iterator[None]:
    """Let Lightning switch on deterministic algorithms for a fit, then restore the caller's setting."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _load_checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    """The wrapped model's weights from a Lightning checkpoint this code wrote (``weights_only=True``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {key.removeprefix("model."): value for key, value in state.items() if key.startswith("model.")}


def _fit(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    *,
    target_scaler: TargetScaler,
    seed: int,
    checkpoint_dir: Path,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    lr_schedule: str,
    warmup_fraction: float,
    loss: Mapping[str, Any] | None,
    accelerator: str,
    gradient_clip: float | None,
    num_workers: int,
    log_every_n_steps: int,
    on_epoch_end: Callable[[dict[str, float]], None] | None,
    resume: bool,
    deterministic: bool,
    callbacks: Sequence[Callback] = (),
    train_sampler: Sampler[int] | None = None,
    strategy: Any = "auto",
    devices: int = 1,
    num_nodes: int = 1,
) -> TrainResult:
    """The fit behind :func:`train_model`; a DDP rank (:mod:`antmeter.learn.distributed`) passes its
    shard sampler, strategy, devices and nodes (``batch_size`` is then the rank's share)."""
    _check_sizes(train_ds, val_ds, batch_size, max_epochs, patience)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    module = MultiTaskModule(
        model,
        target_scaler=target_scaler,
        loss=loss,
        lr=lr,
        weight_decay=weight_decay,
        lr_schedule=lr_schedule,
        warmup_fraction=warmup_fraction,
        seed=seed,
        on_epoch_end=on_epoch_end,
    )
    loader_options = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
    }
    sampler = train_sampler or EpochSeededSampler(len(train_ds), seed)  # type: ignore[arg-type]
    train_loader = DataLoader(train_ds, sampler=sampler, **loader_options)
    val_loader = DataLoader(val_ds, shuffle=False, **loader_options)
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename=BEST_CHECKPOINT.removesuffix(".ckpt"),
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    early_stopping = EarlyStopping(
        monitor="val_loss", mode="min", patience=patience, check_on_train_epoch_end=True
    )
    last = checkpoint_dir / LAST_CHECKPOINT
    resumed_from = last if resume and last.exists() else None
    with _quiet_lightning(), _restore_determinism_flags():
        trainer = L.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=strategy,
            use_distributed_sampler=False,  # the samplers above decide every rank's rows
            deterministic=deterministic,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            gradient_clip_val=gradient_clip,
            log_every_n_steps=log_every_n_steps,
            default_root_dir=checkpoint_dir,
            callbacks=[_ProgressFile(checkpoint_dir / PROGRESS_FILE), *callbacks, early_stopping, checkpoint],
        )
        trainer.fit(module, train_loader, val_loader, ckpt_path=resumed_from, weights_only=True)
    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    if best_path is not None and best_path.exists():
        module.model.load_state_dict(_load_checkpoint_weights(best_path))
    best_score = checkpoint.best_model_score
    module.model.cpu().eval()
    return TrainResult(
        model=module.model,
        module=module,
        best_val_loss=float(best_score) if best_score is not None else float("nan"),
        epochs_run=len(module.history),
        history=[dict(row) for row in module.history],
        checkpoint_path=best_path,
        last_checkpoint_path=last if last.exists() else None,
        target_scaler=target_scaler,
        resumed_from=resumed_from,
        stopped_early=bool(early_stopping.stopped_epoch),
    )


def train_model(
    model_type: str,
    train_ds: Dataset,
    val_ds: Dataset,
    *,
    n_features: int,
    window: int,
    horizons: tuple[int, ...] | list[int],
    n_classes: int,
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike[str],
    max_epochs: int = 20,
    patience: int = 3,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    lr_schedule: str = "constant",
    warmup_fraction: float = 0.0,
    loss: Mapping[str, Any] | None = None,
    accelerator: str = "auto",
    gradient_clip: float | None = 1.0,
    num_workers: int = 0,
    log_every_n_steps: int = 50,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    resume: bool = True,
    deterministic: bool = True,
    callbacks: Sequence[Callback] = (),
    distributed: DistributedConfig | None = None,
) -> TrainResult:
    """Train a fresh ``model_type`` model with early stopping on validation loss; resume if possible.

    Datasets yield ``(x [W, F] float32, y_class [H] int64, y_reg [H] float32, symbol_id)``. Regression
    targets are standardized with statistics of ``train_ds`` only. ``checkpoint_dir`` receives ``last.ckpt``
    (every epoch), ``best.ckpt`` and ``progress.json``; when ``resume`` and ``last.ckpt`` exists, training
    continues from it. ``on_epoch_end`` receives each epoch's history row (losses and lr).
    ``deterministic`` switches on torch's deterministic algorithms during the fit (bitwise-reproducible
    runs and resumes; on the CPU it costs the LSTM about 10-15% speed). ``callbacks`` are extra Lightning
    callbacks (e.g. timing or logging).

    ``distributed`` with a world size above 1 trains as a DDP process group of its own
    (:func:`antmeter.learn.distributed.fit_in_process_group`: ``batch_size`` is the global batch, whole
    global batches per epoch); callbacks, ``on_epoch_end`` and resuming stay in this process and are
    not available there.
    """
    if distributed is not None and distributed.world_size > 1:
        from antmeter.learn.distributed import fit_in_process_group

        if callbacks:
            raise ValueError("train_model: Lightning callbacks cannot cross into a DDP process group")
        return fit_in_process_group(
            model_type, train_ds, val_ds, distributed, n_features=n_features, window=window,
            horizons=list(horizons), n_classes=n_classes, params=dict(params or {}), seed=seed,
            checkpoint_dir=Path(checkpoint_dir), max_epochs=max_epochs, patience=patience,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, lr_schedule=lr_schedule,
            warmup_fraction=warmup_fraction, loss=dict(loss) if loss else None, gradient_clip=gradient_clip,
        )  # fmt: skip
    L.seed_everything(seed, workers=True, verbose=False)
    model = build_model(
        model_type,
        n_features=n_features,
        window=window,
        horizons=horizons,
        n_classes=n_classes,
        params=params,
    )
    target_scaler = TargetScaler.fit(dataset_targets(train_ds))
    if len(target_scaler.mean) != len(horizons):
        raise ValueError(
            f"train_ds has {len(target_scaler.mean)} regression targets per sample, horizons {list(horizons)}"
        )
    return _fit(
        model,
        train_ds,
        val_ds,
        target_scaler=target_scaler,
        seed=seed,
        checkpoint_dir=Path(checkpoint_dir),
        max_epochs=max_epochs,
        patience=patience,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_schedule=lr_schedule,
        warmup_fraction=warmup_fraction,
        loss=loss,
        accelerator=accelerator,
        gradient_clip=gradient_clip,
        num_workers=num_workers,
        log_every_n_steps=log_every_n_steps,
        on_epoch_end=on_epoch_end,
        resume=resume,
        deterministic=deterministic,
        callbacks=callbacks,
    )


def fine_tune(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset,
    *,
    epochs: int = 3,
    lr: float = 1e-4,
    target_scaler: TargetScaler | None = None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    patience: int | None = None,
    weight_decay: float = 1e-4,
    loss: Mapping[str, Any] | None = None,
    accelerator: str = "auto",
    gradient_clip: float | None = 1.0,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    deterministic: bool = True,
) -> TrainResult:
    """Continue training a copy of ``model`` for a few epochs at a low, constant learning rate.

    Pass the ``target_scaler`` the model was trained with so its regression outputs keep their units (when
    None, one is fitted on ``train_ds``). ``model`` itself is not modified. Without ``checkpoint_dir`` the
    checkpoints go to a temporary directory that is removed afterwards (the result's paths are then None).
    """
    L.seed_everything(seed, workers=True, verbose=False)
    candidate = copy.deepcopy(model).cpu().train()
    scaler = target_scaler or TargetScaler.fit(dataset_targets(train_ds))
    options = {
        "target_scaler": scaler,
        "seed": seed,
        "max_epochs": epochs,
        "patience": patience or epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "lr_schedule": "constant",
        "warmup_fraction": 0.0,
        "loss": loss,
        "accelerator": accelerator,
        "gradient_clip": gradient_clip,
        "num_workers": 0,
        "log_every_n_steps": 50,
        "on_epoch_end": on_epoch_end,
        "deterministic": deterministic,
    }
    if checkpoint_dir is not None:
        return _fit(candidate, train_ds, val_ds, checkpoint_dir=Path(checkpoint_dir), resume=True, **options)
    with tempfile.TemporaryDirectory(prefix="antmeter-finetune-") as tmp:
        result = _fit(candidate, train_ds, val_ds, checkpoint_dir=Path(tmp), resume=False, **options)
    result.checkpoint_path = result.last_checkpoint_path = None
    return result


def _input_batches(data: Dataset | np.ndarray | torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(data, Dataset):
        for batch in DataLoader(data, batch_size=batch_size, shuffle=False):
            yield batch[0] if isinstance(batch, (list, tuple)) else batch
        return
    x = torch.as_tensor(np.asarray(data, dtype=np.float32))
    if x.ndim != 3:
        raise ValueError(f"inputs must have shape (N, window, features), got {tuple(x.shape)}")
    if x.shape[0] > 0:
        yield from x.split(batch_size)


@torch.inference_mode()
def predict(
    model: nn.Module,
    data: Dataset | np.ndarray | torch.Tensor,
    batch_size: int = 1024,
    *,
    target_scaler: TargetScaler | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``[N, H, C]`` (softmax, float32) and regression ``[N, H]`` (float32).

    ``data`` is an array ``[N, W, F]`` or a dataset with ``x`` first in each item. Regression is in the
    model's standardized units unless ``target_scaler`` is given, which maps it back to raw returns.
    """
    spec: ModelSpec | None = getattr(model, "spec", None)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    probas, regressions = [], []
    try:
        for x in _input_batches(data, batch_size):
            if spec is not None and tuple(x.shape[1:]) != (spec.window, spec.n_features):
                raise ValueError(
                    f"inputs have window x features {tuple(x.shape[1:])}, the model expects {(spec.window, spec.n_features)}"
                )
            logits, regression = model(x.to(device=device, dtype=torch.float32))
            probas.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
            regressions.append(regression.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not probas:
        raise ValueError("predict got no samples")
    regression_out = np.concatenate(regressions).astype(np.float32)
    if target_scaler is not None:
        regression_out = target_scaler.inverse(regression_out)
    return np.concatenate(probas).astype(np.float32), regression_out


def save_weights(
    model: nn.Module, directory: str | os.PathLike[str], *, target_scaler: TargetScaler | None = None
) -> Path:
    """Write ``model.safetensors`` and ``model_config.json`` (spec + target scaler) into ``directory``.

    The model must come from ``build_model`` (it carries ``model.spec``). Files are written under temporary
    names and renamed, so a failure leaves no half-written pair. Returns the directory.
    """
    spec: ModelSpec | None = getattr(model, "spec", None)
    if spec is None:
        raise ValueError("model has no .spec; build it with antmeter.learn.models.build_model")
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "spec": spec.to_dict(),
        "target_scaler": target_scaler.to_dict() if target_scaler is not None else None,
    }
    with tempfile.NamedTemporaryFile(dir=target, prefix=".weights.", delete=False) as fh:
        tmp_weights = fh.name
    try:
        save_file(state, tmp_weights, metadata={"format": FORMAT, "model_type": spec.model_type})
        _atomic_write_text(target / CONFIG_FILE, json.dumps(config, indent=2))
        os.replace(tmp_weights, target / WEIGHTS_FILE)
    finally:
        if os.path.exists(tmp_weights):
            os.unlink(tmp_weights)
    return target


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found (save weights with antmeter.learn.lightning_loop.save_weights)"
        )
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format' is {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_weights(directory: str | os.PathLike[str]) -> nn.Module:
    """Rebuild the model from ``model_config.json`` and load ``model.safetensors`` (strict, eval mode)."""
    source = Path(directory)
    config = _read_config(source)
    model = build_model_from_spec(ModelSpec.from_dict(config["spec"]))
    model.load_state_dict(load_file(source / WEIGHTS_FILE), strict=True)
    return model.eval()


def load_target_scaler(directory: str | os.PathLike[str]) -> TargetScaler | None:
    """The target scaler saved next to the weights (None when none was saved)."""
    data = _read_config(Path(directory)).get("target_scaler")
    return TargetScaler.from_dict(data) if data else None

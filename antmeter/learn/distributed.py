"""Lightning DDP training as a process group of its own (``torch.distributed.run``, i.e. torchrun).

Lightning's DDP launcher re-runs ``sys.argv``, so it must never start inside a Celery task or a Dagster
run worker: :func:`launch` starts ``python -m torch.distributed.run ... -m antmeter.learn.distributed
JOB.json`` as a subprocess, and every rank runs :func:`rank_main`. ``processes`` per node and ``nodes``
come from :class:`DistributedConfig` (``ANTMETER_DDP`` JSON, e.g. ``{"processes": 2}``); the
backend is ``gloo`` on CPUs, ``nccl`` on GPUs.

Each rank trains on ``global_batch / world_size`` rows per step: every rank draws the same per-epoch
permutation (``EpochSeededSampler``'s, from seed and epoch), keeps its whole global batches, and takes
every ``world_size``-th row of them from its rank on (:class:`RankShardSampler`), so the ranks'
batches of a step together are exactly the single process's global batch (Lightning's own
distributed sampler would reshuffle them). Gradients are averaged across ranks and the loss is a
batch mean, so a step equals the single-process step on the same global batch. Every rank validates
on all validation rows (the same loss on each, so early stopping agrees). A rank runs the very fit of
single-process training (``lightning_loop._fit``: early stopping, best and last checkpoints); rank 0
writes the best weights (``weights.safetensors``, no pickle), ``result.json`` (history, best validation
loss) and Lightning's ``best.ckpt`` / ``last.ckpt``.

The pipeline's training uses it through :func:`fit_in_process_group` (``train_model(distributed=...)``;
the candidate assets pass ``ANTMETER_DDP``): the datasets go to ``.npz`` files, the group trains, and the
caller gets the usual ``TrainResult``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "weights.safetensors"
RESULT_FILE = "result.json"
JOB_FILE = "job.json"
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistributedConfig:
    """How many processes on how many nodes, and where they meet."""

    processes: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 0  # 0: a free local port (one node only)
    backend: str = "gloo"

    def __post_init__(self) -> None:
        if self.processes < 1 or self.nodes < 1 or not 0 <= self.node_rank < self.nodes:
            raise ValueError(f"DDP: processes, nodes >= 1 and 0 <= node_rank < nodes, got {self}")
        if self.nodes > 1 and not self.master_port:
            raise ValueError("DDP: several nodes need an explicit master_port (and master_addr)")
        if self.backend not in BACKENDS:
            raise ValueError(f"DDP: backend must be one of {BACKENDS}, got {self.backend!r}")

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    @classmethod
    def from_env(cls, name: str = "ANTMETER_DDP") -> DistributedConfig:
        raw = os.environ.get(name, "{}")
        try:
            values = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}: not valid JSON ({error.msg} at {error.pos})") from None
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{name}: unknown setting(s) {sorted(unknown)}")
        return cls(**values)


@dataclass(frozen=True)
class DistributedJob:
    """One training: arrays in ``.npz`` files (``x`` [N, window, features], ``y_class`` [N, H],
    ``y_reg`` [N, H]) for training and validation (None: the training rows), the model, the global
    batch and the optimizer settings (``patience`` None: no early stopping)."""

    data: str
    output_dir: str
    model_type: str
    horizons: list[int]
    n_classes: int
    global_batch: int
    max_epochs: int
    model_params: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    loss: dict[str, Any] | None = None
    validation: str | None = None
    patience: int | None = None
    lr_schedule: str = "constant"
    warmup_fraction: float = 0.0
    gradient_clip: float | None = None


class RankShardSampler:
    """``rank``'s share of the epoch's seeded permutation, cut to whole global batches: positions
    ``rank, rank + world, ...`` of its first ``n - n % global_batch`` rows."""

    def __init__(self, n_samples: int, seed: int, rank: int, world: int, global_batch: int | None = None):
        from antmeter.learn.lightning_loop import EpochSeededSampler

        global_batch = global_batch or world
        if global_batch % world:
            raise ValueError(f"DDP: global_batch {global_batch} is not divisible by the world size {world}")
        if n_samples < global_batch:
            raise ValueError(f"DDP: {n_samples} rows are fewer than one global batch of {global_batch}")
        self.order, self.rank, self.world = EpochSeededSampler(n_samples, seed), rank, world
        self.used = n_samples - n_samples % global_batch

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return self.used // self.world

    def __iter__(self):
        return iter(list(self.order)[: self.used][self.rank :: self.world])


def launch(job: DistributedJob, config: DistributedConfig, timeout_s: float = 3600.0) -> Path:
    """Run ``job`` on ``config.processes`` local ranks (this node of ``config.nodes``); returns the
    path of the final weights. Raises with the ranks' output when the group fails."""
    if job.global_batch % config.world_size:
        raise ValueError(
            f"DDP: global_batch {job.global_batch} is not divisible by the world size {config.world_size}"
        )
    output = Path(job.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    job_path = output / JOB_FILE
    job_path.write_text(json.dumps(asdict(job) | {"backend": config.backend}))
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={config.processes}",
        f"--nnodes={config.nodes}",
        f"--node-rank={config.node_rank}",
        f"--master-addr={config.master_addr}",
        f"--master-port={config.master_port or _free_port()}",
        "-m",
        "antmeter.learn.distributed",
        str(job_path),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=os.environ.copy())
    if done.returncode != 0:
        raise RuntimeError(
            f"DDP group exited with {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        )
    return output / WEIGHTS_FILE


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def rank_main(job_path: str) -> None:
    """One rank's training (started by torchrun; see the module docstring)."""
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.strategies import DDPStrategy
    from safetensors.torch import save_file
    from torch.utils.data import TensorDataset

    from antmeter.learn.lightning_loop import TargetScaler, _fit
    from antmeter.learn.models import build_model

    spec = json.loads(Path(job_path).read_text())
    backend = spec.pop("backend")
    job = DistributedJob(**spec)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))

    def tensors(path: str) -> TensorDataset:
        with np.load(path, allow_pickle=False) as arrays:
            x, y_class, y_reg = (np.asarray(arrays[k]) for k in ("x", "y_class", "y_reg"))
        return TensorDataset(
            torch.from_numpy(x).float(), torch.from_numpy(y_class).long(), torch.from_numpy(y_reg).float()
        )

    train, validation = tensors(job.data), tensors(job.validation or job.data)
    L.seed_everything(job.seed, workers=True, verbose=False)
    model = build_model(
        job.model_type,
        n_features=train.tensors[0].shape[2],
        window=train.tensors[0].shape[1],
        horizons=job.horizons,
        n_classes=job.n_classes,
        params=job.model_params,
    )
    result = _fit(
        model,
        train,
        validation,
        target_scaler=TargetScaler.fit(train.tensors[2].numpy()),
        seed=job.seed,
        checkpoint_dir=Path(job.output_dir),
        max_epochs=job.max_epochs,
        patience=job.patience or job.max_epochs,
        batch_size=job.global_batch // world,
        lr=job.lr,
        weight_decay=job.weight_decay,
        lr_schedule=job.lr_schedule,
        warmup_fraction=job.warmup_fraction,
        loss=job.loss,
        accelerator="cpu" if backend == "gloo" else "gpu",
        gradient_clip=job.gradient_clip,
        num_workers=0,
        log_every_n_steps=50,
        on_epoch_end=None,
        resume=False,
        deterministic=True,
        train_sampler=RankShardSampler(len(train), job.seed, rank, world, job.global_batch),
        strategy=DDPStrategy(process_group_backend=backend) if world > 1 else "auto",
        devices=local,
        num_nodes=world // local,
    )
    if rank == 0:
        weights = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        save_file(weights, str(Path(job.output_dir) / WEIGHTS_FILE))
        summary = {
            "best_val_loss": result.best_val_loss,
            "history": result.history,
            "stopped_early": result.stopped_early,
            "world_size": world,
        }
        (Path(job.output_dir) / RESULT_FILE).write_text(json.dumps(summary))


def fit_in_process_group(
    model_type: str,
    train_ds,
    val_ds,
    config: DistributedConfig,
    *,
    n_features: int,
    window: int,
    horizons: list[int],
    n_classes: int,
    params: dict[str, Any],
    seed: int,
    checkpoint_dir: Path,
    max_epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    lr_schedule: str,
    warmup_fraction: float,
    loss: dict[str, Any] | None,
    gradient_clip: float | None,
):
    """``train_model`` as a DDP process group (``batch_size`` is the global batch): the datasets'
    arrays go to ``checkpoint_dir/ddp``, :func:`launch` trains, and the best weights come back as a
    ``TrainResult`` (history and best validation loss from rank 0)."""
    import numpy as np
    from safetensors.torch import load_file

    from antmeter.learn.lightning_loop import (
        BEST_CHECKPOINT,
        LAST_CHECKPOINT,
        MultiTaskModule,
        TargetScaler,
        TrainResult,
        dataset_arrays,
    )
    from antmeter.learn.models import build_model

    output = Path(checkpoint_dir)
    output.mkdir(parents=True, exist_ok=True)
    train_arrays, val_arrays = dataset_arrays(train_ds), dataset_arrays(val_ds)
    np.savez(output / "ddp_train.npz", **train_arrays)
    np.savez(output / "ddp_validation.npz", **val_arrays)
    job = DistributedJob(
        data=str(output / "ddp_train.npz"),
        validation=str(output / "ddp_validation.npz"),
        output_dir=str(output),
        model_type=model_type,
        horizons=list(horizons),
        n_classes=n_classes,
        global_batch=batch_size - batch_size % config.world_size,
        max_epochs=max_epochs,
        patience=patience,
        model_params=params,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        loss=loss,
        lr_schedule=lr_schedule,
        warmup_fraction=warmup_fraction,
        gradient_clip=gradient_clip,
    )
    weights = launch(job, config)
    summary = json.loads((output / RESULT_FILE).read_text())
    model = build_model(
        model_type, n_features=n_features, window=window, horizons=horizons, n_classes=n_classes,
        params=params,
    )  # fmt: skip
    model.load_state_dict(load_file(str(weights)))
    model.cpu().eval()
    target_scaler = TargetScaler.fit(train_arrays["y_reg"])
    module = MultiTaskModule(model, target_scaler=target_scaler, loss=loss, lr=lr, weight_decay=weight_decay)
    best, last = output / BEST_CHECKPOINT, output / LAST_CHECKPOINT
    return TrainResult(
        model=model,
        module=module,
        best_val_loss=float(summary["best_val_loss"]),
        epochs_run=len(summary["history"]),
        history=summary["history"],
        checkpoint_path=best if best.exists() else None,
        last_checkpoint_path=last if last.exists() else None,
        target_scaler=target_scaler,
        stopped_early=bool(summary["stopped_early"]),
        extra={"ddp_world_size": summary["world_size"], "ddp_backend": config.backend},
    )


if __name__ == "__main__":
    rank_main(sys.argv[1])

"""Lightning DDP training as a process group of its own (``torch.distributed.run``, i.e. torchrun).

Lightning's DDP launcher re-runs ``sys.argv``, so it must never start inside a Celery task or a Dagster
run worker: :func:`launch` starts ``python -m torch.distributed.run ... -m antmeter.learn.distributed
JOB.json`` as a subprocess, and every rank runs :func:`rank_main`. ``processes`` per node and ``nodes``
come from :class:`DistributedConfig` (``ANTMETER_DDP`` JSON, e.g. ``{"processes": 2}``); the
backend is ``gloo`` on CPUs, ``nccl`` on GPUs.

Each rank trains on ``global_batch / world_size`` rows per step: every rank draws the same per-epoch
permutation (``EpochSeededSampler``'s, from seed and epoch) and takes every ``world_size``-th row of
it from its rank on (:class:`RankShardSampler`), so the ranks' batches of a step together are exactly
the single process's global batch (Lightning's own distributed sampler would reshuffle them).
Gradients are averaged across ranks and the loss is a batch mean, so a step equals the
single-process step on the same global batch. Rank 0 writes the final weights
(``weights.safetensors``, no pickle) and Lightning's ``last.ckpt``.
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
JOB_FILE = "job.json"
BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistributedConfig:
    """How many processes on how many nodes, and where they meet."""

    processes: int = 1
    nodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    backend: str = "gloo"

    def __post_init__(self) -> None:
        if self.processes < 1 or self.nodes < 1 or not 0 <= self.node_rank < self.nodes:
            raise ValueError(f"DDP: processes, nodes >= 1 and 0 <= node_rank < nodes, got {self}")
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
    """One training: arrays in an ``.npz`` (``x`` [N, window, features], ``y_class`` [N, H], ``y_reg``
    [N, H]), the model, the global batch and the optimizer settings."""

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


class RankShardSampler:
    """``rank``'s share of the epoch's seeded permutation: positions ``rank, rank + world, ...``."""

    def __init__(self, n_samples: int, seed: int, rank: int, world: int):
        from antmeter.learn.lightning_loop import EpochSeededSampler

        if n_samples % world:
            raise ValueError(f"DDP: {n_samples} rows do not split evenly over {world} ranks")
        self.order, self.rank, self.world = EpochSeededSampler(n_samples, seed), rank, world

    def set_epoch(self, epoch: int) -> None:
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.order) // self.world

    def __iter__(self):
        return iter(list(self.order)[self.rank :: self.world])


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
        f"--master-port={config.master_port}",
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


def rank_main(job_path: str) -> None:
    """One rank's training (started by torchrun; see the module docstring)."""
    import lightning as L
    import numpy as np
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy
    from safetensors.torch import save_file
    from torch.utils.data import DataLoader, TensorDataset

    from antmeter.learn.lightning_loop import MultiTaskModule, TargetScaler
    from antmeter.learn.models import build_model

    spec = json.loads(Path(job_path).read_text())
    backend = spec.pop("backend")
    job = DistributedJob(**spec)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    with np.load(job.data, allow_pickle=False) as arrays:
        x, y_class, y_reg = (np.asarray(arrays[k]) for k in ("x", "y_class", "y_reg"))
    if len(x) % job.global_batch:
        raise ValueError(f"DDP: {len(x)} rows are not a whole number of global batches of {job.global_batch}")
    L.seed_everything(job.seed, workers=True, verbose=False)
    model = build_model(
        job.model_type,
        n_features=x.shape[2],
        window=x.shape[1],
        horizons=job.horizons,
        n_classes=job.n_classes,
        params=job.model_params,
    )
    module = MultiTaskModule(
        model,
        target_scaler=TargetScaler.fit(y_reg),
        loss=job.loss,
        lr=job.lr,
        weight_decay=job.weight_decay,
        seed=job.seed,
    )
    dataset = TensorDataset(
        torch.from_numpy(x).float(), torch.from_numpy(y_class).long(), torch.from_numpy(y_reg).float()
    )
    rank = int(os.environ.get("RANK", "0"))
    sampler = RankShardSampler(len(dataset), job.seed, rank, world)
    loader = DataLoader(dataset, batch_size=job.global_batch // world, sampler=sampler)
    trainer = L.Trainer(
        accelerator="cpu" if backend == "gloo" else "gpu",
        devices=local,
        num_nodes=world // local,
        strategy=DDPStrategy(process_group_backend=backend) if world > 1 else "auto",
        max_epochs=job.max_epochs,
        deterministic=True,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=job.output_dir,
        use_distributed_sampler=False,  # RankShardSampler already shards (see the module docstring)
        callbacks=[ModelCheckpoint(dirpath=job.output_dir, save_last=True, save_top_k=0)],
    )
    trainer.fit(module, loader)
    if trainer.is_global_zero:
        weights = {k: v.detach().cpu().contiguous() for k, v in module.model.state_dict().items()}
        save_file(weights, str(Path(job.output_dir) / WEIGHTS_FILE))


if __name__ == "__main__":
    rank_main(sys.argv[1])

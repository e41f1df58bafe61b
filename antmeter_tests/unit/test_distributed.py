"""Lightning DDP as its own process group: two gloo ranks (torchrun) on a tiny dataset end with the
same weights and the same checkpoints as one process on the same global batch, through the launcher
and through ``train_model(distributed=...)``, the path of the pipeline's training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from antmeter.learn.distributed import DistributedConfig, DistributedJob, RankShardSampler, launch
from antmeter.learn.lightning_loop import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    _load_checkpoint_weights,
    train_model,
)
from antmeter_deploy.topology import free_port

pytestmark = pytest.mark.slow

MODEL = {"lstm_units": [8], "dropout": 0.0, "dense_units": 4}


def tiny_data(path) -> str:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(64, 8, 4)).astype(np.float32)
    y_reg = (x[:, -1, :1] * 0.5 + rng.normal(scale=0.1, size=(64, 1))).astype(np.float32)
    np.savez(path, x=x, y_class=(y_reg > 0).astype(np.int64), y_reg=y_reg)
    return str(path)


def job(data: str, output, **overrides) -> DistributedJob:
    values = dict(
        data=data,
        output_dir=str(output),
        model_type="lstm",
        model_params=MODEL,
        horizons=[5],
        n_classes=2,
        global_batch=16,
        max_epochs=2,
        lr=1e-2,
        seed=3,
    )
    return DistributedJob(**(values | overrides))


def test_two_gloo_ranks_match_one_process(tmp_path):
    data = tiny_data(tmp_path / "tiny.npz")
    single = launch(job(data, tmp_path / "single"), DistributedConfig(processes=1, master_port=free_port()))
    ddp = launch(job(data, tmp_path / "ddp"), DistributedConfig(processes=2, master_port=free_port()))
    one, two = load_file(str(single)), load_file(str(ddp))
    assert one.keys() == two.keys() and one
    worst = max(float((one[k] - two[k]).abs().max()) for k in one)
    assert worst < 1e-5, f"DDP weights differ from single-process by {worst}"

    from antmeter.learn.models import build_model

    torch.manual_seed(3)
    init = build_model("lstm", n_features=4, window=8, horizons=[5], n_classes=2, params=MODEL).state_dict()
    assert max(float((init[k] - one[k]).abs().max()) for k in one) > 1e-3  # it trained

    # checkpoints: the same last epoch and step; the final files hold the best-validation weights
    for directory, weights in ((tmp_path / "single", one), (tmp_path / "ddp", two)):
        checkpoint = torch.load(directory / LAST_CHECKPOINT, map_location="cpu", weights_only=True)
        # saved at the end of the second epoch (index 1), after 2 x 64/16 steps, as single-process fits do
        assert (checkpoint["epoch"], checkpoint["global_step"]) == (1, 8)
        stored = _load_checkpoint_weights(directory / BEST_CHECKPOINT)
        assert max(float((stored[k] - weights[k]).abs().max()) for k in weights) == 0.0


def test_train_model_runs_ddp_as_its_own_process_group_and_matches_one_process(tmp_path):
    from torch.utils.data import TensorDataset

    rng = np.random.default_rng(11)
    x = rng.normal(size=(80, 8, 4)).astype(np.float32)
    y_reg = (x[:, -1, :1] * 0.5 + rng.normal(scale=0.1, size=(80, 1))).astype(np.float32)
    rows = [torch.from_numpy(a) for a in (x, (y_reg > 0).astype(np.int64), y_reg, np.zeros(80, np.int64))]
    train, validation = TensorDataset(*(r[:64] for r in rows)), TensorDataset(*(r[64:] for r in rows))
    options = dict(
        n_features=4, window=8, horizons=[5], n_classes=2, params=MODEL, seed=5, max_epochs=3, patience=3,
        batch_size=16, lr=1e-2, accelerator="cpu",
    )  # fmt: skip
    here = train_model("lstm", train, validation, checkpoint_dir=tmp_path / "here", **options)
    group = train_model(
        "lstm", train, validation, checkpoint_dir=tmp_path / "group", **options,
        distributed=DistributedConfig(processes=2),
    )  # fmt: skip
    assert group.extra["ddp_world_size"] == 2 and here.extra.get("ddp_world_size") is None
    a, b = here.model.state_dict(), group.model.state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    assert group.best_val_loss == pytest.approx(here.best_val_loss, abs=1e-5)
    assert [r["epoch"] for r in group.history] == [r["epoch"] for r in here.history]
    assert (tmp_path / "group" / BEST_CHECKPOINT).exists() and group.checkpoint_path is not None


def test_rank_shards_are_whole_global_batches_of_one_permutation():
    shards = [RankShardSampler(70, seed=1, rank=r, world=2, global_batch=16) for r in (0, 1)]
    for shard in shards:
        shard.set_epoch(3)
    rows = [list(shard) for shard in shards]
    assert len(rows[0]) == len(rows[1]) == 32  # 4 global batches of 16; 6 rows wait for another epoch
    assert not set(rows[0]) & set(rows[1]) and len(set(rows[0]) | set(rows[1])) == 64


def test_settings_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTMETER_DDP", '{"processes": 2, "nodes": 1}')
    assert DistributedConfig.from_env().world_size == 2
    monkeypatch.setenv("ANTMETER_DDP", '{"procs": 2}')
    with pytest.raises(ValueError, match="unknown setting"):
        DistributedConfig.from_env()
    with pytest.raises(ValueError, match="backend"):
        DistributedConfig(backend="mpi")
    with pytest.raises(ValueError, match="not divisible"):
        launch(job("unused.npz", tmp_path, global_batch=15), DistributedConfig(processes=2))
    with pytest.raises(ValueError, match="master_port"):
        DistributedConfig(nodes=2)

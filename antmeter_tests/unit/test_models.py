"""Model shapes, gradients, a small overfit, PatchTST patching/forecasting, RevIN, presets and the loss."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch.nn import functional as F

from antmeter.learn.models import (
    MODEL_TYPES,
    ModelSpec,
    MultiTaskLoss,
    PatchTSTForecaster,
    build_model,
    build_model_from_spec,
    load_preset,
    preset_names,
)
from antmeter.learn.models.layers import RevIN
from antmeter.learn.models.patchtst import PatchTSTBackbone, patch_count

WINDOW, FEATURES, HORIZONS = 24, 6, (5, 10, 30)
TASK_CLASSES = {"binary": 2, "three_class": 3}


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Seeded, single-threaded (tiny tensors gain nothing from threads on a shared 2-core machine)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(
    model_type: str, n_classes: int, preset: str = "laptop", *, without_dropout: bool = False
) -> torch.nn.Module:
    params = load_preset(preset, model_type)["model"]
    if model_type == "patchtst":
        params = {**params, "patch_len": 8, "stride": 4}
    if without_dropout:
        params = {k: 0.0 if k.endswith("dropout") else v for k, v in params.items()}
    return build_model(
        model_type, n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=n_classes, params=params
    )


@pytest.mark.parametrize("preset", ["laptop", "full"])
@pytest.mark.parametrize("task", sorted(TASK_CLASSES))
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_forward_returns_logits_and_regression_per_horizon(model_type: str, task: str, preset: str) -> None:
    model = _model(model_type, TASK_CLASSES[task], preset).eval()
    logits, regression = model(torch.randn(7, WINDOW, FEATURES))
    assert logits.shape == (7, len(HORIZONS), TASK_CLASSES[task])
    assert regression.shape == (7, len(HORIZONS))
    assert torch.isfinite(logits).all() and torch.isfinite(regression).all()
    assert model.spec.model_type == model_type and model.spec.n_classes == TASK_CLASSES[task]


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_batch_items_are_independent_in_eval_mode(model_type: str) -> None:
    model = _model(model_type, 3).eval()
    x = torch.randn(5, WINDOW, FEATURES)
    logits, regression = model(x)
    logits_one, regression_one = model(x[2:3])
    torch.testing.assert_close(logits_one[0], logits[2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(regression_one[0], regression[2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_parameter_receives_a_gradient(model_type: str) -> None:
    model = _model(model_type, 3).train()
    loss_fn = MultiTaskLoss(len(HORIZONS))
    logits, regression = model(torch.randn(16, WINDOW, FEATURES))
    losses = loss_fn(
        logits, regression, torch.randint(0, 3, (16, len(HORIZONS))), torch.randn(16, len(HORIZONS))
    )
    losses["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_small_batch_can_be_overfit(model_type: str) -> None:
    # capacity and gradient flow (the presets' dropout regularises real data, not this check)
    model = _model(model_type, 2, without_dropout=True).train()
    x = torch.randn(32, WINDOW, FEATURES)
    y_reg = x[:, -3:, 0].mean(dim=1, keepdim=True).repeat(1, len(HORIZONS)) * torch.tensor([1.0, 2.0, 3.0])
    y_class = (y_reg > 0).long()
    y_std = (y_reg - y_reg.mean(0)) / y_reg.std(0)
    loss_fn = MultiTaskLoss(len(HORIZONS))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        optimizer.zero_grad()
        loss = loss_fn(*model(x), y_class, y_std)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.4 * losses[0], (losses[0], losses[-1])


def test_patch_count_matches_the_papers_patchtst_42() -> None:
    assert patch_count(336, 16, 8) == 42
    assert patch_count(512, 16, 8) == 64
    assert patch_count(336, 16, 8, pad_end=False) == 41
    with pytest.raises(ValueError, match="patch_len"):
        patch_count(10, 16, 8)


def test_patching_equals_replication_pad_then_unfold() -> None:
    backbone = PatchTSTBackbone(window=30, patch_len=8, stride=4)
    x = torch.randn(3, 30, 5)
    expected = torch.nn.ReplicationPad1d((0, 4))(x.transpose(1, 2)).unfold(-1, 8, 4)
    assert torch.equal(x.transpose(1, 2)[:, :, backbone.patch_index], expected)


def test_patchtst_forecaster_predicts_horizon_by_channels_in_input_scale() -> None:
    model = PatchTSTForecaster(
        n_channels=7,
        window=336,
        horizon=96,
        patch_len=16,
        stride=8,
        d_model=16,
        n_heads=4,
        depth=3,
        d_ff=128,
        dropout=0.3,
    ).eval()
    assert model.backbone.n_patches == 42
    x = torch.randn(4, 336, 7)
    forecast = model(x)
    assert forecast.shape == (4, 96, 7)
    # RevIN makes the forecaster equivariant to a per-channel shift and scale of the input
    shifted = model(x * 5.0 + 100.0)
    torch.testing.assert_close(shifted, forecast * 5.0 + 100.0, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("affine", [False, True])
def test_revin_normalizes_each_series_and_is_invertible(affine: bool) -> None:
    revin = RevIN(4, affine=affine)
    if affine:
        with torch.no_grad():
            revin.weight.copy_(torch.tensor([0.5, 2.0, 1.5, 3.0]))
            revin.bias.copy_(torch.tensor([1.0, -1.0, 0.0, 2.0]))
    x = torch.randn(3, 50, 4) * torch.tensor([1.0, 10.0, 0.1, 3.0]) + torch.tensor([0.0, 100.0, -5.0, 7.0])
    normalized, stats = revin.normalize(x)
    if not affine:
        torch.testing.assert_close(normalized.mean(dim=1), torch.zeros(3, 4), atol=1e-4, rtol=0)
        torch.testing.assert_close(normalized.std(dim=1, unbiased=False), torch.ones(3, 4), atol=1e-3, rtol=0)
    torch.testing.assert_close(revin.denormalize(normalized, stats), x, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_patchtst_pooling_options(pooling: str) -> None:
    model = build_model(
        "patchtst",
        n_features=FEATURES,
        window=WINDOW,
        horizons=HORIZONS,
        n_classes=2,
        params={
            "patch_len": 8,
            "stride": 4,
            "d_model": 16,
            "n_heads": 2,
            "depth": 1,
            "d_ff": 16,
            "pooling": pooling,
        },
    ).eval()
    assert (model.backbone.cls is not None) == (pooling == "cls")
    logits, regression = model(torch.randn(2, WINDOW, FEATURES))
    assert logits.shape == (2, 3, 2) and regression.shape == (2, 3)


def test_build_model_rejects_unknown_type_and_params() -> None:
    with pytest.raises(ValueError, match="unknown model_type 'gru'"):
        build_model("gru", n_features=3, window=10, horizons=(1,), n_classes=2)
    with pytest.raises(ValueError, match=r"unknown lstm param\(s\) \['hidden'\]"):
        build_model("lstm", n_features=3, window=10, horizons=(1,), n_classes=2, params={"hidden": 4})
    with pytest.raises(ValueError, match="pooling"):
        build_model(
            "patchtst", n_features=3, window=24, horizons=(1,), n_classes=2, params={"pooling": "max"}
        )
    with pytest.raises(ValueError, match="n_classes"):
        build_model("lstm", n_features=3, window=10, horizons=(1,), n_classes=1)


def test_defaults_are_the_specified_architectures() -> None:
    lstm = build_model("lstm", n_features=40, window=60, horizons=HORIZONS, n_classes=2)
    assert [layer.hidden_size for layer in lstm.lstms] == [128, 64, 32]
    assert lstm.dropout.p == 0.2 and lstm.dense[0].out_features == 16
    transformer = build_model("transformer", n_features=40, window=60, horizons=HORIZONS, n_classes=2)
    assert transformer.projection.out_features == 128 and len(transformer.encoder.layers) == 4
    assert transformer.encoder.layers[0].attention.n_heads == 4


def test_presets_define_laptop_and_full_for_every_model_type() -> None:
    assert {"laptop", "full"} <= set(preset_names())
    for model_type in MODEL_TYPES:
        laptop, full = load_preset("laptop", model_type), load_preset("full", model_type)
        assert set(laptop) == {"model", "loss", "training", "dataset"}
        assert laptop["dataset"]["stride"] > 1 and full["dataset"]["stride"] == 1
        assert laptop["training"]["max_epochs"] < full["training"]["max_epochs"]
        sizes = [
            sum(
                p.numel()
                for p in build_model(
                    model_type, n_features=40, window=60, horizons=HORIZONS, n_classes=2, params=cfg["model"]
                ).parameters()
            )
            for cfg in (laptop, full)
        ]
        assert sizes[0] < sizes[1]
    assert load_preset("full", "lstm")["model"]["lstm_units"] == [128, 64, 32]
    assert (
        load_preset("full", "transformer")["training"]["lr"] < load_preset("full", "lstm")["training"]["lr"]
    )
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        load_preset("huge", "lstm")


def test_model_spec_round_trips_through_a_dict() -> None:
    model = _model("patchtst", 3)
    spec = ModelSpec.from_dict(model.spec.to_dict())
    assert spec == model.spec
    with pytest.raises(ValueError, match="window"):
        ModelSpec.from_dict({"model_type": "lstm", "n_features": 3, "horizons": [1], "n_classes": 2})


def test_loss_is_cross_entropy_plus_weighted_mse_and_focal_downweights_easy_samples() -> None:
    logits = torch.randn(10, 3, 2)
    regression, target = torch.randn(10, 3), torch.randn(10, 3)
    labels = torch.randint(0, 2, (10, 3))
    plain = MultiTaskLoss(3, class_weight=1.0, regression_weight=0.25)(logits, regression, labels, target)
    ce = F.cross_entropy(logits.reshape(-1, 2), labels.reshape(-1))
    mse = F.mse_loss(regression, target)
    torch.testing.assert_close(plain["class_loss"], ce)
    torch.testing.assert_close(plain["regression_loss"], mse)
    torch.testing.assert_close(plain["loss"], ce + 0.25 * mse)
    focal = MultiTaskLoss(3, regression_weight=0.0, focal_gamma=2.0)(logits, regression, labels, target)
    assert focal["class_loss"] < ce
    only_last = MultiTaskLoss(3, regression_weight=0.0, horizon_weights=[0, 0, 1])(
        logits, regression, labels, target
    )
    torch.testing.assert_close(only_last["loss"], F.cross_entropy(logits[:, 2], labels[:, 2]))
    with pytest.raises(ValueError, match="focal_gamma"):
        MultiTaskLoss(3, focal_gamma=-1)
    with pytest.raises(ValueError, match=r"unknown loss setting\(s\) \['gamma'\]"):
        MultiTaskLoss.from_config(3, {"gamma": 2})


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_linear_highway_adds_a_linear_model_of_the_newest_step(model_type: str) -> None:
    params = {**load_preset("laptop", model_type)["model"], "linear_highway": True}
    model = build_model(
        model_type, n_features=FEATURES, window=WINDOW, horizons=HORIZONS, n_classes=2, params=params
    ).eval()
    rebuilt = build_model_from_spec(model.spec).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(4, WINDOW, FEATURES)
    torch.testing.assert_close(model(x), rebuilt(x))
    # zero-initialised: it starts as the body alone; then it adds a linear map of x[:, -1]
    torch.testing.assert_close(model(x), model.body(x))
    torch.nn.init.normal_(model.linear.classifier.weight)
    torch.nn.init.normal_(model.linear.regressor.weight)
    linear = model.linear
    expected_logits = (x[:, -1] @ linear.classifier.weight.T).reshape(4, len(HORIZONS), 2)
    logits, regression = model(x)
    body_logits, body_regression = model.body(x)
    torch.testing.assert_close(logits - body_logits, expected_logits)
    torch.testing.assert_close(regression - body_regression, x[:, -1] @ linear.regressor.weight.T)

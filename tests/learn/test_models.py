"""Every registered model: shapes, gradients, initial loss, one training step, a round trip through a model folder,
and config errors."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from fer_sweep.config import NUM_CLASSES, ModelConfig, RunConfig, UserError
from fer_sweep.learn.checkpoint import load_model, model_config, save_model, state_dict_cpu
from fer_sweep.learn.models import MODELS, build_model

SMALL = ((4, 3), (8, 5), (8, 3))  # small channel counts keep the 27-case grid fast on CPU
LN7 = math.log(NUM_CLASSES)


def _batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 48, 48, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


@pytest.mark.parametrize("arch", list(MODELS))
def test_every_registered_model_trains_a_step_and_survives_a_model_folder(arch, tmp_path):
    """The registry's contract, for every name in it: builds, (N, 7) logits, one optimiser step with a finite loss and
    a gradient for every parameter, and the same logits after `save_model` and `load_model`."""
    cfg = RunConfig(model=ModelConfig(arch=arch, conv=SMALL[:2], fc_units=16))
    model = build_model(cfg.model, seed=0)
    x, y = _batch(8)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    assert logits.shape == (8, NUM_CLASSES) and torch.isfinite(loss)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    torch.optim.SGD(model.parameters(), lr=0.1).step()  # trained weights and batch-norm statistics both travel
    model.eval()
    folder = save_model(tmp_path / arch, state_dict_cpu(model), model_config(cfg, (128.0, 64.0)))
    loaded, config = load_model(folder)
    assert config["model"]["arch"] == arch and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("arch,norm,pooling", list(itertools.product(MODELS, ("batch", "layer", "none"),
                                                                     ("max", "avg", "none"))))
def test_forward_backward(arch, norm, pooling):
    cfg = ModelConfig(arch=arch, conv=SMALL, depth=2, norm=norm, pooling=pooling, fc_units=16)
    model = build_model(cfg, seed=0)
    x, y = _batch()
    logits = model(x)
    assert logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    loss = F.cross_entropy(logits, y)
    assert abs(loss.item() - LN7) < 0.3
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch,head,fc_units", list(itertools.product(MODELS, ("flatten", "gap"), (0, 16))))
def test_heads_and_stage_dropout(arch, head, fc_units):
    cfg = ModelConfig(arch=arch, conv=SMALL[:2], head=head, fc_units=fc_units, stage_dropout=0.1)
    model = build_model(cfg, seed=1)
    x, y = _batch(8, seed=1)
    loss = F.cross_entropy(model(x), y)
    assert abs(loss.item() - LN7) < 0.3
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("arch", list(MODELS))
def test_default_sizes_in_eval_mode(arch):
    conv = ((16, 3), (32, 3), (64, 3), (128, 3)) if arch == "vgg" else ModelConfig().conv
    model = build_model(ModelConfig(arch=arch, conv=conv, depth=2), seed=0).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 1, 48, 48))
    assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_no_norm_means_conv_bias_and_layer_means_groupnorm():
    def convs(norm):
        return [m for m in build_model(ModelConfig(norm=norm, conv=SMALL)).modules()
                if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs("none"))
    assert all(c.bias is None for c in convs("batch"))
    gn = [m for m in build_model(ModelConfig(norm="layer", conv=SMALL)).modules()
          if isinstance(m, torch.nn.GroupNorm)]
    assert gn and all(m.num_groups == 1 for m in gn)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    cfg = ModelConfig(arch="residual", conv=SMALL)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = build_model(cfg, seed=7), build_model(cfg, seed=7)
    assert torch.rand(1) == before
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_model(cfg, seed=8)
    assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


@pytest.mark.parametrize("field,value,words", [
    ("arch", "transformer", ["transformer", "cnn", "residual", "vgg"]),
    ("norm", "instance", ["instance", "batch", "layer"]),
    ("pooling", "lp", ["lp", "max", "avg"]),
    ("head", "attention", ["attention", "flatten", "gap"]),
])
def test_unknown_names_are_user_errors(field, value, words):
    with pytest.raises(UserError) as err:
        build_model(ModelConfig(**{field: value}))
    assert all(w in str(err.value) for w in words)


@pytest.mark.parametrize("kwargs", [
    {"conv": ()},
    {"conv": ((8, 3),) * 7},  # 48 / 2**7 < 1
    {"depth": 0},
    {"dropout": 1.0},
    {"fc_units": -1},
])
def test_bad_shapes_are_user_errors(kwargs):
    with pytest.raises(UserError):
        build_model(ModelConfig(**kwargs))

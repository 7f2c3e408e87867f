"""A reid-strong-baseline YACS file or checkpoint gives reid-strong-baseline's training and features.

Each expectation is re-derived from upstream's code (michuanhaohao/reid-strong-baseline):
``engine/trainer.py``, ``solver/lr_scheduler.py``, ``layers/__init__.py``, ``layers/triplet_loss.py``,
``modeling/baseline.py`` and ``modeling/backbones/resnet.py``.
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import REPO
from torch import nn
from torch.nn import functional as F
from torchvision import models

from reidlib.config import load_config
from reidlib.data.build import make_data_loaders
from reidlib.engine import do_train, seed_everything
from reidlib.errors import ConfigError
from reidlib.losses import make_loss
from reidlib.modeling import make_model
from reidlib.modeling.backbones import make_backbone
from reidlib.trial import build_config

RECIPE = {"base": 3.5e-4, "steps": [40, 70], "gamma": 0.1, "factor": 0.01, "iters": 10}


def upstream_lr(epoch: int, base: float, steps, gamma: float, factor: float, iters: int) -> float:
    """The lr upstream's epoch ``epoch`` (1-based) trains with: its scheduler is at last_epoch 0 once
    built, and its ignite trainer steps it on EPOCH_STARTED, so the epoch trains at last_epoch = epoch."""
    warmup = factor * (1 - epoch / iters) + epoch / iters if epoch < iters else 1.0
    return base * warmup * gamma ** sum(epoch >= step for step in steps)


def test_upstream_lr_has_the_issue_figures():
    lrs = {e: upstream_lr(e, **RECIPE) for e in range(1, 121)}
    assert lrs[1] == pytest.approx(3.815e-5) and lrs[10] == pytest.approx(3.5e-4)
    assert lrs[39] == pytest.approx(3.5e-4) and lrs[40] == pytest.approx(3.5e-5) and lrs[70] == pytest.approx(3.5e-6)


class Recorder:
    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, metrics):
        self.epochs.append(metrics)
        return False

    def on_train_end(self, result):
        pass


def _train(tiny_config, tmp_path, max_epochs: int, resume: str | None = None) -> list[float]:
    """``train/lr`` of each epoch trained, with upstream's warmup and a step at epoch 2."""
    cfg = build_config(str(tiny_config), output_dir=str(tmp_path), max_epochs=max_epochs, base_lr=RECIPE["base"],
                       warmup_factor=RECIPE["factor"], warmup_iters=RECIPE["iters"],
                       overrides={"SOLVER.STEPS": [2], "SOLVER.EVAL_PERIOD": 100})
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    recorder = Recorder()
    do_train(cfg, make_model(cfg, loaders.num_classes), loaders, [recorder], resume=resume)
    return [row["train/lr"] for row in recorder.epochs]


def test_each_epoch_trains_at_upstreams_lr_and_resume_keeps_the_schedule(tiny_config, tmp_path):
    expected = [upstream_lr(e, RECIPE["base"], [2], RECIPE["gamma"], RECIPE["factor"], RECIPE["iters"]) for e in (1, 2, 3)]
    assert _train(tiny_config, tmp_path, max_epochs=2) == pytest.approx(expected[:2], rel=1e-9)
    resumed = _train(tiny_config, tmp_path, max_epochs=3, resume=str(tmp_path / "checkpoint.pth"))
    assert resumed == pytest.approx(expected[2:], rel=1e-9)


def test_softmax_recipe_trains_with_plain_cross_entropy_as_upstream():
    cfg = load_config(REPO / "configs" / "softmax.yml")  # upstream's own: SAMPLER softmax, IF_LABELSMOOTH 'on'
    assert cfg.DATALOADER.SAMPLER == "softmax" and cfg.MODEL.IF_LABELSMOOTH == "on"
    torch.manual_seed(0)
    scores, feats, targets = torch.randn(6, 4), torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    loss = make_loss(cfg, num_classes=4, feat_dim=8)(scores, feats, targets)
    assert loss.item() == pytest.approx(F.cross_entropy(scores, targets).item(), rel=1e-6)
    # label smoothing stays on where upstream applies it: with the triplet loss, and with center loss
    for overrides in ({"DATALOADER.SAMPLER": "softmax_triplet", "MODEL.METRIC_LOSS_TYPE": "triplet"},
                      {"MODEL.IF_WITH_CENTER": "yes", "MODEL.METRIC_LOSS_TYPE": "center"}):
        criterion = make_loss(load_config(REPO / "configs" / "softmax.yml", overrides), 4, 8)
        assert criterion.xent(scores, targets).item() != pytest.approx(F.cross_entropy(scores, targets).item(), rel=1e-3)


def _hardest(feats, targets):
    dist = torch.cdist(feats, feats)
    same = targets[:, None] == targets[None, :]
    return (torch.stack([dist[i][same[i]].max() for i in range(len(targets))]),
            torch.stack([dist[i][~same[i]].min() for i in range(len(targets))]))


def test_margin_zero_is_a_hinge_and_the_soft_margin_has_its_own_key():
    torch.manual_seed(1)
    feats, targets = torch.randn(8, 5), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ap, an = _hardest(feats, targets)
    triplet = {"DATALOADER.SAMPLER": "triplet", "DATALOADER.NUM_INSTANCE": 2, "SOLVER.IMS_PER_BATCH": 8}
    hinge = make_loss(load_config(None, {**triplet, "SOLVER.MARGIN": 0.0}), 4, 5)
    assert hinge(torch.zeros(8, 4), feats, targets).item() == pytest.approx((ap - an).clamp(min=0).mean().item(), rel=1e-5)
    soft = make_loss(load_config(None, {**triplet, "SOLVER.MARGIN": 0.0, "SOLVER.SOFT_MARGIN": "yes"}), 4, 5)
    expected = torch.log1p(torch.exp(ap - an)).mean().item()
    assert soft(torch.zeros(8, 4), feats, targets).item() == pytest.approx(expected, rel=1e-5)
    assert (ap - an).clamp(min=0).mean().item() != pytest.approx(expected, rel=1e-3)


def test_standard_baseline_classifier_is_a_default_linear_with_bias():
    cfg = load_config(REPO / "configs" / "baseline.yml", {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "none"})
    assert cfg.MODEL.NECK == "no"
    classifier = make_model(cfg, num_classes=30).classifier
    bound = 1 / math.sqrt(512)  # nn.Linear's default init: uniform in +-1/sqrt(in_features), bias too
    assert classifier.bias is not None and classifier.bias.requires_grad
    assert classifier.weight.abs().max() <= bound and classifier.weight.std() > bound / 3  # not N(0, 0.001)
    assert classifier.bias.abs().max() <= bound and classifier.bias.abs().max() > bound / 3


class UpstreamResNet(nn.Module):
    """reid-strong-baseline's ResNet as its checkpoints name and run it: conv1 -> bn1 -> maxpool -> layers."""

    def __init__(self):
        super().__init__()
        resnet = models.resnet18(weights=None)
        self.conv1, self.bn1, self.maxpool = resnet.conv1, resnet.bn1, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))  # upstream has the ReLU here commented out
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class UpstreamBaseline(nn.Module):
    """Upstream's Baseline at eval (last stride 2, features after the neck)."""

    def __init__(self, num_classes: int, neck: str):
        super().__init__()
        self.base, self.neck = UpstreamResNet(), neck
        if neck == "bnneck":
            self.bottleneck = nn.BatchNorm1d(512)
            self.classifier = nn.Linear(512, num_classes, bias=False)
        else:
            self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        feat = F.adaptive_avg_pool2d(self.base(x), 1).flatten(1)
        return self.bottleneck(feat) if self.neck == "bnneck" else feat


@pytest.mark.parametrize("neck", ["bnneck", "no"])
def test_an_upstream_checkpoint_gives_upstreams_features(tmp_path, neck):
    torch.manual_seed(2)
    upstream = UpstreamBaseline(num_classes=7, neck=neck)
    with torch.no_grad():  # trained-looking BN statistics and shifts, so the stem's output has signs to lose
        for module in upstream.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.running_mean.normal_(0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.bias.normal_(0, 0.5)
    torch.save(upstream.state_dict(), tmp_path / "resnet18_model_120.pth")
    overrides = {"MODEL.NAME": "resnet18", "MODEL.LAST_STRIDE": 2, "MODEL.NECK": neck,
                 "MODEL.PRETRAIN_CHOICE": "self", "MODEL.PRETRAIN_PATH": str(tmp_path / "resnet18_model_120.pth")}
    ours = make_model(load_config(None, overrides), num_classes=7)
    images = torch.randn(4, 3, 64, 32)
    with torch.no_grad():
        expected, got = upstream.eval()(images), ours.eval()(images)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).norm() / expected.norm()
    with pytest.raises(ConfigError, match=r"MODEL.STEM_RELU: .*resnet18_model_120.pth is a reid-strong-baseline checkpoint"):
        make_model(load_config(None, {**overrides, "MODEL.STEM_RELU": "yes"}), num_classes=7)


def test_stem_relu_yes_is_torchvisions_resnet():
    torch.manual_seed(3)
    ours, _ = make_backbone("resnet18", 2, stem_relu=True)
    torchvision_trunk = nn.Sequential(*list(models.resnet18(weights=None).children())[:-2])  # conv1 .. layer4
    torchvision_trunk.load_state_dict(ours.body.state_dict())
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(ours.eval()(images), torchvision_trunk.eval()(images))
    cfg = load_config(None, {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "none", "MODEL.STEM_RELU": "yes"})
    assert isinstance(make_model(cfg, 3).base.body[2], nn.ReLU)

"""Each Bag of Tricks piece does what the paper and reid-strong-baseline do."""
from __future__ import annotations

import math

import pytest
import torch

from reidlib.config import load_config
from reidlib.losses import CenterLoss, CrossEntropyLabelSmooth, TripletLoss, make_loss
from reidlib.modeling import make_model
from reidlib.modeling.backbones import make_backbone
from reidlib.solver import WarmupMultiStepLR, make_optimizer


def test_batch_hard_triplet_matches_brute_force():
    torch.manual_seed(0)
    feats, targets = torch.randn(8, 5), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    dist = torch.cdist(feats, feats)
    expected = []
    for i in range(8):
        pos = max(dist[i, j] for j in range(8) if targets[j] == targets[i])
        neg = min(dist[i, j] for j in range(8) if targets[j] != targets[i])
        expected.append(max(0.0, float(pos - neg + 0.3)))
    assert TripletLoss(0.3)(feats, targets).item() == pytest.approx(sum(expected) / 8, rel=1e-5)
    soft = TripletLoss(None)(feats, targets).item()  # no margin: soft margin log(1 + exp(ap - an))
    assert soft > 0 and not math.isclose(soft, TripletLoss(0.3)(feats, targets).item())


def test_label_smoothing_targets():
    scores = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    log_p = torch.log_softmax(scores, dim=1)[0]
    q = torch.full((4,), 0.1 / 4)
    q[0] += 0.9
    assert CrossEntropyLabelSmooth(4, 0.1)(scores, torch.tensor([0])).item() == pytest.approx(float(-(q * log_p).sum()))


def test_last_stride_one_doubles_the_feature_map():
    x = torch.zeros(1, 3, 64, 32)
    s1, _ = make_backbone("resnet18", 1)
    s2, channels = make_backbone("resnet18", 2)
    assert s1(x).shape[-2:] == (4, 2) and s2(x).shape[-2:] == (2, 1) and channels == 512
    assert make_backbone("resnet50", 1)[1] == 2048


def test_bnneck_feeds_triplet_before_and_classifier_after():
    """Training: the triplet (and center) loss gets the pooled feature before the BNNeck, the classifier
    the feature after it (the paper's point: the two losses act in different spaces)."""
    torch.manual_seed(0)
    cfg = load_config(None, {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "none"})
    model = make_model(cfg, num_classes=5)
    assert model.bottleneck.bias.requires_grad is False and model.classifier.bias is None
    model.train()
    x = torch.randn(4, 3, 64, 32)
    scores, triplet_feat = model(x)
    with torch.no_grad():
        pooled = model.gap(model.base(x)).flatten(1)
        after_neck = model.bottleneck(pooled)
    assert scores.shape == (4, 5) and triplet_feat.shape == (4, 512)
    assert not torch.allclose(pooled, after_neck, atol=1e-3)  # the neck does change the feature
    assert torch.allclose(triplet_feat, pooled, atol=1e-5)
    assert torch.allclose(scores, model.classifier(after_neck), atol=1e-5)


@pytest.mark.parametrize("neck_feat", ["before", "after"])
def test_evaluation_returns_the_feature_test_neck_feat_names(neck_feat):
    torch.manual_seed(0)
    cfg = load_config(None, {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "none", "TEST.NECK_FEAT": neck_feat})
    model = make_model(cfg, num_classes=5)
    model.bottleneck.running_mean.fill_(0.5)  # statistics a trained neck would have: not the identity
    model.bottleneck.running_var.fill_(4.0)
    model.eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        pooled = model.gap(model.base(x)).flatten(1)
        expected = model.bottleneck(pooled) if neck_feat == "after" else pooled
        assert not torch.allclose(pooled, model.bottleneck(pooled), atol=1e-3)
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_imagenet_without_weights_file_is_a_clear_error():
    from reidlib.errors import ConfigError

    cfg = load_config(None, {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "imagenet"})
    with pytest.raises(ConfigError, match="MODEL.PRETRAIN_PATH.*nothing is downloaded"):
        make_model(cfg, 5)


def test_biases_get_their_own_lr_and_decay():
    cfg = load_config(None, {"SOLVER.BASE_LR": 0.01, "SOLVER.BIAS_LR_FACTOR": 2, "SOLVER.WEIGHT_DECAY_BIAS": 0.0,
                             "SOLVER.WEIGHT_DECAY": 5e-4})
    model = torch.nn.Linear(3, 2)
    groups = {len(g["params"][0].shape): g for g in make_optimizer(cfg, model).param_groups}
    assert groups[2]["lr"] == 0.01 and groups[2]["weight_decay"] == 5e-4
    assert groups[1]["lr"] == 0.02 and groups[1]["weight_decay"] == 0.0


def test_warmup_then_steps_per_epoch_as_upstream():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupMultiStepLR(opt, milestones=[4, 6], gamma=0.1, warmup_factor=0.01, warmup_iters=2)
    lrs = []
    for _ in range(8):  # stepped when each epoch starts, as upstream's trainer: epoch e trains at last_epoch e
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
    assert lrs == pytest.approx([0.505, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_center_loss_pulls_features_to_their_center():
    cfg = load_config(None, {"MODEL.IF_WITH_CENTER": "yes", "MODEL.METRIC_LOSS_TYPE": "triplet_center",
                             "DATALOADER.SAMPLER": "softmax_triplet", "DATALOADER.NUM_INSTANCE": 2,
                             "SOLVER.IMS_PER_BATCH": 4, "SOLVER.CENTER_LOSS_WEIGHT": 0.5})
    criterion = make_loss(cfg, num_classes=2, feat_dim=3)
    assert isinstance(criterion.center, CenterLoss) and criterion.triplet is not None
    feats, targets = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    expected = (feats - criterion.center.centers[targets]).pow(2).sum(1).mean()
    xent_only = criterion.xent(torch.zeros(4, 2), targets) + criterion.triplet(feats, targets)
    total = criterion(torch.zeros(4, 2), feats, targets)
    assert total.item() == pytest.approx((xent_only + 0.5 * expected).item(), rel=1e-5)


@pytest.mark.parametrize("overrides, xent, triplet", [
    ({"DATALOADER.SAMPLER": "softmax"}, True, False),
    ({"DATALOADER.SAMPLER": "triplet"}, False, True),
    ({"DATALOADER.SAMPLER": "softmax_triplet"}, True, True),
])
def test_sampler_picks_the_loss_terms_as_upstream(overrides, xent, triplet):
    criterion = make_loss(load_config(None, overrides), 3, 8)
    assert (criterion.xent is not None, criterion.triplet is not None, criterion.center) == (xent, triplet, None)


def test_self_loads_a_reid_strong_baseline_state_dict(tmp_path):
    cfg = load_config(None, {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "none"})
    trained = make_model(cfg, 7)
    order = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    upstream = {}  # upstream's names: base.conv1..., base.layer1..., bottleneck..., classifier...
    for key, value in trained.state_dict().items():
        if key.startswith("base.body."):
            index, _, rest = key[len("base.body."):].partition(".")
            key = f"base.{order[int(index)]}.{rest}"
        upstream[key] = value + 1 if value.is_floating_point() else value
    torch.save(upstream, tmp_path / "upstream.pth")
    loaded = make_model(load_config(None, {"MODEL.NAME": "resnet18", "MODEL.PRETRAIN_CHOICE": "self",
                                           "MODEL.PRETRAIN_PATH": str(tmp_path / "upstream.pth")}), 7)
    for key, value in trained.state_dict().items():
        expected = value + 1 if value.is_floating_point() else value
        assert torch.equal(loaded.state_dict()[key], expected), key

"""Optimiser with per-parameter groups and the warmup multi-step schedule, as reid-strong-baseline."""
from __future__ import annotations

import warnings
from bisect import bisect_right

import torch


def make_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Biases get ``BASE_LR * BIAS_LR_FACTOR`` and ``WEIGHT_DECAY_BIAS``; other weights the base values.

    Upstream makes one group per parameter; the same settings in two groups (weights first, whose lr
    the trial reports) step identically and let torch's multi-tensor kernels update each group in a
    few launches instead of ~160 groups one by one."""
    s = cfg.SOLVER
    weights, biases = [], []
    for key, param in model.named_parameters():
        if param.requires_grad:
            (biases if "bias" in key else weights).append(param)
    groups = [{"params": params, "lr": lr, "weight_decay": decay}
              for params, lr, decay in ((weights, s.BASE_LR, s.WEIGHT_DECAY),
                                        (biases, s.BASE_LR * s.BIAS_LR_FACTOR, s.WEIGHT_DECAY_BIAS)) if params]
    optimizer_class = getattr(torch.optim, s.OPTIMIZER_NAME)  # one of config.checks.OPTIMIZER_NAMES
    if s.OPTIMIZER_NAME == "SGD":
        return optimizer_class(groups, momentum=s.MOMENTUM)
    return optimizer_class(groups)


class WarmupMultiStepLR(torch.optim.lr_scheduler.LRScheduler):
    """``lr = base * warmup * GAMMA ** (milestones passed)``, stepped once per epoch.

    Warmup rises linearly from ``WARMUP_FACTOR`` to 1 over ``WARMUP_ITERS`` epochs ('linear'), or
    stays at ``WARMUP_FACTOR`` until then ('constant'). As reid-strong-baseline's ignite trainer, the
    trainer steps it when an epoch starts, so epoch e (1-based) trains at ``last_epoch = e``: the
    recipe's epoch 1 trains at 0.109 * BASE_LR, not at WARMUP_FACTOR * BASE_LR.
    """

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_factor=1 / 3, warmup_iters=500,
                 warmup_method="linear", last_epoch=-1):
        self.milestones, self.gamma = list(milestones), gamma
        self.warmup_factor, self.warmup_iters, self.warmup_method = warmup_factor, warmup_iters, warmup_method
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        warmup = 1.0
        if self.last_epoch < self.warmup_iters:
            if self.warmup_method == "constant":
                warmup = self.warmup_factor
            else:
                alpha = self.last_epoch / self.warmup_iters
                warmup = self.warmup_factor * (1 - alpha) + alpha
        decay = self.gamma ** bisect_right(self.milestones, self.last_epoch)
        return [base_lr * warmup * decay for base_lr in self.base_lrs]

    def step(self, epoch=None):
        # Stepping before the epoch's first optimiser step is the schedule, not the misuse torch warns about.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            super().step(epoch)


def make_scheduler(cfg, optimizer) -> WarmupMultiStepLR:
    s = cfg.SOLVER
    return WarmupMultiStepLR(optimizer, s.STEPS, s.GAMMA, s.WARMUP_FACTOR, s.WARMUP_ITERS, s.WARMUP_METHOD)

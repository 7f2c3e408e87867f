"""P4: the input pipeline, and (with a GPU) the training epoch.

1. Images/s of one training epoch's batches at 256x128 (PK sampler, batch 64): the per-sample PIL path
   (torchvision transforms in DataLoader workers) beside the cached, batched path (decoded once,
   augmented per batch on the training device). The cache's one-off decode time is reported apart.
2. With CUDA: one BoT ResNet-50 epoch (BNNeck, last stride 1, triplet + label-smoothed CE, Adam) at
   256x128 through ``reidlib.engine.do_train``: per-sample PIL + fp32 (upstream's setting) beside
   cached + fp32, cached + bf16 autocast + channels_last, and that with ``torch.compile``. The second of
   three epochs is timed (the first pays cuDNN's autotuning and compiling, the last evaluates);
   Market-1501's train size is 12,936 images (``--market-size``).

    .venv/bin/python benchmarks/input_pipeline.py [--train-ids 100] [--market-size] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from reidlib.config import load_config
from reidlib.data.build import make_data_loaders
from reidlib.engine import do_train, seed_everything
from reidlib.modeling import make_model

MARKET_TRAIN_IDS = 539  # x 6 cameras x 4 images = 12,936, Market-1501's training images


def bot_config(root: str, train_ids: int, workers: int, **overrides):
    base = {"MODEL.NAME": "resnet50", "MODEL.PRETRAIN_CHOICE": "none", "MODEL.DEVICE": "auto",
            "INPUT.SIZE_TRAIN": [256, 128], "INPUT.SIZE_TEST": [256, 128], "DATASETS.NAMES": "synthetic",
            "DATASETS.ROOT_DIR": root, "DATASETS.SYNTHETIC.NUM_TRAIN_IDS": train_ids,
            "DATASETS.SYNTHETIC.NUM_TEST_IDS": 20, "DATASETS.SYNTHETIC.NUM_CAMERAS": 6,
            "DATASETS.SYNTHETIC.IMAGES_PER_CAMERA": 4, "DATASETS.SYNTHETIC.IMAGE_SIZE": [256, 128],
            "DATALOADER.NUM_WORKERS": workers, "DATALOADER.SAMPLER": "softmax_triplet",
            "DATALOADER.NUM_INSTANCE": 4, "SOLVER.IMS_PER_BATCH": 64, "SOLVER.BASE_LR": 3.5e-4,
            "SOLVER.EVAL_PERIOD": 100, "SOLVER.CHECKPOINT_PERIOD": 100}
    return load_config(None, {**base, **overrides})


def loader_rate(cfg) -> tuple[float, float, int]:
    """(seconds to build the loaders, images/s over one epoch of training batches, images)."""
    start = time.perf_counter()
    loaders = make_data_loaders(cfg)
    built = time.perf_counter() - start
    seen, start = 0, time.perf_counter()
    for images, _, _ in loaders.train:
        seen += len(images)
    if images.is_cuda:
        torch.cuda.synchronize()
    return built, seen / (time.perf_counter() - start), seen


def epoch_time(cfg) -> tuple[float, float]:
    """(seconds of the second training epoch, peak GPU memory in MB)."""
    seed_everything(cfg.SEED)
    loaders = make_data_loaders(cfg)
    model = make_model(cfg, loaders.num_classes)
    torch.cuda.reset_peak_memory_stats()
    result = do_train(cfg, model, loaders)
    return result.history[1]["time/epoch_s"], result.peak_mem_mb


def step_time(cfg, steps: int = 30) -> float:
    """Seconds per training step on one fixed batch: the model, loss and optimiser without input."""
    from reidlib.losses import make_loss
    from reidlib.solver import make_optimizer

    model = make_model(cfg, 539).cuda()
    if cfg.MODEL.CHANNELS_LAST == "yes":
        model.to(memory_format=torch.channels_last)
    loss_fn, optimizer = make_loss(cfg, 539, model.in_planes).cuda(), make_optimizer(cfg, model)
    images = torch.randn(64, 3, 256, 128, device="cuda")
    pids = torch.arange(16, device="cuda").repeat_interleave(4)
    dtype = {"bf16": torch.bfloat16}.get(cfg.SOLVER.AMP)
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            scores, feats = model(images)
        loss = loss_fn(scores.float(), feats.float(), pids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-ids", type=int, default=100, help="identities (x 24 images) to train on")
    parser.add_argument("--market-size", action="store_true", help=f"{MARKET_TRAIN_IDS} ids = 12,936 images")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="PIL path loader workers")
    parser.add_argument("--root", default=None, help="dataset folder (default: a temporary one)")
    args = parser.parse_args()
    train_ids = MARKET_TRAIN_IDS if args.market_size else args.train_ids
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        pil_cfg = bot_config(root, train_ids, args.workers, **{"INPUT.CACHE_BUDGET_MB": 0})
        cached_cfg = bot_config(root, train_ids, args.workers)
        start = time.perf_counter()
        make_data_loaders(pil_cfg)  # generates the dataset once
        print(f"dataset: {train_ids * 24:,} training images at 256x128, generated in "
              f"{time.perf_counter() - start:.0f} s\n", flush=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        _, pil_rate, n = loader_rate(pil_cfg)
        decode_s, cached_rate, _ = loader_rate(cached_cfg)
        print(f"| input path, {n:,} images/epoch at 256x128, batch 64 | images/s | ratio |")
        print("|---|---|---|")
        print(f"| per-sample PIL transforms, {args.workers} loader workers | {pil_rate:,.0f} | 1.0 |")
        print(f"| cached + batched on {device} (one-off decode {decode_s:.1f} s) | {cached_rate:,.0f} | "
              f"{cached_rate / pil_rate:.1f}x |", flush=True)
        if device != "cuda":
            print(f"\nno GPU: the epoch-time table needs CUDA. cpu: {os.cpu_count()} cores")
            return
        epoch = {"SOLVER.MAX_EPOCHS": 3}  # epoch 2: after cuDNN's autotuning, before the last epoch's evaluation
        runs = [("per-sample PIL, fp32", {"INPUT.CACHE_BUDGET_MB": 0, "MODEL.CHANNELS_LAST": "no"}),
                ("cached + batched, fp32", {"MODEL.CHANNELS_LAST": "no"}),
                ("cached + batched, bf16 autocast + channels_last", {"SOLVER.AMP": "bf16"}),
                ("cached + batched, bf16 + channels_last + torch.compile", {"SOLVER.AMP": "bf16", "SOLVER.COMPILE": "yes"})]
        print(f"\n| BoT ResNet-50 epoch, {n:,} images, {torch.cuda.get_device_name()} | s/epoch | images/s | "
              f"peak GPU MB |")
        print("|---|---|---|---|")
        for name, overrides in runs:
            seconds, peak = epoch_time(bot_config(root, train_ids, args.workers, **epoch, **overrides))
            print(f"| {name} | {seconds:.2f} | {n / seconds:,.0f} | {peak:,.0f} |", flush=True)
        for name, overrides in runs[1:3]:  # what the model alone costs: the floor of an eager epoch
            per_step = step_time(bot_config(root, train_ids, args.workers, **overrides))
            print(f"| {name.split(', ', 1)[1]}: model + loss + step alone, x {n // 64} steps | "
                  f"{per_step * (n // 64):.2f} | {64 / per_step:,.0f} | |", flush=True)


if __name__ == "__main__":
    sys.exit(main())

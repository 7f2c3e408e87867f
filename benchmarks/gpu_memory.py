"""P6 (GPU): free GPU memory before and after each of 10 trials that each take most of the GPU.

Three ways to run the same 10 trials (BoT ResNet-50, 256x128, one epoch on a generated set, batch size
drawn from 640/704/768 by the sweep, as a sweep over IMS_PER_BATCH would):
- old: one long-lived Python process runs the trials one after another through ``do_train``
  (``wandb.agent(function=train)`` style): the CUDA context and the caching allocator's blocks stay;
- old + their fix: the same with ``gc.collect()`` and ``torch.cuda.empty_cache()`` after each trial;
- ours: ``reid-sweep run``: every trial is ``notebooks/train.ipynb`` in a fresh kernel process.
Free memory is read through NVML, as the next trial (another process) sees the device.

    .venv/bin/python benchmarks/gpu_memory.py [--trials 10] [--train-ids 40]
"""
from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BATCHES = (640, 704, 768)  # P = 160-192 identities of 4 images: most of an 80 GB GPU


def free_mb() -> float:
    import pynvml

    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).free / 2**20


def trial_config(root: Path, train_ids: int) -> Path:
    config = {"MODEL": {"NAME": "resnet50", "PRETRAIN_CHOICE": "none", "DEVICE": "cuda"},
              "INPUT": {"SIZE_TRAIN": [256, 128], "SIZE_TEST": [256, 128]},
              "DATASETS": {"NAMES": "synthetic", "ROOT_DIR": str(root / "data"),
                           "SYNTHETIC": {"NUM_TRAIN_IDS": train_ids, "NUM_TEST_IDS": 10, "NUM_CAMERAS": 6,
                                         "IMAGES_PER_CAMERA": 4, "IMAGE_SIZE": [256, 128]}},
              "DATALOADER": {"NUM_WORKERS": 4, "SAMPLER": "softmax_triplet", "NUM_INSTANCE": 4},
              "SOLVER": {"MAX_EPOCHS": 1, "EVAL_PERIOD": 1, "CHECKPOINT_PERIOD": 100},
              "TEST": {"IMS_PER_BATCH": 256}}
    path = root / "bot_gpu.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def old_way(config: Path, batches: list[int], fix: bool) -> list[tuple]:
    from reidlib.data.build import make_data_loaders
    from reidlib.engine import do_train
    from reidlib.modeling import make_model
    from reidlib.trial import build_config

    rows = []
    for batch in batches:
        before = free_mb()
        cfg = build_config(str(config), ims_per_batch=batch)
        try:
            loaders = make_data_loaders(cfg)
            status = do_train(cfg, make_model(cfg, loaders.num_classes), loaders).status
        except torch.cuda.OutOfMemoryError:
            status = "oom"
        if fix:
            gc.collect()
            torch.cuda.empty_cache()
        rows.append((batch, status, before, free_mb(), torch.cuda.max_memory_allocated() / 2**20))
        torch.cuda.reset_peak_memory_stats()
    return rows


def our_way(config: Path, batches: list[int], runs_dir: Path) -> list[tuple]:
    from reidlib.sweep.driver import run_sweep

    runs_dir.mkdir(parents=True, exist_ok=True)
    spec = runs_dir / "gpu_memory.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(config), "method": "random", "count": len(batches),
                                    "metric": {"name": "val/mAP", "goal": "maximize"},
                                    "parameters": {"ims_per_batch": {"values": sorted(set(batches))}}}))
    free_after = []
    before = free_mb()
    result = run_sweep(spec, runs_dir=runs_dir, wandb="offline", project_dir=REPO, progress=False,
                       on_trial_end=lambda _dir: free_after.append(free_mb()))
    rows = []
    for trial, after in zip(sorted(result.trials, key=lambda t: t.seq), free_after):
        peak = (trial.summary or {}).get("peak_mem_mb", 0)
        rows.append((trial.params["ims_per_batch"], trial.state, before, after, peak))
        before = after
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--train-ids", type=int, default=200, help="identities (x 24 images) per trial")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("P6's GPU part needs CUDA: no GPU here, nothing measured (the CPU part is benchmarks/orchestration.py)")
        return
    batches = [BATCHES[i % len(BATCHES)] for i in range(args.trials)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = trial_config(root, args.train_ids)
        baseline = free_mb()
        ours = our_way(config, batches, root / "runs")  # first: its driver process never touches CUDA
        tables = {"ours (fresh kernel per trial)": ours}
        tables["old (one long-lived process)"] = old_way(config, batches, fix=False)
        tables["old + gc.collect + empty_cache"] = old_way(config, batches, fix=True)
    total = torch.cuda.get_device_properties(0).total_memory / 2**20
    print(f"{torch.cuda.get_device_name()}: {total:,.0f} MB; free before any trial {baseline:,.0f} MB\n")
    for name, rows in tables.items():
        print(f"| {name}: trial | batch | state | free before MB | free after MB | after vs baseline MB | "
              f"trial peak MB |")
        print("|---|---|---|---|---|---|---|")
        for i, (batch, state, before, after, peak) in enumerate(rows, 1):
            print(f"| {i} | {batch} | {state} | {before:,.0f} | {after:,.0f} | {after - baseline:+,.0f} | {peak:,.0f} |")
        print()


if __name__ == "__main__":
    main()

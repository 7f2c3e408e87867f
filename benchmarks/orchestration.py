"""P1 and P6 (CPU part): what the sweep machinery costs per trial, beside the same trials run
in-process, and whether the driver's memory grows over many trials.

Each trial is a trivial trial notebook (the real trial contract, one epoch, no training), so the
difference is the orchestration: papermill, a fresh kernel, scraps, the ledger and an offline wandb
run. The old scripts slept 15-20 s per trial to let GPU memory settle.

    .venv/bin/python benchmarks/orchestration.py [--trials 10] [--memory-trials 50]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from helpers.fake_trial import write_fake_trial  # noqa: E402

WANDB_MODE = "offline"
TINY = {"DATASETS": {"NAMES": "synthetic"}, "SOLVER": {"MAX_EPOCHS": 1}}


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def kernels_alive() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum("ipykernel_launcher" in line for line in out.splitlines())


def in_process(config: Path, trials: int) -> float:
    """The same trial code, called in this process: config, one epoch's metrics."""
    import math

    from reidlib.trial import build_config

    start = time.perf_counter()
    for i in range(trials):
        cfg = build_config(str(config), {}, base_lr=10.0 ** -(1 + i % 5), max_epochs=1)
        _ = {"val/mAP": math.exp(-abs(math.log10(cfg.SOLVER.BASE_LR) + 3))}
    return (time.perf_counter() - start) / trials


def driven(work: Path, config: Path, trials: int) -> tuple[float, float, float]:
    """Seconds per trial through the driver, and the driver's RSS before and after."""
    from reidlib.sweep import run_sweep

    spec = work / f"spec-{trials}.yaml"
    spec.write_text(yaml.safe_dump({"config_file": str(config), "notebook": "fake.ipynb", "method": "random",
                                    "count": trials, "parameters": {"base_lr": {"distribution": "log_uniform_values",
                                                                                "min": 1e-5, "max": 1e-1},
                                                                    "max_epochs": 1}}))
    before = rss_mb()
    start = time.perf_counter()
    run_sweep(spec, runs_dir=work / "runs", project_dir=work, wandb=WANDB_MODE, progress=False)
    return (time.perf_counter() - start) / trials, before, rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--memory-trials", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = work / "tiny.yml"
        config.write_text(yaml.safe_dump({**TINY, "DATASETS": {"NAMES": "synthetic", "ROOT_DIR": str(work / "data")}}))
        write_fake_trial(work / "fake.ipynb", epoch_seconds=0.0)
        driven(work, config, 1)  # warm-up: kernelspec, imports, wandb service
        per_trial, _, _ = driven(work, config, args.trials)
        baseline = in_process(config, args.trials)
        _, rss_before, rss_after = driven(work, config, args.memory_trials)
        alive = kernels_alive()
    print("| measure | reid-sweep | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| seconds per trial ({args.trials} trials) | {per_trial:.2f} | {baseline:.4f} (in-process) | "
          f"{per_trial / baseline:.0f}x |")
    print(f"| orchestration overhead per trial (s) | {per_trial - baseline:.2f} | 15-20 (old scripts' sleep) | "
          f"{(per_trial - baseline) / 15:.2f}x |")
    print(f"| driver RSS over {args.memory_trials} trials (MB) | {rss_before:.0f} -> {rss_after:.0f} "
          f"(+{rss_after - rss_before:.1f}) | target growth < 20 | |")
    print(f"| kernel processes alive after the sweep | {alive} | 0 | |")
    print(f"\ncpu: {os.cpu_count()} cores; python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()

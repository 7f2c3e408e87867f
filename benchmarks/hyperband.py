"""P5: what hyperband early termination saves, and what it costs in the best result found.

The same fixed grid of (base_lr, weight_decay) points on the synthetic set (configs/synthetic.yml,
CPU) runs twice through ``reidlib.sweep.driver.run_sweep``: once with hyperband and once with the full
budget for every trial. By default 9 trials of 9 epochs with ``min_iter 1, eta 3`` (a trial whose best
so far is behind the median at its 1st or 3rd evaluated epoch is asked to stop), the setting where
early stopping has most to save; ``--min-iter 2 --eta 2 --epochs 5`` is sweeps/demo.yaml's. The grid
runs in the order listed (W&B's grid: ``base_lr`` outer, ``weight_decay`` inner), which mixes good and
bad learning rates, as a random or bayes search would. Every trial's seed is the config's: the same
point trains the same in both sweeps (the table's last line checks it).

"Epochs until within 1 point" walks the trials in the order they ran, epoch by epoch, and counts the
epochs trained until some trial had reached ``val/mAP >= best - 0.01`` (best: that sweep's own final
best, and the full-budget sweep's best). Its seconds are from the sweep's start to the end of that
epoch (the trial's end less the epochs it trained after it, so a trial's kernel start, data and
untrained evaluation count before its first epoch).

A trial waits for the driver's verdict on each epoch (``reidlib.trial.VERDICT_FILE``), so a stop
decided on epoch ``b``'s metrics ends the trial before epoch ``b + 1``; a stop asked during a trial's
last epoch cuts nothing (the table counts those requests).

Both sweeps share one decoded-image cache (filled by a one-trial warm-up sweep) and each computes the
untrained evaluation once, as sweeps on one machine do.

    .venv/bin/python benchmarks/hyperband.py [--lrs 1e-3,1e-4,...] [--wds 1e-5,1e-3] [--epochs 9]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reidlib.data.image_cache import CACHE_ENV  # noqa: E402
from reidlib.trial import TrialState  # noqa: E402

WANDB_MODE = "offline"
CONFIG = REPO / "configs" / "synthetic.yml"
METRIC = "val/mAP"
WITHIN = 0.01  # one mAP point
LRS = "3e-3,1e-4,1e-2,3e-4,1e-3,3e-2,2e-3,5e-5,5e-3"  # good and bad, not in order
WDS = "5e-4"


def spec(work: Path, name: str, lrs: list[float], wds: list[float], epochs: int, hyperband: dict | None) -> Path:
    raw = {"name": name, "config_file": str(CONFIG), "method": "grid",
           "metric": {"name": METRIC, "goal": "maximize"},
           "parameters": {"base_lr": {"values": lrs}, "weight_decay": {"values": wds}},
           "defaults": {"max_epochs": epochs}}
    if hyperband:
        raw["early_terminate"] = {"type": "hyperband", **hyperband}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def sweep(work: Path, path: Path) -> tuple[list, float, float, set[str]]:
    """The sweep's trials (in the order they ran, with history), its start time, wall seconds, and the
    trials hyperband asked to stop (its STOP file, which stays when the stop came too late to cut an epoch)."""
    from reidlib.sweep.driver import run_sweep
    from reidlib.trial import STOP_FILE

    start, clock = time.time(), time.perf_counter()
    result = run_sweep(path, runs_dir=work / "runs", project_dir=REPO, wandb=WANDB_MODE, progress=False)
    wall = time.perf_counter() - clock
    asked = {t.name for t in result.trials
             if (stop := result.directory / "trials" / t.name / STOP_FILE).is_file() and stop.read_text() == "hyperband"}
    return sorted(result.trials, key=lambda t: t.seq), start, wall, asked


def epochs(trial) -> list[dict]:
    return [row for row in trial.history if row.get("epoch", 0) >= 1]


def best_of(trial) -> float | None:
    values = [row[METRIC] for row in epochs(trial) if isinstance(row.get(METRIC), (int, float))]
    return max(values) if values else None


def until_within(trials: list, start: float, target: float) -> tuple[int | None, float | None]:
    """Epochs trained (in run order) and seconds from the sweep's start until a trial reached ``target``."""
    trained = 0
    for trial in trials:
        rows = epochs(trial)
        for i, row in enumerate(rows):
            trained += 1
            if isinstance(row.get(METRIC), (int, float)) and row[METRIC] >= target:
                after = sum(r.get("time/epoch_s", 0.0) for r in rows[i + 1:])
                return trained, (trial.ended or time.time()) - after - start
    return None, None


def measure(trials: list, start: float, wall: float, reference_best: float | None = None) -> dict:
    bests = [b for b in map(best_of, trials) if b is not None]
    best = max(bests) if bests else float("nan")
    own = until_within(trials, start, best - WITHIN)
    ref = until_within(trials, start, (reference_best if reference_best is not None else best) - WITHIN)
    return {"trials": len(trials), "stopped": sum(t.state == TrialState.STOPPED for t in trials),
            "epochs": sum(len(epochs(t)) for t in trials), "wall": wall, "best": best,
            "own_epochs": own[0], "own_s": own[1], "ref_epochs": ref[0], "ref_s": ref[1]}


def point(trial) -> tuple:
    return trial.params["base_lr"], trial.params["weight_decay"]


def seconds(trial) -> str:
    return f"{trial.ended - trial.started:.0f} s" if trial.started and trial.ended else "?"


def fmt(value, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def ratio(a, b) -> str:
    return "" if a is None or b is None or not b else f"{a / b:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default=LRS, help="comma-separated base_lr grid values, in run order")
    parser.add_argument("--wds", default=WDS, help="comma-separated weight_decay grid values")
    parser.add_argument("--epochs", type=int, default=9, help="SOLVER.MAX_EPOCHS of every trial (the demo's: 5)")
    parser.add_argument("--min-iter", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    args = parser.parse_args()
    lrs = [float(v) for v in args.lrs.split(",")]
    wds = [float(v) for v in args.wds.split(",")]
    logging.basicConfig(level=logging.WARNING)
    warnings.simplefilter("ignore")
    os.chdir(REPO)  # the config's DATASETS.ROOT_DIR ('./data') is relative to the project
    total, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ[CACHE_ENV] = str(work / "cache")  # the trials' kernels inherit it
        # warm-up: kernelspec, imports, wandb service, page cache (one trial, one epoch)
        sweep(work, spec(work, "warmup", lrs[:1], wds[:1], 1, None))
        hb_trials, hb_start, hb_wall, hb_asked = sweep(work, spec(work, "hyperband", lrs, wds, args.epochs,
                                                        {"min_iter": args.min_iter, "eta": args.eta}))
        full_trials, full_start, full_wall, _ = sweep(work, spec(work, "full", lrs, wds, args.epochs, None))
    full = measure(full_trials, full_start, full_wall)
    hb = measure(hb_trials, hb_start, hb_wall, reference_best=full["best"])

    by_point = {point(t): t for t in full_trials}
    diffs = [abs(a[METRIC] - b[METRIC]) for t in hb_trials if point(t) in by_point
             for a, b in zip(epochs(t), epochs(by_point[point(t)])) if METRIC in a and METRIC in b]
    full_best_point = max(full_trials, key=lambda t: best_of(t) or -1.0)
    hb_twin = next((t for t in hb_trials if point(t) == point(full_best_point)), None)

    print(f"Grid: base_lr {lrs} x weight_decay {wds}, {args.epochs} epochs each; "
          f"hyperband min_iter {args.min_iter}, eta {args.eta}.\n")
    print("| measure | hyperband | full budget | ratio (hyperband / full) |")
    print("|---|---|---|---|")
    print(f"| trials (stopped early) | {hb['trials']} ({hb['stopped']}) | {full['trials']} ({full['stopped']}) | |")
    late = sum(t.name in hb_asked and t.state != TrialState.STOPPED for t in hb_trials)
    print(f"| hyperband stop requests (came during the trial's last epoch: nothing cut) | {len(hb_asked)} ({late}) "
          f"| 0 | |")
    print(f"| epochs trained | {hb['epochs']} | {full['epochs']} | {ratio(hb['epochs'], full['epochs'])} |")
    print(f"| wall time (s) | {hb['wall']:.0f} | {full['wall']:.0f} | {ratio(hb['wall'], full['wall'])} |")
    print(f"| best {METRIC} found | {hb['best']:.4f} | {full['best']:.4f} | {ratio(hb['best'], full['best'])} |")
    print(f"| epochs until a trial within 0.01 of its own best | {fmt(hb['own_epochs'], 'd')} | "
          f"{fmt(full['own_epochs'], 'd')} | {ratio(hb['own_epochs'], full['own_epochs'])} |")
    print(f"| seconds until a trial within 0.01 of its own best | {fmt(hb['own_s'], '.0f')} | "
          f"{fmt(full['own_s'], '.0f')} | {ratio(hb['own_s'], full['own_s'])} |")
    print(f"| epochs until a trial within 0.01 of the full budget's best ({full['best']:.4f}) | "
          f"{fmt(hb['ref_epochs'], 'd')} | {fmt(full['ref_epochs'], 'd')} | {ratio(hb['ref_epochs'], full['ref_epochs'])} |")
    print(f"| seconds until a trial within 0.01 of the full budget's best | {fmt(hb['ref_s'], '.0f')} | "
          f"{fmt(full['ref_s'], '.0f')} | {ratio(hb['ref_s'], full['ref_s'])} |")

    print(f"\nPer trial, in run order: best {METRIC} (epochs trained, trial seconds):\n")
    print("| trial | base_lr | weight_decay | hyperband | full budget |")
    print("|---|---|---|---|---|")
    for i, trial in enumerate(hb_trials, 1):
        twin = by_point.get(point(trial))
        mark = " (stopped)" if trial.state == TrialState.STOPPED else "" if trial.state == TrialState.FINISHED else f" ({trial.state})"
        if trial.name in hb_asked and trial.state != TrialState.STOPPED:
            mark += " (stop asked during its last epoch)"
        full_cell = f"{fmt(best_of(twin), '.4f')} ({len(epochs(twin))}, {seconds(twin)})" if twin else ""
        print(f"| {i} | {trial.params['base_lr']:g} | {trial.params['weight_decay']:g} | "
              f"{fmt(best_of(trial), '.4f')} ({len(epochs(trial))}, {seconds(trial)}){mark} | {full_cell} |")
    stopped_best = hb_twin is not None and hb_twin.state == TrialState.STOPPED
    print(f"\nthe full budget's best point (base_lr {full_best_point.params['base_lr']:g}, weight_decay "
          f"{full_best_point.params['weight_decay']:g}) was {'STOPPED' if stopped_best else 'not stopped'} by hyperband")
    print(f"same point, same epoch, hyperband vs full run: max |d {METRIC}| = "
          f"{max(diffs) if diffs else float('nan'):.4f} over {len(diffs)} epochs (0 = training is reproducible)")
    print(f"\ncpu: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
          f"benchmark wall time {time.perf_counter() - total:.0f} s; 1-min load average {load_before:.1f} "
          f"before, {os.getloadavg()[0]:.1f} after (above {os.cpu_count()}: other work shared the CPU)")


if __name__ == "__main__":
    main()

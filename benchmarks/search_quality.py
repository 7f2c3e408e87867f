"""Search quality: random, bayes (W&B's), tpe and gp (Optuna's), with and without hyperband, side by
side on an objective that needs no training, through the real ``LocalController``.

The objective is a simulated Bag-of-Tricks learning curve. A configuration's final ``val/mAP`` is

    final = CEILING[optimizer] * q_lr * q_wd * q_warmup * q_margin * q_batch, where
    x        = log10(lr_eff / LR_BEST[optimizer]), lr_eff = base_lr * 0.1 / (1 - momentum) for SGD
               (SGD's step grows as 1/(1 - momentum); LR_BEST is for momentum 0.9), else base_lr
    q_lr     = exp(-x^2 / (2 * 0.4^2))                 (a decade off the best rate costs 96%)
    q_wd     = exp(-log10(weight_decay / 5e-4)^2 / (2 * 0.7^2))
    q_warmup = 1 - 0.2 * exp(-warmup_iters / 4) * max(0, x + 0.5)   (short warmups hurt high rates)
    q_margin = 1 - 0.8 * (margin - 0.3)^2
    q_batch  = {32: 0.97, 64: 1.0, 128: 0.95}[ims_per_batch]
and a learning rate more than 20x the best (x > 1.3) diverges: the curve stays at the untrained 0.02.
Epoch e of E = 10 reports 0.02 + (final - 0.02) * (1 - exp(-r e)) / (1 - exp(-r E)) plus Gaussian
noise (sd 0.01), with r = 0.15 + 0.35 q_lr (a bad rate also learns slowly), so hyperband has curves
to judge. ``momentum`` is a conditional parameter: searched only when the optimizer is SGD.

Each search runs a budget of trials (one worker: each trial ends before the next is drawn; with
hyperband, ``to_stop`` is asked after every epoch, as the driver does). Per method, budget and
hyperband setting over the seeds: the best value found (the best observed ``val/mAP``) and the regret
(the best achievable final value less the true final value of the trial the sweep would pick, its
best observed one), as median [first quartile, third quartile], and the epochs trained. Then seconds
per suggestion with 50 and 300 finished trials in the ledger.

    python benchmarks/search_quality.py                       # 3 seeds, budget 15: a few minutes
    python benchmarks/search_quality.py --seeds 20 --budgets 15,40
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reidlib.sweep.controller import LocalController  # noqa: E402
from reidlib.sweep.ledger import FINISHED, RUNNING, STOPPED, Trial  # noqa: E402
from reidlib.sweep.spec import normalise  # noqa: E402

METRIC = "val/mAP"
EPOCHS = 10
UNTRAINED = 0.02
NOISE = 0.01
CEILING = {"Adam": 0.86, "AdamW": 0.87, "SGD": 0.85}
LR_BEST = {"Adam": 3.5e-4, "AdamW": 3.5e-4, "SGD": 1e-2}
Q_BATCH = {32: 0.97, 64: 1.0, 128: 0.95}
SPACE = {
    "base_lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-1},
    "weight_decay": {"distribution": "log_uniform_values", "min": 1e-6, "max": 1e-2},
    "warmup_iters": {"distribution": "int_uniform", "min": 0, "max": 20},
    "margin": {"distribution": "uniform", "min": 0.1, "max": 0.7},
    "ims_per_batch": {"values": [32, 64, 128]},
    "optimizer": {"values": ["Adam", "AdamW", "SGD"]},
    "momentum": {"distribution": "uniform", "min": 0.5, "max": 0.99, "parent": "optimizer", "parent_values": ["SGD"]},
}
HYPERBAND = {"type": "hyperband", "min_iter": 2, "eta": 2}  # as sweeps/demo.yaml


def lr_offset(p: dict) -> float:
    lr = p["base_lr"] * (0.1 / (1 - p["momentum"]) if p["optimizer"] == "SGD" else 1.0)
    return math.log10(lr / LR_BEST[p["optimizer"]])


def final_map(p: dict) -> float:
    x = lr_offset(p)
    if x > 1.3:
        return UNTRAINED
    q_warmup = 1 - 0.2 * math.exp(-p["warmup_iters"] / 4) * max(0.0, x + 0.5)
    return (CEILING[p["optimizer"]] * math.exp(-x * x / (2 * 0.4 ** 2))
            * math.exp(-math.log10(p["weight_decay"] / 5e-4) ** 2 / (2 * 0.7 ** 2))
            * q_warmup * (1 - 0.8 * (p["margin"] - 0.3) ** 2) * Q_BATCH[p["ims_per_batch"]])


def curve(p: dict, epoch: int) -> float:
    """The noise-free ``val/mAP`` after ``epoch`` epochs."""
    rate = 0.15 + 0.35 * math.exp(-lr_offset(p) ** 2 / (2 * 0.4 ** 2))
    return UNTRAINED + (final_map(p) - UNTRAINED) * (1 - math.exp(-rate * epoch)) / (1 - math.exp(-rate * EPOCHS))


def best_achievable() -> float:
    """max of final_map: AdamW at its best rate offset (a fine grid; the other factors at their optima)."""
    best = {"optimizer": "AdamW", "weight_decay": 5e-4, "warmup_iters": 20, "margin": 0.3, "ims_per_batch": 64}
    return max(final_map({**best, "base_lr": LR_BEST["AdamW"] * 10 ** x}) for x in np.linspace(-1, 1, 20001))


def spec_for(method: str, hyperband: bool):
    raw = {"method": method, "metric": {"name": METRIC, "goal": "maximize"}, "parameters": SPACE}
    if hyperband:
        raw["early_terminate"] = HYPERBAND
    return normalise(raw)


def search(method: str, budget: int, seed: int, hyperband: bool) -> list[Trial]:
    """One sweep of ``budget`` simulated trials; its trials with their histories."""
    controller = LocalController(spec_for(method, hyperband), count=budget, seed=seed)
    noise = np.random.default_rng([seed, 2026])
    trials: list[Trial] = []
    while (chosen := controller.next_trial(trials)) is not None:
        trial = Trial(name=f"trial-{len(trials) + 1:03d}", seq=len(trials) + 1, state=RUNNING, params=chosen[0])
        trials.append(trial)
        for epoch in range(1, EPOCHS + 1):
            trial.history.append({"epoch": epoch, METRIC: curve(trial.params, epoch) + noise.normal(0, NOISE)})
            if hyperband and trial.name in controller.to_stop(trials):
                trial.state = STOPPED
                break
        else:
            trial.state = FINISHED
    return trials


def outcome(trials: list[Trial], optimum: float) -> tuple[float, float, int]:
    """Best observed value, regret of the trial it picks, epochs trained."""
    picked = max(trials, key=lambda t: max(row[METRIC] for row in t.history))
    return (max(row[METRIC] for row in picked.history), optimum - final_map(picked.params),
            sum(len(t.history) for t in trials))


def quartiles(values: list[float], digits: int = 3) -> str:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"{median:.{digits}f} [{q1:.{digits}f}, {q3:.{digits}f}]"


def seconds_per_suggestion(method: str, finished: int, repeats: int) -> float:
    """Mean seconds of ``next_trial`` with ``finished`` random trials (with curves) in the ledger."""
    rng = np.random.default_rng(finished)
    prefill = LocalController(spec_for("random", False), seed=1)
    trials: list[Trial] = []
    for i in range(finished):
        params, _ = prefill.next_trial(trials)
        history = [{"epoch": e, METRIC: curve(params, e) + rng.normal(0, NOISE)} for e in range(1, EPOCHS + 1)]
        trials.append(Trial(name=f"trial-{i + 1:03d}", seq=i + 1, state=FINISHED, params=params, history=history))
    controller = LocalController(spec_for(method, False), seed=1)
    start = time.perf_counter()
    for _ in range(repeats):
        controller.next_trial(trials)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="searches per method, budget and hyperband setting")
    parser.add_argument("--budgets", default="15", help="trials per search, comma-separated (the issue: 15,40)")
    parser.add_argument("--methods", default="random,bayes,tpe,gp")
    parser.add_argument("--ledger-sizes", default="50,300", help="finished trials for the seconds-per-suggestion table")
    parser.add_argument("--repeats", type=int, default=2, help="suggestions timed per method and ledger size")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)  # sweeps and optuna's notes on each fit
    methods, budgets = args.methods.split(","), [int(b) for b in args.budgets.split(",")]
    optimum = best_achievable()
    print(f"best achievable val/mAP {optimum:.4f}; {args.seeds} seeds; {EPOCHS} epochs per trial\n")
    for budget in budgets:
        print(f"budget {budget} trials: median [quartiles] over seeds")
        print("| method | hyperband | best val/mAP found | regret | epochs trained | s per search |")
        print("|---|---|---|---|---|---|")
        for method in methods:
            for hyperband in (False, True):
                start = time.perf_counter()
                results = [outcome(search(method, budget, seed, hyperband), optimum) for seed in range(args.seeds)]
                seconds = (time.perf_counter() - start) / args.seeds
                best, regret, epochs = zip(*results)
                print(f"| {method} | {'yes' if hyperband else 'no'} | {quartiles(best)} | {quartiles(regret)} | "
                      f"{np.median(epochs):.0f} of {budget * EPOCHS} | {seconds:.1f} |", flush=True)
        print()
    sizes = [int(s) for s in args.ledger_sizes.split(",")]
    print("| seconds per suggestion | " + " | ".join(f"{n} trials in the ledger" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for method in methods:
        print(f"| {method} | " + " | ".join(f"{seconds_per_suggestion(method, n, args.repeats):.3f}" for n in sizes) + " |",
              flush=True)


if __name__ == "__main__":
    main()

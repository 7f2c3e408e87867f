"""Evaluation sweeps: what a trial of test-time options costs beside the training trial it evaluates.

A training sweep of one trial (``--epochs`` on ``--config``, 1 in 8 training identities held out, as
sweeps do by default), then an evaluation sweep of it (``from:``): a grid of ``--trials`` re-ranking k1
values, each trial a fresh papermill kernel as in any sweep. The first evaluation trial extracts and
caches the features; the others read them (no model, no image). The table gives each trial's
in-kernel seconds (summary ``wall_time_s``) and ledger seconds (kernel start to end), and the whole
sweeps' wall clock.

    .venv/bin/python benchmarks/eval_sweep.py [--config configs/synthetic.yml] [--epochs 5] [--trials 6]
        [--device cpu|cuda|auto]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def run(spec: dict, directory: Path, runs: Path, name: str):
    from reidlib.sweep import run_sweep

    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    start = time.perf_counter()
    result = run_sweep(path, runs_dir=runs, project_dir=REPO, wandb="disabled", progress=False)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/synthetic.yml")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=6, help="evaluation trials (re-ranking k1 values)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp, runs = Path(tmp), Path(tmp) / "runs"
        training, train_s = run({"name": "trained", "method": "grid", "config_file": args.config,
                                 "parameters": {"max_epochs": args.epochs},
                                 "defaults": {"device": args.device}}, tmp, runs, "train")
        k1 = [10 + 4 * i for i in range(args.trials)]
        evaluation, eval_s = run({"name": "rerank", "from": training.sweep_id, "method": "grid",
                                  "parameters": {"TEST.RE_RANKING": "yes", "TEST.RERANK_K1": k1},
                                  "defaults": {"device": args.device}}, tmp, runs, "rerank")
        rows = [("training trial", training.trials[0])] + \
               [(f"evaluation trial {i + 1}" + (" (extracts features)" if i == 0 else " (cached features)"), t)
                for i, t in enumerate(sorted(evaluation.trials, key=lambda t: t.seq))]
        print(f"{'trial':40s} {'state':9s} {'in kernel s':>11s} {'ledger s':>9s} {'val/mAP':>8s} {'test/mAP':>8s}")
        for label, t in rows:
            s = t.summary or {}
            print(f"{label:40s} {t.state:9s} {s.get('wall_time_s', float('nan')):11.2f} "
                  f"{(t.ended or 0) - (t.started or 0):9.2f} {(s.get('best') or {}).get('val/mAP', float('nan')):8.4f} "
                  f"{(s.get('test') or {}).get('test/mAP', float('nan')):8.4f}")
        print(f"training sweep ({args.epochs} epochs): {train_s:.1f} s wall; evaluation sweep ({args.trials} trials): "
              f"{eval_s:.1f} s wall, {eval_s / args.trials:.1f} s per trial with its kernel")


if __name__ == "__main__":
    main()

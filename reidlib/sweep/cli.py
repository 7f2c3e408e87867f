"""``reid-sweep``: run, validate and inspect sweeps from a shell.

Errors a user causes print one line (``error: <field>: <what was expected>``) and exit 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from reidlib.errors import ReidSweepError

EXIT_USER_ERROR = 2


def _cmd_run(args) -> int:
    from reidlib.analysis import leaderboard, open_sweep
    from reidlib.sweep.driver import run_analysis, run_sweep

    result = run_sweep(args.spec, count=args.count, sweep_id=args.sweep_id, runs_dir=args.runs_dir,
                       wandb=args.wandb, project=args.project, entity=args.entity, timeout=args.timeout)
    analysis = run_analysis(result.directory)
    sweep = open_sweep(result.directory)
    name, _ = sweep.metric
    print(f"sweep {sweep.id}: {len(sweep.runs)} trials in {result.directory}")
    print(leaderboard(sweep).to_string(max_colwidth=40))
    best = sweep.best_run()
    if best is None:
        print("no trial finished: see the trial notebooks for their errors")
    else:
        untrained = best.summary.get(f"initial/{name}")
        versus = f" (untrained features: {untrained:.4f})" if untrained is not None else ""
        print(f"best trial: {best.name}  {name} {best.summary[name]:.4f}{versus}")
        print(f"best trial notebook: {best.notebook_path}")
    print(f"ledger: {result.directory / 'sweep.db'}")
    print(f"analysis: {analysis}")
    return 0


def _cmd_validate(args) -> int:
    from reidlib.sweep.spec import check_against_config, load_spec

    spec = load_spec(args.spec)
    check_against_config(spec)
    print(json.dumps(spec.to_dict(), indent=2, default=str))
    return 0


def _cmd_status(args) -> int:
    from reidlib.analysis import leaderboard, open_sweep

    sweep = open_sweep(args.sweep, args.runs_dir or "runs")
    print(f"sweep {sweep.id} ({sweep.name}): {len(sweep.runs)} trials")
    print(leaderboard(sweep).to_string(max_colwidth=40))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid-sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a sweep from a W&B-schema YAML")
    run.add_argument("spec", help="sweep YAML, e.g. sweeps/demo.yaml")
    run.add_argument("--count", type=int, help="total number of trials (overrides the spec's count)")
    run.add_argument("--sweep-id", help="resume this sweep")
    run.add_argument("--runs-dir", help="where sweeps are written (default: runs/)")
    run.add_argument("--wandb", choices=("offline", "online", "disabled"),
                     help="W&B mode (default: offline unless a key or WANDB_BASE_URL is configured)")
    run.add_argument("--project", default="reid-sweep", help="W&B project")
    run.add_argument("--entity", help="W&B entity")
    run.add_argument("--timeout", type=float, help="per-cell time limit of a trial, in seconds")
    run.set_defaults(func=_cmd_run)
    validate = sub.add_parser("validate", help="check a sweep YAML and print it normalised")
    validate.add_argument("spec")
    validate.set_defaults(func=_cmd_validate)
    status = sub.add_parser("status", help="a sweep's trials, states and best so far")
    status.add_argument("sweep", help="sweep id or runs/<id> directory")
    status.add_argument("--runs-dir")
    status.set_defaults(func=_cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("papermill", "traitlets", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if getattr(args, "count", None) is not None and args.count < 1:
        print(f"error: --count: expected a positive integer, got {args.count}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except ReidSweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: resume with --sweep-id", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

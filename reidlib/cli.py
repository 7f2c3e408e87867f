"""``reid-sweep``: run, validate and inspect sweeps from a shell.

Errors a user causes print one line (``error: <field>: <what was expected>``) and exit 2.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

from reidlib.errors import ReidSweepError, SpecError, SweepStateError
from reidlib.sweep import layout

EXIT_USER_ERROR = 2
EXIT_TRIALS_FAILED = 1  # the sweep ran, and every trial of it failed


def os_error_line(err: OSError) -> str:
    """``<file>: <what happened>; <what to do>`` for an OSError."""
    advice = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space", errno.EACCES: "check its permissions",
              errno.EPERM: "check its permissions", errno.EROFS: "make it writable"}
    what = "; ".join(filter(None, (err.strerror or str(err), advice.get(err.errno))))
    return f"{err.filename}: {what}" if err.filename else what


def _spec_amendments(args) -> dict:
    return {k: v for k, v in {key: getattr(args, key, None) for key in (
        "method", "name", "metric", "config_file", "custom_params", "values")}.items() if v}


def _load_spec(path: str | None, args):
    """The spec file at ``path``, or with no path the spec in the ledger of the sweep being resumed."""
    from reidlib.sweep.evaluation_spec import evaluating
    from reidlib.sweep.resume import recorded_spec
    from reidlib.sweep.spec import load_spec

    if path is None:
        spec = recorded_spec(layout.existing_sweep_dir(args.sweep_id, args.runs_dir), **_spec_amendments(args))
    else:
        spec = load_spec(path, **_spec_amendments(args))
    from_run = getattr(args, "from_run", None)
    return evaluating(spec, from_run) if from_run else spec


def _unbounded(spec, count: int | None) -> str | None:
    """One line for a sweep that nothing but the user will end: no count or run_cap, and a search that
    never runs out (W&B's agent runs such a sweep until it is stopped too; a discrete space ends when
    every configuration has run)."""
    from reidlib.sweep.controller import discrete_points

    method = spec.search_config["method"]
    if method == "grid" or count or spec.count or spec.search_config.get("run_cap") or discrete_points(spec) is not None:
        return None
    return (f"{spec.source}: no count: this {method} sweep runs trials until it is stopped (Ctrl-C, or "
            "'reid-sweep stop ID' from another shell); give --count N or count: N to end it after N trials")


def _all_failed(directory: Path) -> str | None:
    """One line for a sweep of which no trial finished or stopped and at least one failed, or None."""
    from reidlib.sweep.ledger import FAILED, FINISHED, STOPPED, Ledger

    ledger = Ledger.open(directory)
    try:
        trials = ledger.trials()
    finally:
        ledger.close()
    failed = [t for t in trials if t.state == FAILED]
    if not failed or any(t.state in (FINISHED, STOPPED) for t in trials):
        return None
    first = failed[0]
    return (f"sweep {directory.name}: every trial failed ({len(failed)}); {first.name}: {first.exit_reason} "
            f"(its notebook: {first.notebook})")


def _report(sweep_dir: Path, outputs: dict[str, Path] | None = None) -> None:
    """Print a sweep's results; ``outputs``: what ``finish_sweep`` wrote, else written now (``make_report``)."""
    from reidlib.analysis import (
        SELECTED_ON_TEST,
        finalized_best,
        hyperband_savings,
        leaderboard,
        open_sweep,
        selected_on_test,
        selection_check,
    )
    from reidlib.report import as_text, metric_text
    from reidlib.workflow import make_report

    outputs = outputs if outputs is not None else make_report(sweep_dir)
    sweep = open_sweep(sweep_dir)
    name, _ = sweep.metric
    print(f"sweep {sweep.id}: {len(sweep.runs)} trials in {sweep_dir}")
    print(as_text(leaderboard(sweep), max_colwidth=40))
    best = sweep.best_run()
    if best is None:
        print("no trial finished: see the trial notebooks for their errors")
    else:
        untrained = best.summary.get(f"untrained/{name}")
        versus = f" (untrained features: {metric_text(name, untrained)})" if untrained is not None else ""
        print(f"best trial: {best.name}  {name} {metric_text(name, best.summary[name])}{versus}")
        print(f"best trial notebook: {best.notebook_path}")
        print("how the best was chosen:")
        print(as_text(selection_check(sweep), header=False))
        if selected_on_test(sweep):
            print(f"warning: {SELECTED_ON_TEST}")
        elif finalized_best(sweep, best):
            pass  # finalized: the table above has its test/*, the outputs below its model
        elif sweep.config.get("from"):
            print(f"the final model: 'reid-sweep finalize {sweep.id}' tests the trained sweep's final model (finalizing "
                  f"it first) once with {best.name}'s TEST.* keys")
        else:
            print(f"the final model: 'reid-sweep finalize {sweep.id}' trains {best.name}'s configuration on every "
                  "training identity and tests it once")
    print(hyperband_savings(sweep))
    print(f"ledger: {sweep_dir / layout.LEDGER_FILE}")
    for what, path in outputs.items():
        print(f"{what}: {path}")


def _cmd_run(args) -> int:
    from reidlib.sweep.driver import run_sweep
    from reidlib.wandb_run import wandb_destination, wandb_mode
    from reidlib.workflow import finish_sweep

    if args.sweep_id and len(args.spec) > 1:
        raise SpecError("--sweep-id", "resumes one sweep: give one SPEC")
    if not args.spec and not args.sweep_id:
        raise SpecError("run", "give a sweep YAML (e.g. sweeps/demo.yaml), or --sweep-id ID to resume a sweep")
    if not args.spec:  # resume by id: the sweep may be named by its directory
        directory = layout.existing_sweep_dir(args.sweep_id, args.runs_dir or layout.RUNS_DIR)
        args.sweep_id, args.runs_dir = directory.name, str(directory.parent)
    specs = [_load_spec(path, args) for path in args.spec or [None]]  # all checked before any runs
    # before any runs: wandb.sweep sets WANDB_PROJECT/WANDB_ENTITY, which would leak into the next spec's
    destinations = [wandb_destination(spec.search_config, args.project, args.entity) for spec in specs]
    gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else None
    failures = []
    for spec, destination in zip(specs, destinations):
        unbounded = _unbounded(spec, args.count)
        if unbounded:
            print(unbounded)
        local = _local_only(spec)
        if wandb_mode(args.wandb) == "online" and local:
            print(f"{spec.source}: {local}, which a W&B server sweep cannot run: the search runs on this machine "
                  f"and the runs are still logged online to W&B project {destination['project']}")
        if wandb_mode(args.wandb) == "online" and not local:  # the W&B server searches; this machine is its first agent
            from reidlib.sweep.evaluation_spec import resolve_evaluation
            from reidlib.sweep.holdout import resolve_holdout
            from reidlib.sweep.spec import check_against_config
            from reidlib.sweep.wandb_server import create_server_sweep, run_agent

            spec = resolve_evaluation(spec, args.runs_dir or layout.RUNS_DIR)
            check_against_config(spec)
            path = create_server_sweep(resolve_holdout(spec), destination["project"], destination["entity"])
            print(f"W&B sweep {path}: more machines can join with 'reid-sweep agent {path}'")
            if args.seed is not None or spec.seed is not None:
                print(f"W&B sweep {path}: the W&B server draws the configurations; the seed is not used")
            directory = run_agent(path, count=args.count, runs_dir=args.runs_dir, notebook=spec.notebook,
                                  time_limit=args.time_limit, gpu=gpus[0] if gpus else None).directory
        else:
            directory = run_sweep(spec, count=args.count, sweep_id=args.sweep_id, runs_dir=args.runs_dir,
                                  wandb=args.wandb, project=args.project, entity=args.entity, seed=args.seed,
                                  time_limit=args.time_limit, workers=args.workers, gpus=gpus).directory
        failed = _all_failed(directory)
        finalize = partial(_finalize, directory, args.wandb) if args.finalize and not failed else None
        outputs = finish_sweep(directory, before_report=finalize)
        if outputs is None:  # other drivers still run it: the last of them reports
            continue
        _report(directory, outputs)
        failures += [failed] if failed else []
    for failed in failures:  # as papermill, whose exit status is 1 when the notebook failed
        print(f"error: {failed}", file=sys.stderr)
    return EXIT_TRIALS_FAILED if failures else 0


def _local_only(spec) -> str | None:
    """What in a spec only the local search can do (W&B's server knows grid, random and bayes only,
    and no conditional parameters), or None."""
    from reidlib.sweep.spec import OPTUNA_METHODS

    if spec.search_config["method"] in OPTUNA_METHODS:
        return f"method {spec.search_config['method']} is Optuna's"
    if spec.conditions:
        return "its conditional parameters (parent, parent_values) are ours"
    return None


def _cmd_agent(args) -> int:
    from reidlib.sweep.wandb_server import run_agent

    session = run_agent(args.path, count=args.count, runs_dir=args.runs_dir, notebook=args.notebook,
                        time_limit=args.time_limit, gpu=args.gpu)
    _report(session.directory)
    failed = _all_failed(session.directory)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
    return EXIT_TRIALS_FAILED if failed else 0


def _cmd_report(args) -> int:
    from reidlib.analysis import open_local_sweep

    _report(open_local_sweep(args.sweep, args.runs_dir or layout.RUNS_DIR).directory)
    return 0


def _cmd_validate(args) -> int:
    from reidlib.sweep.controller import LocalController
    from reidlib.sweep.evaluation_spec import resolve_evaluation
    from reidlib.sweep.holdout import resolve_holdout
    from reidlib.sweep.spec import check_against_config, check_notebook_parameters, flatten_run_config, leaves

    spec = _load_spec(args.spec, args)
    spec = resolve_evaluation(spec, spec.runs_dir or layout.RUNS_DIR)
    check_against_config(spec)
    spec = resolve_holdout(spec)
    if not Path(spec.notebook).is_file():
        raise SpecError("notebook", f"trial notebook not found: {spec.notebook}")
    check_notebook_parameters(spec, Path.cwd())
    controller = LocalController(spec, seed=args.seed)
    first, _ = controller.next_trial([])
    params, overrides = flatten_run_config({**spec.defaults, **first})
    print(json.dumps(spec.to_dict(), indent=2, default=str))
    if spec.search_config["method"] == "grid":
        sizes = [len(p["values"]) if "values" in p else p["max"] - p["min"] + 1 if p.get("distribution") == "int_uniform" else 1
                 for _, _, p in leaves(spec.search_config["parameters"])]
        print(f"grid points: {math.prod(sizes)}")
    print(f"first trial (seed {controller.seed}): {json.dumps({**params, 'overrides': overrides}, default=str)}")
    return 0


def _cmd_status(args) -> int:
    from reidlib.analysis import SELECTED_ON_TEST, leaderboard, open_sweep, selected_on_test
    from reidlib.report import as_text, metric_text

    sweep = open_sweep(args.sweep, args.runs_dir or layout.RUNS_DIR)
    print(f"sweep {sweep.id} ({sweep.name}): {len(sweep.runs)} trials")
    print(as_text(leaderboard(sweep), max_colwidth=40))
    if selected_on_test(sweep):
        print(f"warning: {SELECTED_ON_TEST}")
    best = sweep.best_run()
    if best:
        print(f"best so far: {best.name} {sweep.metric[0]} {metric_text(sweep.metric[0], best.summary[sweep.metric[0]])}")
    return 0


def _cmd_stop(args) -> int:
    from reidlib.analysis import open_local_sweep
    from reidlib.sweep.driver import stop_sweep

    names = stop_sweep(open_local_sweep(args.sweep, args.runs_dir or layout.RUNS_DIR).directory)
    print(f"stopping: no new trials; {', '.join(names) or 'no trial'} running end after their current epoch")
    return 0


def _cmd_sync(args) -> int:
    from reidlib.analysis import open_local_sweep
    from reidlib.sweep.bridge import write_missing_runs

    directory = open_local_sweep(args.sweep, args.runs_dir or layout.RUNS_DIR).directory
    written = write_missing_runs(directory, args.project, args.entity)
    if written:
        print(f"wrote {len(written)} wandb runs from the ledger (W&B was off or failing when they ran): {', '.join(written)}")
    runs = sorted((directory / layout.WANDB_DIR).glob("offline-run-*"))
    if not runs:
        raise SpecError(args.sweep, "no offline wandb runs to sync")
    # a project or entity given moves every run of the sweep there, not only the ones written now
    moved = [arg for key in ("project", "entity") if getattr(args, key) for arg in (f"--{key}", getattr(args, key))]
    return subprocess.call([sys.executable, "-m", "wandb", "sync", *moved, *map(str, runs)])


def _finalize(sweep_dir: Path, wandb: str | None) -> None:
    from reidlib.analysis import open_local_sweep
    from reidlib.analysis.export import export_best
    from reidlib.report import metric_text
    from reidlib.sweep.finalize import finalize

    sweep = open_local_sweep(sweep_dir)
    best = sweep.best_run()
    if best is None:
        raise SweepStateError(str(sweep_dir), "no finished trial to finalize")
    final = finalize(sweep.directory, best.name, wandb=wandb)
    export_best(open_local_sweep(sweep.directory))
    name, _ = sweep.metric
    test = ", ".join(f"{k} {metric_text(k, v)}" for k, v in final["test"].items())
    print(f"final: {best.name}'s configuration (selected at {name} {metric_text(name, best.summary[name])}) trained on every "
          f"training identity: {test}")
    print(f"final: {sweep.directory / layout.FINAL_DIR} (best/ points at it)")


def _cmd_finalize(args) -> int:
    from reidlib.analysis import open_local_sweep

    _finalize(open_local_sweep(args.sweep, args.runs_dir or layout.RUNS_DIR).directory, args.wandb)
    return 0


def _cmd_reindex(args) -> int:
    from reidlib.sweep.reindex import reindex

    path = reindex(args.directory)
    print(f"rebuilt {path} from {args.directory}/trials/*.ipynb")
    return 0


def _cmd_clean_cache(args) -> int:
    from reidlib.data.image_cache import CACHE_ENV, clean, images_dir

    directory = images_dir()
    if directory is None:
        print(f"the image cache is off (${CACHE_ENV}=off): nothing to remove")
        return 0
    files, freed = clean(directory)
    print(f"removed {files} files ({freed / 2**20:.1f} MiB) from {directory}")
    return 0


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=("grid", "random", "bayes", "tpe", "gp"), help="replace the spec's method")
    parser.add_argument("--name", help="replace the spec's name")
    parser.add_argument("--metric", help="NAME[:minimize|maximize] (default val/mAP:maximize)")
    parser.add_argument("--config-file", help="the YACS file trials start from")
    parser.add_argument("--custom-params", help='JSON mapping of parameters to add or replace, e.g. \'{"margin": [0.3, 0.5]}\'')
    parser.add_argument("--values", action="append", metavar="NAME=v1,v2", help="values for a parameter (repeatable)")
    parser.add_argument("--from", dest="from_run", metavar="SWEEP[/TRIAL]",
                        help="evaluate this trained run's model (an evaluation sweep; replaces the spec's from:)")
    parser.add_argument("--seed", type=int, help="the search's seed (replaces the spec's; default: drawn and recorded)")


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, help="total number of trials (overrides the spec's count)")
    parser.add_argument("--runs-dir", help="where sweeps are written (default: runs/)")
    parser.add_argument("--workers", type=int, default=1, help="trials run in parallel (CPU threads are split)")
    parser.add_argument("--gpus", help="comma-separated GPU ids: one worker per GPU, each kernel sees only its own")
    parser.add_argument("--time-limit", type=float, help="seconds a trial may run; then it stops after its epoch")
    parser.add_argument("--finalize", action="store_true", help="then train the best configuration on every training "
                                                                "identity and test it once (reid-sweep finalize)")
    parser.add_argument("--wandb", choices=("offline", "online", "disabled"),
                        help="W&B mode (default: offline unless a key or WANDB_BASE_URL is configured)")
    parser.add_argument("--project", help="W&B project (default: a resumed sweep's; for a new one $WANDB_PROJECT, "
                                          "the spec's project, or reid-sweep)")
    parser.add_argument("--entity", help="W&B entity (default: a resumed sweep's; for a new one $WANDB_ENTITY, "
                                         "the spec's entity, or wandb's default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid-sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) sweeps from W&B-schema YAMLs, one after the other")
    run.add_argument("spec", nargs="*", help="sweep YAML, e.g. sweeps/demo.yaml (none with --sweep-id: the "
                                             "sweep's own, from its ledger)")
    run.add_argument("--sweep-id", help="resume this sweep, or join drivers already running it")
    _add_run_options(run)
    _add_spec_options(run)
    run.set_defaults(func=_cmd_run)
    resume = sub.add_parser("resume", help="resume a sweep with the spec in its ledger (= run --sweep-id ID): "
                                           "finished trials stay, interrupted ones run again")
    resume.add_argument("sweep_id", metavar="ID", help="sweep id, or runs/<id> directory")
    _add_run_options(resume)
    resume.set_defaults(func=_cmd_run, spec=[], seed=None)
    agent = sub.add_parser("agent", help="run trials of a W&B server sweep on this machine")
    agent.add_argument("path", help="ENTITY/PROJECT/SWEEP_ID")
    agent.add_argument("--count", type=int, help="trials to run here at most")
    agent.add_argument("--notebook", default="notebooks/train.ipynb", help="the trial notebook")
    agent.add_argument("--runs-dir", help="where this machine's copy of the sweep is written (default: runs/)")
    agent.add_argument("--time-limit", type=float, help="seconds a trial may run; then it stops after its epoch")
    agent.add_argument("--gpu", help="the GPU id this agent's trials see (CUDA_VISIBLE_DEVICES)")
    agent.set_defaults(func=_cmd_agent)
    validate = sub.add_parser("validate", help="check a sweep YAML; print it normalised and the first trial")
    validate.add_argument("spec")
    _add_spec_options(validate)
    validate.set_defaults(func=_cmd_validate)
    for name, func, text in (("status", _cmd_status, "a sweep's trials, states and best so far"),
                             ("stop", _cmd_stop, "no new trials; running ones end after their current epoch"),
                             ("sync", _cmd_sync, "upload a sweep's offline wandb runs (wandb sync), first writing "
                                                 "from the ledger those W&B missed"),
                             ("report", _cmd_report, "analysis notebook, best-run exports and HTML report")):
        command = sub.add_parser(name, help=text)
        command.add_argument("sweep", help="sweep id or runs/<id> directory")
        command.add_argument("--runs-dir")
        command.set_defaults(func=func)
        if name == "sync":
            command.add_argument("--project", help="upload all the sweep's runs to this W&B project (default: the sweep's)")
            command.add_argument("--entity", help="upload all the sweep's runs to this W&B entity (default: the sweep's)")
    final = sub.add_parser("finalize", help="train the best configuration again on every training identity "
                                            "(held-out ones back in) and test it once, into runs/<id>/final/")
    final.add_argument("sweep", help="sweep id or runs/<id> directory")
    final.add_argument("--runs-dir")
    final.add_argument("--wandb", choices=("offline", "online", "disabled"),
                       help="W&B mode of the final run (default: offline unless a key or WANDB_BASE_URL is configured)")
    final.set_defaults(func=_cmd_finalize)
    reindex = sub.add_parser("reindex", help="rebuild a sweep's ledger from its executed trial notebooks")
    reindex.add_argument("directory", help="runs/<sweep-id>")
    reindex.set_defaults(func=_cmd_reindex)
    clean = sub.add_parser("clean-cache", help="remove the decoded images trials share (~/.cache/reid-sweep/images, "
                                               "or under $REID_SWEEP_CACHE_DIR); the next trial decodes again")
    clean.set_defaults(func=_cmd_clean_cache)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("papermill", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("traitlets").setLevel(logging.ERROR)  # nbconvert's notes on image alt texts
    for flag in ("count", "workers", "time_limit"):
        value = getattr(args, flag, None)
        if value is not None and value <= 0:
            print(f"error: --{flag.replace('_', '-')}: expected a positive number, got {value}", file=sys.stderr)
            return EXIT_USER_ERROR
    if getattr(args, "seed", None) is not None and args.seed < 0:
        print(f"error: --seed: expected a non-negative integer, got {args.seed}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return args.func(args)
    except ReidSweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # the machine's doing (permissions, a full disk), not a bug: what to do, in one line
        print(f"error: {os_error_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: resume with --sweep-id", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

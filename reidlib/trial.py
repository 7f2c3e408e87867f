"""The trial contract: the one seam between the sweep driver and the training notebook.

Both sides import this module and nothing else of each other.

- **Parameters**: ``config_file``, ``overrides`` (dotted YACS keys -> values) and the aliases of
  ``reidlib.config.ALIASES`` (``None`` = keep the config's value).
- **Scraps** (JSON): ``config`` (the effective config) before training, one ``epoch/NNNN`` scrap per
  epoch with at least ``EPOCH_KEYS`` (and ``VAL_KEYS`` on evaluation epochs), then one ``summary``.
- **What the metrics measure**: ``val/*`` is the validation split (training identities held out by
  ``DATASETS.VAL_IDS``; query/gallery when it is 0), the only thing a search sees; ``test/*``
  (``TEST_KEYS``) is query/gallery, evaluated once at the end and found only in the ``summary``.
- **Stop**: a file named ``STOP`` in the trial's output directory; the trial checks it after each
  epoch and ends with status ``stopped_early``.
- **States**: ``TrialStatus`` is how a trial says it ended (its summary's ``status``); ``TrialState``, derived
  from it, is its state in a sweep: the ledger's, the analysis's, and each W&B run's (``state``, exit code).
- **Best**: ``ranked``/``best``/``best_row``/``best_value`` pick the best of a history or of a sweep's runs for any
  metric and goal; a summary holds the best value of each ``val/*`` metric and of the sweep's metric.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from reidlib.config import ALIASES, load_config
from reidlib.config.overrides import did_you_mean
from reidlib.errors import ConfigError

EPOCH_PREFIX = "epoch/"
SUMMARY = "summary"
CONFIG = "config"  # the trial's effective config, flattened to dotted keys, glued before training
EPOCH_KEYS = ("epoch", "train/loss", "train/acc", "train/lr", "time/epoch_s", "gpu/peak_mem_mb")
VAL_KEYS = ("val/mAP", "val/mINP", "val/rank1", "val/rank5", "val/rank10")
TEST_KEYS = tuple(key.replace("val/", "test/") for key in VAL_KEYS)
STOP_FILE = "STOP"
CHECKPOINT_FILE = "checkpoint.pth"  # in the output directory: the model, optimizer and scheduler state
EPOCH_CHECKPOINT = "checkpoint_epoch{}.pth"  # beside it, each saved epoch's (as upstream keeps resnet50_model_<N>.pth)
# A driver writes the last epoch it has decided to stop or continue in VERDICT (0 before the trial
# starts); a trial that finds the file waits for each epoch's verdict, up to VERDICT_WAIT_S.
VERDICT_FILE, VERDICT_WAIT_S = "VERDICT", 10.0
SCRAP_MIMETYPE = "application/scrapbook.scrap.json+json"
# Where a sweep's trials share what every one of them would otherwise compute again (the driver sets
# these in their kernels' environment): the untrained network's val/* (reidlib.engine.trainer), and
# SOLVER.COMPILE's inductor and Triton kernels (torch reads the last two itself).
UNTRAINED_CACHE_ENV = "REID_SWEEP_UNTRAINED_CACHE"
# Where a notebook run by papermill will be read (its HTML export), for its relative links
LINK_BASE_ENV = "REID_SWEEP_LINK_BASE"
COMPILE_CACHE_ENVS = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
MAXIMIZE = "maximize"  # a metric goal (the other is "minimize")
DEFAULT_METRIC = {"name": "val/mAP", "goal": MAXIMIZE}  # what a sweep searches on unless its spec says


# --- states -------------------------------------------------------------------------------------

class TrialStatus(StrEnum):
    """How a trial says it ended: its summary's ``status`` (``TrainResult.status``)."""

    FINISHED = "finished"
    STOPPED_EARLY = "stopped_early"  # it found the STOP file
    DIVERGED = "diverged"  # a non-finite loss
    OOM = "oom"  # out of GPU memory
    FAILED = "failed"  # any other error


class TrialState(StrEnum):
    """A trial's state in a sweep, as Optuna's ``TrialState``: the ledger stores these values, the
    analysis reads them, and each W&B run's summary ``state`` and exit code are derived from them."""

    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"  # ended early on the driver's request (hyperband, run cap, time limit, Ctrl-C)
    FAILED = "failed"  # diverged, out of memory, an error, or its notebook's report cells failed
    CRASHED = "crashed"  # its kernel or its driver died: it runs again

    @classmethod
    def of(cls, status: str | None, errored: bool = False) -> TrialState:
        """The state of an ended trial from its own account (its summary's ``status``) and whether
        a notebook cell failed."""
        if not errored and status == TrialStatus.FINISHED:
            return cls.FINISHED
        if not errored and status == TrialStatus.STOPPED_EARLY:
            return cls.STOPPED
        return cls.FAILED

    @classmethod
    def of_wandb_run(cls, wandb_state: str) -> TrialState | str:
        """A W&B run's state as ours (an unknown one as it is): 'killed' was stopped from outside (the
        server's stop, a user), 'preempted' lost its machine, which a resume runs again."""
        wandb_state = wandb_state.lower()
        return _WANDB_RUN_STATES.get(wandb_state, wandb_state)

    @property
    def completed(self) -> bool:
        """It ran as asked, to its end or to a stop: its metrics count for the search."""
        return self in (TrialState.FINISHED, TrialState.STOPPED)

    @property
    def exit_code(self) -> int:
        """Its W&B run's exit code: W&B shows 0 as 'finished', anything else as 'failed'."""
        return 0 if self.completed else 1


_WANDB_RUN_STATES = {"finished": TrialState.FINISHED, "running": TrialState.RUNNING, "pending": TrialState.RUNNING,
                     "crashed": TrialState.CRASHED, "failed": TrialState.FAILED, "killed": TrialState.STOPPED,
                     "preempting": TrialState.CRASHED, "preempted": TrialState.CRASHED}


# --- best ---------------------------------------------------------------------------------------

T = TypeVar("T")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def ranked(items: Iterable[T], value_of: Callable[[T], Any], goal: str = MAXIMIZE) -> list[T]:
    """The items best first for ``goal`` ('maximize' or 'minimize'), equals in their order; items without
    a finite number are left out. The one place "best" is decided: the best epoch of a history, the
    best run of a sweep, the runs whose checkpoints a sweep keeps."""
    scored = [item for item in items if _number(value_of(item))]
    return sorted(scored, key=value_of, reverse=goal == MAXIMIZE)  # stable either way


def best(items: Iterable[T], value_of: Callable[[T], Any], goal: str = MAXIMIZE) -> T | None:
    """The first of ``ranked``; None when no item has a value."""
    return next(iter(ranked(items, value_of, goal)), None)


def best_row(history: Iterable[Mapping[str, Any]], metric: str = DEFAULT_METRIC["name"],
             goal: str = MAXIMIZE) -> Mapping[str, Any] | None:
    """The epoch of ``history`` with the best value of ``metric``."""
    return best(history, lambda row: row.get(metric), goal)


def best_value(history: Iterable[Mapping[str, Any]], metric: str, goal: str = MAXIMIZE) -> float | None:
    row = best_row(history, metric, goal)
    return None if row is None else row[metric]


def best_metrics(history: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each ``val/*`` metric's best (maximum) value over the epochs."""
    history = list(history)
    values = {key: best_value(history, key) for key in VAL_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def with_metric_best(summary: Mapping[str, Any] | None, history: Iterable[Mapping[str, Any]],
                     metric: Mapping[str, str] = DEFAULT_METRIC) -> dict | None:
    """``summary`` with ``best[<metric>]`` the best value of the sweep's ``metric`` (name and goal) over
    ``history``, so every reader finds it at its name (``train/loss`` minimized included: the trial itself
    only knows its ``val/*``); None stays None."""
    if summary is None:
        return None
    value = best_value(history, metric["name"], metric.get("goal", MAXIMIZE))
    if value is None:
        return dict(summary)
    return {**summary, "best": {**(summary.get("best") or {}), metric["name"]: value}}


# --- parameters ---------------------------------------------------------------------------------

_kernel_start_dir: Path | None = None


def use_project_root() -> Path:
    """Work from the project root, as the sweep driver and the papermill CLI do, also when Jupyter
    started the kernel in ``notebooks/`` (relative paths in configs and specs mean the same then)."""
    global _kernel_start_dir
    root = Path(__file__).resolve().parents[1]
    _kernel_start_dir = _kernel_start_dir or Path.cwd().resolve()
    if Path.cwd().resolve() == root / "notebooks":
        os.chdir(root)
    return Path.cwd()


def notebook_dir() -> Path:
    """Where relative links in this notebook's outputs resolve: the directory its kernel started in
    (JupyterLab starts a notebook's kernel in the notebook's directory), before ``use_project_root``;
    a papermill run started elsewhere is told through ``REID_SWEEP_LINK_BASE``."""
    if os.environ.get(LINK_BASE_ENV):
        return Path(os.environ[LINK_BASE_ENV]).resolve()
    return _kernel_start_dir or Path.cwd().resolve()


def aliases_from(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The alias parameters found in ``namespace`` (a notebook's ``globals()``)."""
    return {name: namespace[name] for name in ALIASES if name in namespace}


def build_config(config_file: str | None, overrides: Mapping[str, Any] | None = None,
                 wandb_project: str | None = None, **aliases: Any):
    """The trial's frozen config: the file, then ``overrides``, then the aliases that are not None.

    ``wandb_project`` turns on W&B logging from inside the notebook (standalone runs only: under the
    driver, which owns the run, it is never given). An alias and its dotted key given together is an
    error (which one would win is a guess). Without ``output_dir`` (nor ``OUTPUT_DIR`` in ``overrides``),
    the config's ``OUTPUT_DIR`` is where the run's own fresh directory is made (``fresh_output_dir``), so
    two standalone runs of one config never overwrite each other's checkpoint.
    """
    merged = dict(overrides or {})
    if aliases.get("output_dir") is None and not {"OUTPUT_DIR", "output_dir"} & set(merged):
        base = load_config(config_file, merged).OUTPUT_DIR  # checks the file and keys as the final load does
        if base:
            merged["OUTPUT_DIR"] = fresh_output_dir(base)
    if wandb_project:
        merged.update({"WANDB.ENABLE": True, "WANDB.PROJECT": wandb_project})
    for name, value in aliases.items():
        if name not in ALIASES:
            raise ConfigError(name, f"not a config key or alias{did_you_mean(name, ALIASES)}")
        if value is None:
            continue
        if ALIASES[name] in merged:
            raise ConfigError(name, f"given both as alias and as overrides[{ALIASES[name]!r}]; keep one")
        merged[name] = value
    return load_config(config_file, merged)


def fresh_output_dir(base: str | Path) -> str:
    """A new directory's name under ``base`` for one standalone run, named as W&B names its run
    directories: ``run-<date>_<time>-<random>`` (sorted by start; the random part tells apart runs
    started in the same second). Made when the run first writes there."""
    import secrets

    return str(Path(base) / f"run-{time.strftime('%Y%m%d_%H%M%S')}-{secrets.token_hex(3)}")


def sweep_cache_environment(sweep_dir: str | Path) -> dict[str, str]:
    """The environment a sweep's trial kernels share caches through: ``<sweep_dir>/cache/<what>``
    (a compile cache the user has pointed elsewhere stays where it is)."""
    cache = Path(sweep_dir).resolve() / "cache"
    env = {UNTRAINED_CACHE_ENV: str(cache / "untrained")}
    env.update({name: str(cache / sub) for name, sub in COMPILE_CACHE_ENVS.items() if name not in os.environ})
    return env


# --- scraps -------------------------------------------------------------------------------------

def epoch_scrap_name(epoch: int) -> str:
    return f"{EPOCH_PREFIX}{epoch:04d}"


def _jsonable(value: Any) -> Any:
    """Non-finite floats become None: scraps are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def glue(name: str, data: Any) -> None:
    """Record a scrap in the running notebook (JSON encoder only: see the design notes)."""
    import scrapbook as sb

    data = _jsonable(data)
    # scrapbook's JSON encoder parses str data as JSON text; a plain string must arrive as one.
    sb.glue(name, json.dumps(data) if isinstance(data, str) else data, encoder="json")


def scrap_from_output(output: Mapping[str, Any]) -> tuple[str, Any] | None:
    """``(name, data)`` if a notebook output is a JSON scrap, else None."""
    payload = (output.get("data") or {}).get(SCRAP_MIMETYPE)
    if not payload:
        return None
    if isinstance(payload, str):
        payload = json.loads(payload)
    return payload["name"], payload["data"]


def scraps_in(notebook: Mapping[str, Any]) -> dict[str, Any]:
    """Every scrap of an (executed, possibly partial) notebook, in order of appearance."""
    found = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            scrap = scrap_from_output(output)
            if scrap:
                found[scrap[0]] = scrap[1]
    return found


def epochs_and_summary(scraps: Mapping[str, Any]) -> tuple[list[dict], dict | None]:
    epochs = [v for k, v in sorted(scraps.items()) if k.startswith(EPOCH_PREFIX)]
    return epochs, scraps.get(SUMMARY)


def read_trial_notebook(path: str | Path) -> tuple[dict, list[dict], dict | None]:
    """``(papermill parameters, epoch scraps, summary)`` of an executed trial notebook."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    params = nb.metadata.get("papermill", {}).get("parameters", {})
    return dict(params), *epochs_and_summary(scraps_in(nb))


# --- stop ---------------------------------------------------------------------------------------

def request_stop(output_dir: str | Path, reason: str = "requested") -> None:
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / STOP_FILE).write_text(reason)


def kept_epochs(checkpoint: str | Path) -> list[int]:
    """The epochs whose checkpoints are kept beside ``checkpoint`` (``EPOCH_CHECKPOINT``), in order."""
    prefix, suffix = EPOCH_CHECKPOINT.split("{}")
    names = (p.name[len(prefix):-len(suffix)] for p in Path(checkpoint).parent.glob(EPOCH_CHECKPOINT.format("*")))
    return sorted(int(n) for n in names if n.isdigit())


def stop_requested(output_dir: str | Path) -> bool:
    return bool(output_dir) and (Path(output_dir) / STOP_FILE).exists()


def record_verdict(output_dir: str | Path, epoch: int) -> None:
    """The driver's: it has decided whether ``epoch`` is the trial's last (a stop is written first)."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f"{VERDICT_FILE}.tmp"
    tmp.write_text(str(epoch))
    tmp.replace(path / VERDICT_FILE)


def await_verdict(output_dir: str | Path, epoch: int, timeout: float = VERDICT_WAIT_S) -> None:
    """Under a driver (a VERDICT file exists), wait until it has decided on ``epoch``, so a stop it
    decides on this epoch's metrics ends the trial now instead of after one more epoch."""
    path = Path(output_dir) / VERDICT_FILE if output_dir else None
    if path is None or not path.is_file():
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if int(path.read_text()) >= epoch:
                return
        except (OSError, ValueError):  # being replaced right now
            pass
        time.sleep(0.005)


# --- the notebook side --------------------------------------------------------------------------

class ScrapRecorder:
    """The training loop's callback inside a trial: glues each epoch and the summary, and stops
    the loop when the driver asks."""

    def __init__(self, cfg, max_epochs: int | None = None):
        from reidlib.config import flat_keys

        self.output_dir = cfg.OUTPUT_DIR
        self.max_epochs = max_epochs or cfg.SOLVER.MAX_EPOCHS
        glue(CONFIG, dict(flat_keys(cfg)))

    def on_epoch_end(self, metrics: dict) -> bool:
        glue(epoch_scrap_name(metrics["epoch"]), metrics)
        await_verdict(self.output_dir, metrics["epoch"])
        return stop_requested(self.output_dir)

    def on_train_end(self, result) -> None:
        glue(SUMMARY, make_summary(result, self.max_epochs))


class WandbRecorder:
    """A standalone trial's own W&B run (``WANDB.ENABLE``), written as the sweep driver writes its
    trials' runs (``reidlib.wandb_run``): one run in the kernel, one ``log`` per epoch, the summary at
    the end. The sweep driver forces ``WANDB.ENABLE`` off: there it owns the run."""

    def __init__(self, cfg, max_epochs: int | None = None):
        from reidlib.config import flat_keys
        from reidlib.wandb_run import (
            RunWriter,
            start_run,
            wandb_destination,
            wandb_mode,
        )

        w = cfg.WANDB
        destination = wandb_destination({}, w.PROJECT or None, w.ENTITY or None)
        run = start_run(wandb_mode(), destination["project"], destination["entity"], name=w.NAME or None,
                        tags=list(w.TAGS), config=dict(flat_keys(cfg)), quiet=False)
        self.writer = RunWriter(run, "this trial")
        self.max_epochs = max_epochs or cfg.SOLVER.MAX_EPOCHS

    @property
    def run(self):
        return self.writer.run

    def on_epoch_end(self, metrics: dict) -> bool:
        self.writer.log_epoch(metrics)
        return False

    def on_train_end(self, result) -> None:
        self.writer.finish(TrialState.of(result.status), make_summary(result, self.max_epochs))


def callbacks(cfg, max_epochs: int | None = None) -> list:
    """The training loop's callbacks inside a trial: scraps always, W&B when the config asks.
    ``max_epochs``: the trial's epoch budget when it is not ``SOLVER.MAX_EPOCHS`` (an evaluation trial's is 1)."""
    return [ScrapRecorder(cfg, max_epochs)] + ([WandbRecorder(cfg, max_epochs)] if cfg.WANDB.ENABLE else [])


def make_summary(result, max_epochs: int) -> dict:
    evaluated = [row for row in result.history if "val/mAP" in row]
    best_epoch = best_row(evaluated)
    return {
        "status": result.status,
        "epochs_run": result.epochs_run,
        "max_epochs": max_epochs,
        "wall_time_s": result.wall_time_s,
        "peak_mem_mb": result.peak_mem_mb,
        "checkpoint": result.checkpoint,
        "error": result.error,
        "best_epoch": best_epoch["epoch"] if best_epoch else None,
        "best": best_metrics(result.history),
        "untrained": result.untrained,
        "test": result.test,
        "val_ids": result.val_ids,
        "cmc": result.cmc[:20],
        "last": {k: evaluated[-1][k] for k in VAL_KEYS if k in evaluated[-1]} if evaluated else {},
    }

"""Evaluation sweeps: a spec with ``from:`` searches the test-time options of a model already trained.

``from: <sweep>[/<trial>]`` names a trained run: a sweep id (under the runs directory) or ``runs/<id>``
directory, then one of its finished trials; without a trial, the sweep's selected configuration (its
best finished run, as ``reid-sweep report`` says); ``<sweep>/final`` is its finalized model. Each trial
runs ``notebooks/evaluate.ipynb`` on that run's checkpoint (``TEST.WEIGHT``) and effective config, so
``val/*`` is measured on the same held-out identities (its ``DATASETS.VAL_IDS``/``VAL_SEED``). The trials
evaluate no ``test/*`` (``TEST.EVAL_TEST_SET`` 'no', unless the spec's defaults say 'yes'): the setting
is selected on ``val/*``, and ``reid-sweep finalize`` tests the chosen one once. A ``final`` model trained
on every identity: its ``val/*`` is query/gallery, and the analysis says the sweep was selected on the test set.

Only ``EVALUATION_KEYS`` may be searched (and ``RUNTIME_KEYS`` set in ``defaults``): a training key is
refused naming it, before anything is written.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from reidlib import trial as contract
from reidlib.config import get_defaults, resolve_key
from reidlib.errors import ConfigError, SpecError
from reidlib.sweep import layout
from reidlib.sweep.ledger import FINISHED, Ledger
from reidlib.sweep.selection import selected_trial
from reidlib.sweep.spec import DEFAULT_NOTEBOOK, DRIVER_KEYS, EVALUATION_NOTEBOOK, Spec, flatten_parameters, leaves
from reidlib.trial import kept_epochs

EVALUATION_KEYS = ("TEST.RE_RANKING", "TEST.RERANK_K1", "TEST.RERANK_K2", "TEST.RERANK_LAMBDA", "TEST.NECK_FEAT",
                   "TEST.FEAT_NORM", "TEST.CHECKPOINT_EPOCH")
EPOCH = "TEST.CHECKPOINT_EPOCH"
# where, in what chunks and whether each trial also measures test/*: not what is selected
RUNTIME_KEYS = ("MODEL.DEVICE", "TEST.IMS_PER_BATCH", "TEST.RERANK_MEMORY_MB", "TEST.EVAL_TEST_SET")
WEIGHT = "TEST.WEIGHT"


@dataclass
class TrainedRun:
    """A trained run an evaluation sweep evaluates: its executed notebook's config and summary."""

    sweep_dir: Path
    trial: str  # a trial's name, or 'final'
    notebook: Path
    config: dict  # its effective config, dotted keys
    summary: dict

    @property
    def ref(self) -> str:
        return f"{self.sweep_dir}/{self.trial}"

    @property
    def checkpoint(self) -> Path | None:
        path = self.summary.get("checkpoint")
        return Path(path) if path else None


def _sweep_dir(ref: str, runs_dir: Path) -> Path | None:
    found = layout.find_sweep_dir(ref, runs_dir)
    return found.resolve() if found else None


def find_trained_run(ref, runs_dir: str | Path = layout.RUNS_DIR) -> TrainedRun:
    """The trained run ``from: ref`` names (see the module's docstring); ``SpecError`` on 'from' if none."""
    if not isinstance(ref, str) or not ref.strip("/ "):
        raise SpecError("from", f"expected '<sweep-id>[/<trial>]' or '<sweep-id>/final', got {ref!r}")
    from reidlib.sweep.finalize import read_final  # finalize imports the sweep session, which imports this

    ref, runs_dir = ref.rstrip("/"), Path(runs_dir)
    sweep_dir, trial = _sweep_dir(ref, runs_dir), None
    if sweep_dir is None:
        head, _, trial = ref.rpartition("/")
        sweep_dir = _sweep_dir(head, runs_dir) if head else None
        if sweep_dir is None:
            raise SpecError("from", f"no sweep {ref!r} (looked for {layout.LEDGER_FILE} in {ref} and {runs_dir / ref})")
    if trial == layout.FINAL_DIR:
        final = read_final(sweep_dir)
        if final is None:
            raise SpecError("from", f"{ref}: sweep {sweep_dir.name} is not finalized (reid-sweep finalize {sweep_dir.name})")
        notebook = final["notebook"]
    else:
        ledger = Ledger.open(sweep_dir)
        try:
            trials = ledger.trials(with_history=True)
            metric = ledger.sweep()["spec"].get("metric") or contract.DEFAULT_METRIC
        finally:
            ledger.close()
        if not trial:
            selected = selected_trial(trials, metric)
            if selected is None:
                raise SpecError("from", f"sweep {sweep_dir.name} has no finished trial to evaluate")
            trial = selected.name
        found = next((t for t in trials if t.name == trial), None)
        if found is None or found.state != FINISHED or not found.notebook:
            raise SpecError("from", f"expected a finished trial of sweep {sweep_dir.name}, got {trial!r}")
        notebook = found.notebook
    import nbformat

    scraps = contract.scraps_in(nbformat.read(notebook, as_version=4))
    run = TrainedRun(sweep_dir, trial, Path(notebook), scraps.get(contract.CONFIG) or {}, scraps.get(contract.SUMMARY) or {})
    if run.checkpoint is None or not run.checkpoint.is_file():
        raise SpecError("from", f"{ref}: its checkpoint {run.checkpoint} is missing; an evaluation sweep needs it "
                                "(a sweep keeps the checkpoints of its best keep_checkpoints trials only)")
    return run


def _given_keys(spec: Spec):
    """``(field, name, values, searched)`` for every key the spec sets: its searched parameters (values None
    for a range), each key of each ``overrides`` choice, and its constant ``defaults``."""
    for path, name, value in leaves(spec.search_config["parameters"]):
        choices = value.get("values", [value["value"]] if "value" in value else None)
        if name != "overrides":
            yield path, name, choices, True
            continue
        for i, choice in enumerate(choices or ()):
            for key, setting in (choice.items() if isinstance(choice, dict) else ()):
                yield f"{path}.values[{i}].{key}", key, [setting], True
    for name, setting in flatten_parameters(spec.defaults).items():
        yield f"defaults.{name}", name, [setting], False


def check_evaluation_keys(spec: Spec) -> None:
    """Only test-time keys: searched ones among ``EVALUATION_KEYS``, constant ones also ``RUNTIME_KEYS``."""
    if spec.config_file:
        raise SpecError("config_file", "an evaluation sweep evaluates with the trained run's config (from:): remove it")
    if spec.search_config.get("early_terminate"):
        raise SpecError("early_terminate", "an evaluation trial has one epoch: there is nothing to stop early")
    defaults = get_defaults()
    for field, name, _, searched in _given_keys(spec):
        allowed = EVALUATION_KEYS if searched else EVALUATION_KEYS + RUNTIME_KEYS
        try:
            key = resolve_key(defaults, name)
        except ConfigError as err:
            raise SpecError(field, err.message) from None
        if key not in allowed:
            raise SpecError(field, f"{key} is not a test-time key: an evaluation sweep (from:) evaluates a trained model "
                                   f"without retraining, over {', '.join(allowed)}")


def check_epochs(spec: Spec, trained: TrainedRun) -> None:
    """Every ``TEST.CHECKPOINT_EPOCH`` the spec can hand out is 0 (the trained run's checkpoint) or an epoch
    whose checkpoint the trained run kept: ``SpecError`` naming the field otherwise. Keys already checked."""
    defaults = get_defaults()
    kept = kept_epochs(trained.checkpoint)
    for field, name, epochs, _ in _given_keys(spec):
        if resolve_key(defaults, name) != EPOCH:
            continue
        if epochs is None or any(epoch != 0 and epoch not in kept for epoch in epochs):
            raise SpecError(field, f"expected values among 0 (the trained run's checkpoint) and the epochs kept beside "
                                   f"{trained.checkpoint} ({kept or 'none'}), got {epochs if epochs is not None else 'a range'}")


def evaluating(spec: Spec, ref: str) -> Spec:
    """``spec`` evaluating ``ref`` (``--from``), in place of its ``from:``."""
    return replace(spec, evaluates=ref, notebook=EVALUATION_NOTEBOOK if spec.notebook == DEFAULT_NOTEBOOK else spec.notebook)


def resolve_evaluation(spec: Spec, runs_dir: str | Path = layout.RUNS_DIR) -> Spec:
    """An evaluation spec made runnable: the trained run's effective config and checkpoint (``TEST.WEIGHT``)
    in its defaults with ``TEST.EVAL_TEST_SET`` 'no', under the spec's own, and ``from`` resolved to that run (``<sweep dir>/<trial>``, what
    the ledger keeps and the analysis compares with). A training spec is returned as it is."""
    if spec.evaluates is None:
        return spec
    check_evaluation_keys(spec)
    trained = find_trained_run(spec.evaluates, runs_dir)
    check_epochs(spec, trained)
    given = {resolve_key(get_defaults(), name) for name in flatten_parameters(spec.defaults)}
    config = {k: v for k, v in trained.config.items() if k not in DRIVER_KEYS and k not in given}
    defaults = {**config, WEIGHT: str(trained.checkpoint), "TEST.EVAL_TEST_SET": "no", **spec.defaults}
    return replace(spec, defaults=defaults, evaluates=trained.ref)

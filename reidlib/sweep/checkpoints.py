"""Which trials of a sweep keep their checkpoint (``keep_checkpoints`` in the spec, default 3).

Every trial writes a checkpoint into its output directory (~130 MB for ResNet-18 with Adam's state), so a
sweep of a few dozen trials fills gigabytes with models nobody will load. Each time a trial ends, the
driver deletes the checkpoints of the sweep's ended trials except those of the best ``keep_checkpoints``
finished ones (``selection.ranked_trials``, as the analysis's best run: so the best run, which
``best/model.pth``, ``from:`` evaluation sweeps and the report use, always keeps its own). Running trials
are never touched, nor a crashed trial that has not run again yet (its notebook may still be recorded
finished on resume). ``keep_checkpoints: all`` keeps every checkpoint. Only files under the trial's own
directory (``runs/<id>/trials/<trial>/``) are deleted: ``checkpoint.pth``, the epochs' kept beside it
(``checkpoint_epoch<N>.pth``) and their feature caches (``<checkpoint>.features/``); a model an
evaluation sweep reads from another sweep is never its to delete. ``finalize`` retrains from the configuration and needs no trial's checkpoint.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

from reidlib.sweep import layout
from reidlib.sweep.ledger import CRASHED, FAILED, FINISHED, STOPPED, Trial
from reidlib.sweep.selection import ranked_trials
from reidlib.sweep.spec import Spec
from reidlib.trial import CHECKPOINT_FILE, EPOCH_CHECKPOINT, kept_epochs

log = logging.getLogger(__name__)


def kept(trials: list[Trial], spec: Spec) -> set[str] | None:
    """The names of the trials whose checkpoints stay, or None when all stay."""
    if spec.keep_checkpoints == "all":
        return None
    return {t.name for t in ranked_trials(trials, spec.metric)[:spec.keep_checkpoints]}


def prune_checkpoints(sweep_dir: Path, trials: list[Trial], spec: Spec) -> list[str]:
    """Delete the checkpoints that the spec's policy does not keep; returns the trials they were of."""
    keep = kept(trials, spec)
    if keep is None:
        return []
    superseded = {t.retry_of for t in trials if t.retry_of}
    pruned = []
    for trial in trials:
        ended = trial.state in (FINISHED, STOPPED, FAILED) or (trial.state == CRASHED and trial.name in superseded)
        if ended and trial.name not in keep and _remove(layout.trial_dir(Path(sweep_dir), trial.name)):
            pruned.append(trial.name)
    if pruned:
        log.info("checkpoints deleted: %s (keep_checkpoints: the best %s by %s)", ", ".join(pruned),
                 spec.keep_checkpoints, spec.metric["name"])
    return pruned


def _remove(trial_dir: Path) -> bool:
    """Remove a trial's checkpoints (the last and each kept epoch's) and their feature caches (a link is
    removed, never followed)."""
    last = trial_dir / CHECKPOINT_FILE
    checkpoints = [last, *(last.with_name(EPOCH_CHECKPOINT.format(epoch)) for epoch in kept_epochs(last))]
    found = False
    for checkpoint in checkpoints:
        features = checkpoint.with_name(f"{checkpoint.name}.features")
        found = found or checkpoint.is_symlink() or checkpoint.exists()
        try:
            checkpoint.unlink(missing_ok=True)
            if features.is_symlink():
                features.unlink()
            elif features.is_dir():
                shutil.rmtree(features)
        except OSError as err:  # disk hygiene never costs a sweep
            log.warning("could not delete %s (%s)", checkpoint, err)
            return False
    return found

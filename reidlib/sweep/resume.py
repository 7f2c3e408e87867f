"""Resuming a sweep by its id: the ledger holds the spec it was started with.

``reid-sweep resume ID`` (or ``reid-sweep run --sweep-id ID`` without a spec) runs the ledger's spec
again. A spec given with an existing id must be that spec: one that differs (a parameter's values, the
method, the metric, a default, ...) is one line naming the first field that differs, before anything is
written, since resuming with it would mix two searches in one ledger. The seed has its own check
(``session.sweep_seed``); ``count`` and ``keep_checkpoints`` may differ: a resume runs to the count,
and keeps the checkpoints, it is given.
"""
from __future__ import annotations

from pathlib import Path

from reidlib.errors import SweepStateError
from reidlib.sweep import layout
from reidlib.sweep.ledger import Ledger
from reidlib.sweep.spec import Spec, amend, normalise

MAY_DIFFER = ("seed", "count", "keep_checkpoints")  # the seed is checked by itself; the others are not the search


def recorded_spec(sweep_dir: Path, **amendments) -> Spec:
    """The spec a sweep was started with, from its ledger (with the command line's amendments, which the
    resume then refuses as a difference)."""
    ledger = Ledger.open(sweep_dir)
    try:
        recorded = ledger.sweep()["spec"]
    finally:
        ledger.close()
    raw = amend(recorded, **amendments) if amendments else recorded
    return normalise(raw, source=str(sweep_dir / layout.LEDGER_FILE))


def differences(given, recorded, path: str = "") -> list[tuple[str, object, object]]:
    """``(field path, given, recorded)`` wherever two spec mappings differ, mapping by mapping."""
    if isinstance(given, dict) and isinstance(recorded, dict):
        found = []
        for key in list(given) + [k for k in recorded if k not in given]:
            found += differences(given.get(key), recorded.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if given == recorded else [(path, given, recorded)]


def check_same_spec(spec: Spec, recorded: dict, sweep_id: str) -> None:
    """Refuse to resume sweep ``sweep_id`` (whose ledger holds ``recorded``) with a different ``spec``."""
    given = {k: v for k, v in spec.to_dict().items() if k not in MAY_DIFFER}
    kept = {k: v for k, v in normalise(recorded, source=spec.source).to_dict().items() if k not in MAY_DIFFER}
    found = differences(given, kept)
    if found:
        field, here, there = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise SweepStateError(spec.source, f"differs from sweep {sweep_id}'s spec at {field}: {here!r} here, {there!r} "
                                           f"in its ledger{more}; resume it without a spec ('reid-sweep resume "
                                           f"{sweep_id}'), or start a new sweep")

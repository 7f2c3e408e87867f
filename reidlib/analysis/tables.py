"""The tables a notebook shows of a sweep (``show(table)``), and the one-paragraph overview."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from reidlib import trial as contract
from reidlib.analysis.readers import LocalSweep, SweepReader, untrained_value
from reidlib.rates import percent
from reidlib.sweep.finalize import finalize, read_final
from reidlib.sweep.ledger import FINISHED, RUNNING, STOPPED
from reidlib.sweep.selection import selected_trial
from reidlib.sweep.spec import leaves

TEST_METRIC = "test/mAP"
SELECTED_ON_TEST = ("selected on the test set: no training identities were held out (DATASETS.VAL_IDS 0), so val/* "
                    "is query/gallery and the best run's numbers overstate what it does on unseen people")


def leaderboard(sweep: SweepReader) -> pd.DataFrame:
    """One row per trial: state, parameters, best metrics, epochs run, wall time; best first,
    failures last with their reason."""
    name, goal = sweep.metric
    rows = []
    for run in sweep.runs:
        s = run.summary
        rows.append({"trial": run.name, "state": run.state, **run.config,
                     name: s.get(name), "val/rank1": s.get("val/rank1"), TEST_METRIC: s.get(TEST_METRIC),
                     "epochs": s.get("epochs_run"),
                     "wall_s": round(s["wall_time_s"], 1) if "wall_time_s" in s else None,
                     "reason": run.exit_reason or ""})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["_ok"] = frame["state"] == FINISHED
    frame = frame.sort_values(["_ok", name], ascending=[False, goal == "minimize"], na_position="last")
    return frame.drop(columns="_ok").set_index("trial")


def numeric_parameters(sweep: SweepReader) -> list[str]:
    """The searched parameters whose values are numbers (what scatter plots and importances use)."""
    searched = [name for _, name, p in leaves(sweep.config.get("parameters", {})) if "value" not in p]
    return [name for name in searched
            if any(isinstance(r.config.get(name), (int, float)) and not isinstance(r.config.get(name), bool)
                   for r in sweep.runs)]


def scored_runs(sweep: SweepReader) -> pd.DataFrame:
    """Finished and stopped runs with the metric: one row each, parameters flattened."""
    name, _ = sweep.metric
    rows = [{**r.config, name: r.summary.get(name), "trial": r.name} for r in sweep.runs
            if r.state in (FINISHED, STOPPED) and isinstance(r.summary.get(name), (int, float))]
    return pd.DataFrame(rows)


def varied_parameters(sweep: SweepReader, scored: pd.DataFrame) -> list[str]:
    """The numeric parameters that took at least two values among the ``scored`` runs: a constant
    one explains nothing (no correlation, no importance, a scatter in one column)."""
    return [p for p in numeric_parameters(sweep) if p in scored and scored[p].nunique() > 1]


def parameter_importance(sweep: SweepReader) -> pd.DataFrame | str:
    """As W&B's parameter-importance panel: each numeric parameter's correlation with the metric,
    and its random-forest importance (fitted on the parameters, predicting the metric). Parameters
    that did not vary are left out; a correlation with a metric that did not vary is n/a."""
    name, _ = sweep.metric
    frame = scored_runs(sweep)
    params = varied_parameters(sweep, frame)
    if len(frame) < 3 or not params:
        return (f"needs at least 3 scored trials and a numeric parameter that varied (have {len(frame)} trials, "
                f"{params or 'none'})")
    from sklearn.ensemble import RandomForestRegressor

    x, y = frame[params].astype(float), frame[name].astype(float)
    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(x, y)
    # Pearson's r divides by both spreads: a metric all trials tied on has none (numpy warns, the answer is n/a)
    correlation = [x[p].corr(y) if y.nunique() > 1 else float("nan") for p in params]
    return pd.DataFrame({"correlation": correlation, "importance": forest.feature_importances_},
                        index=pd.Index(params, name="parameter")).round(3).sort_values("importance", ascending=False)


def cost_table(sweep: SweepReader) -> pd.DataFrame:
    """Per trial: device, its peak memory (GPU; none on a CPU), device seconds, epochs run of the
    budget, time to its best epoch."""
    name, goal = sweep.metric
    rows = []
    for run in sweep.runs:
        s, hist = run.summary, run.history()
        seconds = s.get("wall_time_s")
        to_best = None
        best_epoch = contract.best_row(hist.to_dict("records"), name, goal)
        if best_epoch is not None:
            to_best = float(hist.loc[hist["epoch"] <= best_epoch["epoch"], "time/epoch_s"].sum())
        rows.append({"trial": run.name, "state": run.state, "device": "GPU" if s.get("peak_mem_mb") else "CPU",
                     "peak_mem_mb": s.get("peak_mem_mb") or None,  # a CPU has no peak (older trials wrote 0.0)
                     "device_s": round(seconds, 1) if seconds else None, "epochs_run": s.get("epochs_run"),
                     "epochs_budget": s.get("max_epochs"), "s_to_best": round(to_best, 1) if to_best else None})
    return pd.DataFrame(rows).set_index("trial") if rows else pd.DataFrame()


def hyperband_savings(sweep: SweepReader) -> str:
    runs = [r.summary for r in sweep.runs if r.summary.get("max_epochs")]
    run, budget = sum(s.get("epochs_run", 0) for s in runs), sum(s["max_epochs"] for s in runs)
    if not budget:
        return "no trial has reported its epochs yet"
    return f"{run} epochs trained of a full budget of {budget} ({100 * (1 - run / budget):.0f}% saved by early stopping)"


def best_config_diff(sweep: SweepReader) -> pd.DataFrame | str:
    """The best run's effective config against the sweep's base config file: what the search changed."""
    from reidlib.config import flat_keys, load_config

    best = sweep.best_run()
    if best is None or not best.effective_config:
        return "no finished trial yet"
    base = dict(flat_keys(load_config(sweep.config.get("config_file"))))
    changed = {k: (base.get(k), v) for k, v in best.effective_config.items()
               if k not in ("OUTPUT_DIR", "WANDB.ENABLE") and _normal(base.get(k)) != _normal(v)}
    return pd.DataFrame([(k, repr(a), repr(b)) for k, (a, b) in sorted(changed.items())],
                        columns=["key", "base", "best"]).set_index("key")


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def selected_on_test(sweep: SweepReader) -> bool:
    """Whether the sweep's ``val/*`` was query/gallery: its trials held out no identities."""
    held_out = [r.summary["val_ids"] for r in sweep.runs if r.summary.get("val_ids") is not None]
    return bool(held_out) and not any(held_out)


def finalized_best(sweep: SweepReader, best) -> dict | None:
    """The sweep's final run (``final/summary.json``) when it retrained ``best``, the selected run; else None
    (not finalized, finalized from another trial, or a W&B sweep: finalize runs where the sweep lives)."""
    final = read_final(sweep.directory) if isinstance(sweep, LocalSweep) else None
    return final if final and best is not None and final.get("trial") == best.name else None


def selection_check(sweep: SweepReader) -> pd.DataFrame | str:
    """Can the validation split be trusted: the selected run's ``val/*`` and ``test/mAP`` (and the
    finalized model's), Kendall's tau between ``val`` and ``test`` over finished runs, and which run a
    search on the test set would have picked."""
    name, _ = sweep.metric
    best = sweep.best_run()
    if best is None:
        return "no finished trial yet"
    scored = pd.DataFrame([{"trial": r.name, "val": r.summary.get(name), "test": r.summary.get(TEST_METRIC)}
                           for r in sweep.runs if r.state == FINISHED]).dropna()
    rows = {"selection": "test set (DATASETS.VAL_IDS 0)" if selected_on_test(sweep)
            else f"{best.summary.get('val_ids', '?')} held-out training identities",
            f"selected run (best {name})": best.name, name: best.summary.get(name),
            f"its {TEST_METRIC}": best.summary.get(TEST_METRIC)}
    final = finalized_best(sweep, best)
    if final:
        rows[f"finalized model's {TEST_METRIC}"] = final["test"].get(TEST_METRIC)  # retrained on every identity
    if len(scored) >= 3:
        tau = scored["val"].astype(float).corr(scored["test"].astype(float), method="kendall")
        rows[f"Kendall's tau, {name} vs {TEST_METRIC} ({len(scored)} finished runs)"] = round(float(tau), 3)
    pick = selected_trial(sweep.runs, {"name": TEST_METRIC, "goal": contract.MAXIMIZE},
                          lambda run: run.summary.get(TEST_METRIC))
    if pick is not None:
        rows["chosen on the test set instead"] = f"{pick.name} ({TEST_METRIC} {percent(pick.summary[TEST_METRIC])})"
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def final_run(sweep: SweepReader, train: bool = False) -> pd.DataFrame | str:
    """The sweep's final model (``reid-sweep finalize``): the best run's configuration retrained on
    every training identity and tested once. ``train`` runs the finalize when there is none yet."""
    if not isinstance(sweep, LocalSweep):
        return "finalize runs on the machine that holds the sweep: reid-sweep finalize <sweep id>"
    best = sweep.best_run()
    final = read_final(sweep.directory)
    if best is not None and train and (final is None or final.get("trial") != best.name):
        final = finalize(sweep.directory, best.name)
    if final is None:
        return (f"not finalized yet: 'reid-sweep finalize {sweep.id}' (or finalize = True above) trains the best "
                "configuration again on every training identity and tests it once")
    rows = {"trained from": final["trial"], **final["test"], "epochs": final.get("epochs_run"),
            "notebook": Path(final["notebook"]), "checkpoint": Path(final["checkpoint"]) if final.get("checkpoint") else None}
    stale = best is not None and final["trial"] != best.name
    if stale:
        rows["note"] = f"the best run is now {best.name}: finalize again"
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def overview(sweep: SweepReader) -> str:
    """One paragraph: trials by state, the best run, and what to look at when nothing finished."""
    from collections import Counter

    name, goal = sweep.metric
    states = Counter(r.state for r in sweep.runs)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no trials yet"
    text = f"sweep {sweep.id} ({sweep.name}): {len(sweep.runs)} trials ({counts}); metric {name} ({goal})"
    if selected_on_test(sweep):
        text += f"\n{SELECTED_ON_TEST}"
    best = sweep.best_run()
    if best is not None:
        test = best.summary.get(TEST_METRIC)
        return f"{text}\nbest run: {best.name}, {name} {percent(best.summary[name])}" + \
            (f" ({TEST_METRIC} {percent(test)})" if test is not None else "")
    if states.get(RUNNING):
        return f"{text}\nno trial has finished yet: the sweep is still running"
    reasons = Counter(r.exit_reason or r.state for r in sweep.runs)
    listed = "; ".join(f"{n}x {reason}" for reason, n in reasons.most_common(3))
    return f"{text}\nno trial finished: {listed}" if sweep.runs else text


def best_run_table(sweep: SweepReader) -> pd.DataFrame | str:
    """The best run's parameters, metrics, and where its notebook and checkpoint are."""
    best = sweep.best_run()
    if best is None:
        return "no finished trial yet"
    keys = ("val/mAP", "val/rank1", "val/rank5", "val/mINP", "last/val/mAP", "untrained/val/mAP", "val_ids",
            TEST_METRIC, "test/rank1", "epochs_run", "wall_time_s")
    metrics = {k: untrained_value(best, "val/mAP") if k == "untrained/val/mAP" else best.summary.get(k) for k in keys}
    rows = {**{f"param {k}": v for k, v in best.config.items()}, **metrics,
            "notebook": best.notebook_path, "checkpoint": best.checkpoint}
    return pd.DataFrame({"value": pd.Series(rows, dtype=object)})


def evaluation_gain(sweep: SweepReader) -> pd.DataFrame | str:
    """An evaluation sweep (``from:``) against the trained run it evaluates, same weights in each row (unless
    the selected options name an earlier epoch's checkpoint, ``TEST.CHECKPOINT_EPOCH``): the test-time options the trained run used and those selected (the best run's); ``val/*`` of the trained
    run's checkpoint under each (its last evaluation, the best run's); ``test/*`` under each, from the
    trials when they measured it (``TEST.EVAL_TEST_SET``), else from the two finalized models (the
    trained sweep's final model under its own options, and under the selected ones); and the gain."""
    from reidlib.errors import SpecError
    from reidlib.sweep.evaluation_spec import EVALUATION_KEYS, find_trained_run

    source = sweep.config.get("from")
    if not source:
        return "a training sweep: an evaluation sweep (from: <sweep-id>) tunes re-ranking and test features on its model"
    best = sweep.best_run()
    if best is None:
        return "no finished trial yet"
    try:
        trained = find_trained_run(source)
    except SpecError as err:
        return f"the trained run is gone: {err}"
    rows = [(key, trained.config.get(key), best.effective_config.get(key), None) for key in EVALUATION_KEYS]

    def compare(label: str, was, now) -> None:
        rows.append((label, was, now, now - was if isinstance(was, float) and isinstance(now, float) else None))

    for metric in ("val/mAP", "val/rank1"):
        compare(metric, (trained.summary.get("last") or {}).get(metric, trained.summary.get(metric)),
                best.summary.get(f"last/{metric}", best.summary.get(metric)))
    chosen_final = read_final(sweep.directory) if isinstance(sweep, LocalSweep) else None
    trained_final = read_final(trained.sweep_dir)
    if best.summary.get(TEST_METRIC) is not None:  # the trials measured test/* on the trained run's checkpoint
        for metric in (TEST_METRIC, "test/rank1"):
            compare(metric, (trained.summary.get("test") or {}).get(metric), best.summary.get(metric))
    elif chosen_final and chosen_final.get("trial") == best.name and trained_final:
        for metric in (TEST_METRIC, "test/rank1"):
            compare(f"{metric} (final models)", trained_final["test"].get(metric), chosen_final["test"].get(metric))
    else:
        rows.append(("test/*", None, f"not measured per trial: reid-sweep finalize {sweep.id} tests the selected "
                     "options once, on the trained sweep's final model", None))
    return pd.DataFrame(rows, columns=["", f"trained run ({trained.trial})", f"selected ({best.name})", "gain"]).set_index("")

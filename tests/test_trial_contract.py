"""The trial contract's scraps read back as they were written (milliseconds: a notebook made by hand
with the outputs scrapbook's JSON encoder writes, no kernel)."""
from __future__ import annotations

import nbformat

from reidlib import trial


def _scrap_output(name: str, data) -> dict:
    return nbformat.v4.new_output("display_data", data={trial.SCRAP_MIMETYPE: {
        "name": name, "data": data, "encoder": "json", "version": 1}},
        metadata={"scrapbook": {"name": name, "data": True, "display": False}})


def test_a_long_trials_epochs_read_back_in_epoch_order(tmp_path):
    """Scrap names sort as their epochs do (1, 2, ..., 10, 11, not 1, 10, 11, 2), so a notebook's
    epochs read back in order whatever their number."""
    epochs = range(1, 1001)
    assert sorted(map(trial.epoch_scrap_name, epochs)) == list(map(trial.epoch_scrap_name, epochs))
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"parameters": {"base_lr": 0.1}}
    cell = nbformat.v4.new_code_cell("training")
    cell.outputs = [_scrap_output(trial.CONFIG, {"SOLVER.MAX_EPOCHS": 12})]
    cell.outputs += [_scrap_output(trial.epoch_scrap_name(e), {"epoch": e, "val/mAP": e / 100}) for e in range(1, 13)]
    cell.outputs.append(_scrap_output(trial.SUMMARY, {"status": "finished", "epochs_run": 12}))
    nb.cells = [cell]
    path = tmp_path / "trial-001.ipynb"
    nbformat.write(nb, path)
    params, history, summary = trial.read_trial_notebook(path)
    assert params == {"base_lr": 0.1} and summary == {"status": "finished", "epochs_run": 12}
    assert [row["epoch"] for row in history] == list(range(1, 13))

"""The leaderboard as a notebook widget: an HTML table linking each trial's notebook, redrawn live."""
from __future__ import annotations

from pathlib import Path

from reidlib.analysis.readers import SweepReader, open_sweep
from reidlib.analysis.tables import SELECTED_ON_TEST, leaderboard, selected_on_test


class LiveLeaderboard:
    """The leaderboard with each trial's report link (``trial_links``), redrawn in place in a notebook:
    pass ``update`` as ``run_sweep(on_update=...)``. It appears at the first update, under the
    sweep's progress bars."""

    def __init__(self, link_base: str | Path | None = None):
        self.link_base = link_base
        self._handle = None

    def update(self, sweep_dir: Path) -> None:
        from IPython.display import display

        table = trial_links(open_sweep(sweep_dir), self.link_base)
        if self._handle is None:
            self._handle = display(table, display_id=True)
        else:
            self._handle.update(table)


def trial_links(sweep: SweepReader, link_base: str | Path | None = None):
    """The leaderboard as an HTML table (``table.reid-leaderboard``), best first: each trial with
    its state, parameters and metrics (mAP and rank-k in %), its name linking to its executed notebook
    (``a.reid-report``), relative to ``link_base`` (``reidlib.report.relative_href``: JupyterLab resolves a
    relative link in an output against the notebook's directory and opens the file)."""
    import html

    from IPython.display import HTML

    from reidlib.report import cell_html, relative_href

    board = leaderboard(sweep)
    best = sweep.best_run()
    runs = {r.name: r for r in sweep.runs}
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["trial", *board.columns])
    rows = []
    for trial_name, row in board.iterrows():
        path = runs[trial_name].notebook_path
        label = html.escape(trial_name) + (" (best)" if best and trial_name == best.name else "")
        link = f'<a class="reid-report" href="{html.escape(relative_href(path, link_base))}">{label}</a>' \
            if path else label
        cells = "".join(f"<td>{cell_html(key, value)}</td>" for key, value in row.items())
        rows.append(f'<tr class="reid-trial reid-{html.escape(row["state"])}"><td>{link}</td>{cells}</tr>')
    warning = f"<p><strong>{html.escape(SELECTED_ON_TEST)}</strong></p>" if selected_on_test(sweep) else ""
    empty = "" if rows else "<p>no trial yet</p>"
    return HTML(f'{warning}<table class="reid-leaderboard"><tr>{head}</tr>{"".join(rows)}</table>{empty}')

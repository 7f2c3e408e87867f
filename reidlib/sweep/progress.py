"""What a running sweep shows: a bar over trials and an epoch bar per worker (``SweepProgress``)."""
from __future__ import annotations

import queue
import time
from typing import Any

from tqdm.auto import tqdm

from reidlib import trial as contract
from reidlib.rates import is_rate, percent

BAR_METRICS = ("train/loss",)  # shown after the sweep's metric and val/rank1 on a trial's epoch bar
TICK_S = 0.2  # how often the calling thread draws what the workers posted
CLOCK_S = 1.0  # how often the bars are redrawn with nothing new: their clocks run during a trial
LOG_CLOCK_S = 60.0  # the same into a file or pipe (nohup, make demo > log): a line a minute, not megabytes


def max_epochs(params: dict) -> int | None:
    value = params.get("max_epochs") or params.get("overrides", {}).get("SOLVER.MAX_EPOCHS")
    return int(value) if isinstance(value, (int, float)) else None


class SweepProgress:
    """What a running sweep shows (tqdm.auto: widgets in Jupyter, text bars in a terminal): a bar over
    trials and, under it, one epoch bar per worker for the trial it runs, with that trial's latest
    metrics as postfix. Workers post what happens (``started``, ``scrap``, ``ended``); the thread that
    called ``run_sweep`` draws it (``tick``): a notebook's outputs belong to the cell's thread, and the
    bars' clocks keep running between epochs."""

    def __init__(self, sweep_id: str, total: int | None, initial: int, workers: int, metric: str, enabled: bool):
        self.trials = tqdm(total=total, initial=initial, desc=f"sweep {sweep_id}", unit="trial", disable=not enabled)
        self.epochs = [tqdm(total=None, desc="waiting for a trial", unit="epoch", disable=not enabled, leave=False)
                       for _ in range(workers)]
        self.shown = (metric, *(k for k in ("val/rank1", *BAR_METRICS) if k != metric))
        self._posted: queue.SimpleQueue = queue.SimpleQueue()
        self._latest: list[dict] = [{} for _ in range(workers)]
        self._drawn = 0.0
        shown_live = hasattr(self.trials, "container") or getattr(getattr(self.trials, "fp", None), "isatty", bool)()
        self.clock_s = CLOCK_S if shown_live else LOG_CLOCK_S  # a notebook widget or a terminal: live clocks

    def started(self, slot: int, name: str, max_epochs: int | None) -> None:
        self._posted.put(("started", slot, name, max_epochs))

    def scrap(self, slot: int, name: str, data: Any) -> None:
        if name.startswith(contract.EPOCH_PREFIX) or name == contract.CONFIG:
            self._posted.put(("scrap", slot, name, data))

    def ended(self, slot: int, name: str, state: str, counted: bool) -> None:
        self._posted.put(("ended", slot, name, state, counted))

    def tick(self) -> bool:
        """Draw what the workers posted (and redraw every bar every ``clock_s``); whether a trial
        recorded an epoch or ended since the last tick."""
        recorded = False
        while True:
            try:
                event = self._posted.get_nowait()
            except queue.Empty:
                break
            recorded |= self._draw(*event)
        if recorded or time.monotonic() - self._drawn >= self.clock_s:
            for bar in (self.trials, *self.epochs):
                bar.refresh()
            self._drawn = time.monotonic()
        return recorded

    def _draw(self, kind: str, slot: int, name: str, *rest) -> bool:
        bar = self.epochs[slot]
        if kind == "started":
            self._latest[slot] = {}
            bar.reset(total=rest[0])
            bar.set_description_str(name, refresh=False)
            bar.set_postfix_str("starting", refresh=False)
            return False
        if kind == "ended":
            state, counted = rest
            self.trials.set_postfix_str(f"{name} {state}", refresh=False)
            self.trials.update(1 if counted else 0)
            bar.set_description_str("waiting for a trial", refresh=False)
            return True
        data = rest[0]
        if name == contract.CONFIG:  # a trial notebook's effective config knows its epochs
            if isinstance(data.get("SOLVER.MAX_EPOCHS"), int) and bar.total is None:
                bar.reset(total=data["SOLVER.MAX_EPOCHS"])
            return False
        self._latest[slot].update(data)
        bar.update(max(0, int(data.get("epoch", bar.n + 1)) - bar.n))
        latest = self._latest[slot]
        bar.set_postfix_str(", ".join(f"{k} {percent(latest[k]) if is_rate(k) else f'{latest[k]:.4g}'}"
                                      for k in self.shown if isinstance(latest.get(k), (int, float))), refresh=False)
        return True

    def close(self, outcome: str, style: str) -> None:
        """End the bars: the trials bar says ``outcome`` ('done', 'interrupted', ...) in ``style``
        ('success', 'warning', 'danger'); the epoch bars go."""
        for bar in self.epochs:
            _end_bar(bar, None)
        self.trials.set_postfix_str(outcome, refresh=False)
        _end_bar(self.trials, style)


def _end_bar(bar, style: str | None) -> None:
    """Close a bar; in Jupyter, in ``style`` or hidden (None). tqdm.notebook paints a bar short of its
    total red on close, which is for errors: a sweep stopped on purpose or by its target is not one."""
    bar.close()
    widgets = getattr(bar, "container", None)  # tqdm.notebook's
    if widgets is not None:
        widgets.children[1].bar_style = style or ""
        if style is None:
            widgets.layout.visibility = "hidden"

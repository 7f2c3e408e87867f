"""The run ``wandb.init`` returns, as far as reid-sweep uses it (wandb patched at its edge: no server here)."""
from __future__ import annotations


class SdkConfig(dict):
    def update(self, other, allow_val_change=False):
        super().update(other)


class SdkRun:
    """Keeps what is logged (``logged``), the summary and the exit code, for the test to read back."""

    def __init__(self, config: dict, directory, run_id: str = "run0"):
        self.id, self.config, self.dir = run_id, SdkConfig(config), directory
        self.summary, self.logged, self.exit_code = {}, [], None

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, row):
        self.logged.append(row)

    def finish(self, exit_code=0):
        self.exit_code = exit_code

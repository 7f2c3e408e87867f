"""Errors a user can cause. Each carries the field (a dotted key, a file, a spec path) it is about,
so the CLI can print one line and exit 2 and the notebook shows one readable line."""


class ReidSweepError(Exception):
    """Base of every user-facing error: ``str(err)`` is ``"<field>: <what was expected>"``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: a notebook's error cell is one readable line.
        return [f"{type(self).__name__}: {self}"]


class ConfigError(ReidSweepError):
    """A config file, key or value is wrong."""


class DatasetError(ReidSweepError):
    """A dataset directory or file is missing or unreadable."""


class SpecError(ReidSweepError):
    """A sweep spec is wrong."""


class SweepStateError(ReidSweepError):
    """A sweep cannot be found or resumed as asked."""


def read_yaml(path, error: type[ReidSweepError], what: str):
    """A YAML file's content, or ``error`` naming the file: missing, or not YAML (with its line)."""
    from pathlib import Path

    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(str(path), f"{what} not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise error(str(path), f"not valid YAML{where} ({getattr(err, 'problem', None) or err})") from None

"""How a metric's value reads: a ranking metric (mAP, mINP, rank-k) is stored as a fraction and read in %.

Below every layer that shows metrics: the sweep's progress bars, the notebooks' tables (``reidlib.report``)
and the analysis all format them alike.
"""
from __future__ import annotations

import math
import re

# A ranking metric's name, alone or at the end of a label ("val/mAP", "its test/rank1", "mINP").
RATE = re.compile(r"(?:^|[ /])(?:mAP|mINP|rank\d+)$")
NOT_AVAILABLE = "n/a"


def is_rate(label) -> bool:
    """Whether a row or column label names a ranking metric (a fraction, read in %)."""
    return isinstance(label, str) and bool(RATE.search(label))


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value) -> str:
    """A fraction as a researcher reads mAP: ``0.6123`` -> ``"61.2%"``."""
    return NOT_AVAILABLE if missing(value) else f"{100 * value:.1f}%"

"""AIHub KAIST person re-identification (AI-Hub, Korea): ``aihub_kaist/`` holds one folder per split
(DATASETS.TRAIN_FOLDER, QUERY_FOLDER, GALLERY_FOLDER; users pick one of ``bounding_box_train_1/2/3``)
with names ``{pid}_c{camera}s{seq}_{frame}.jpg`` and two-digit cameras (``0001_c12s1_000123.jpg``).
pid 0 is a real person here, not a distractor; either way it is kept. Read like Market-1501."""
from __future__ import annotations

import re

from reidlib.data.datasets.market1501 import Market1501


class AIHubKAIST(Market1501):
    dataset_dir = "aihub_kaist"
    # The whole name must match, so a file of another format (one-digit camera, extra fields) is an
    # error naming it rather than a silently wrong camera id.
    name_pattern = re.compile(r"(?P<pid>-1|\d+)_c(?P<camera>\d{2})s\d+_\d+\.jpg")
    name_format = "{pid}_c{camera, 2 digits}s{seq}_{frame}.jpg, e.g. 0001_c12s1_000123.jpg"

"""DukeMTMC-reID (Ristani et al., ECCVW 2016; Zheng et al., ICCV 2017), laid out as
reid-strong-baseline expects: ``dukemtmc-reid/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}``
with names ``{pid}_c{camera}_f{frame}.jpg``, cameras 1..8. Read like Market-1501."""
from __future__ import annotations

import re

from reidlib.data.datasets.market1501 import Market1501


class DukeMTMCreID(Market1501):
    dataset_dir = "dukemtmc-reid/DukeMTMC-reID"
    name_pattern = re.compile(r"(?P<pid>\d+)_c(?P<camera>[1-8])_f\d+\.jpg")
    name_format = "{pid}_c{camera 1-8}_f{frame}.jpg, e.g. 0001_c2_f0046182.jpg"

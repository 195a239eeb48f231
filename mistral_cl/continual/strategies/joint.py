"""`joint`: every task's training data at once, the upper bound of a continual learner.

One round trains on the union of all tasks' training sets (for as many epochs as a sequential round),
so its score matrix has one row: the scores after training on everything. ACC is the mean of that row;
BWT, FWT and forgetting are undefined (NaN), as nothing is learned in sequence. An ingested task adds a
round that trains on all tasks known by then, continuing from the current model. Every mode makes
sense.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from mistral_cl.continual.strategies.base import Strategy


@dataclasses.dataclass(frozen=True)
class Joint(Strategy):
    """One round per arrival of data, each on every task known by then."""

    name: ClassVar[str] = "joint"
    stores_data: ClassVar[bool] = True

    def rounds(self, arrivals: Sequence[int]) -> list[list[int]]:
        return [list(range(known)) for known in arrivals]

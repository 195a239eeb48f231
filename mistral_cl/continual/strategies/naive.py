"""`naive`: sequential fine-tuning, the lower bound.

Each task trains the model the previous task left, with nothing to protect earlier tasks: it forgets
as much as the tasks conflict. Makes sense in every mode (head, lora, full).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from mistral_cl.continual.strategies.base import Strategy


@dataclasses.dataclass(frozen=True)
class Naive(Strategy):
    """Train task after task on the plain regression loss."""

    name: ClassVar[str] = "naive"

"""The defaults of each command, declared once: `mistral-cl` builds its options from them and the
benchmarks start from them, so the two cannot drift apart.

A recipe is a set of typed settings (`TrainConfig`, `HeadConfig`, `LoRAConfig`, `ContinualConfig`)
plus the adaptation mode and the split; anything a recipe leaves unset takes the config's own default.
Each command starts from the recipe of its name; `mistral-cl continual --recipe NAME` starts from
another recipe with continual settings (`seed`). The figures behind each choice are in
benchmarks/README.md.
"""

from __future__ import annotations

import dataclasses

from mistral_cl.head import HeadConfig
from mistral_cl.lora import LoRAConfig
from mistral_cl.predictor import Mode
from mistral_cl.runs import ContinualConfig
from mistral_cl.train import TrainConfig

DEFAULT_MODEL = "tiny"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The settings a command starts from."""

    mode: Mode
    train: TrainConfig
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    lora: LoRAConfig = dataclasses.field(default_factory=LoRAConfig)
    continual: ContinualConfig | None = None
    test_fraction: float = 0.3
    split: str = "random"  # `RunConfig.split`


RECIPES: dict[str, Recipe] = {
    # The accuracy benchmark's recipe (benchmarks/accuracy.py): without pretrained weights the MHAR
    # head alone learns on the frozen backbone's cached features, long enough for its score to level
    # off, at a peak rate that a shorter schedule could not take.
    "train": Recipe(mode="head", train=TrainConfig(epochs=80, batch_size=16, learning_rate=1.5e-3)),
    # The continual demo: head mode, ten epochs per task, and a peak rate low enough that one task's
    # round does not erase the earlier ones before replay can hold them. The head encodes each
    # molecule on its own and sums their codes (`context="molecule"`): a batch then encodes its few
    # dozen distinct molecules once instead of every reaction's text, about ten times cheaper a
    # step. Over three seeds `replay` ended at a per-task RMSE of 12.09 +- 0.46 with it, against
    # 11.81 +- 0.64 with the head that pools molecules of the whole reaction's states: within the
    # spread of seeds, for a tenth of the time (benchmarks/README.md).
    "continual": Recipe(mode="head", train=TrainConfig(epochs=10, batch_size=16, learning_rate=1e-3),
                        head=HeadConfig(pool="molecules", context="molecule"), continual=ContinualConfig(),
                        split="task"),
}
# The seed repository's protocol where it applies to this model, on the continual demo's model, head,
# epochs, batch and peak rate: Adafactor at a constant learning rate, one optimizer state carried
# through all rounds, equal current and remembered batches (`memory_batch=0`: the batch size), every
# past reaction remembered, and one 70/30 split of all reactions, then grouped by task.
RECIPES["seed"] = dataclasses.replace(
    RECIPES["continual"],
    train=dataclasses.replace(RECIPES["continual"].train, optimizer="adafactor", schedule="constant"),
    continual=ContinualConfig(strategies=("naive", "replay:memory_batch=0"), memory="all",
                              carry_optimizer=True),
    split="global",
)


def auto_feature_layer(mode: Mode, pretrained: bool) -> int | None:
    """The backbone states the head reads when the user leaves it to the recipe (None: the output).

    A randomly initialised backbone whose blocks do not train is noise that blurs which molecules a
    reaction holds, so the head reads its token embeddings (layer 0); with pretrained weights, or
    blocks that train (`lora`, `full`), it reads the output.
    """
    return 0 if mode == "head" and not pretrained else None

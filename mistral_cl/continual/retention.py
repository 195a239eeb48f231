"""Knowledge retention: how much of its language model a backbone keeps while it learns yields.

A run that fine-tunes pretrained weights (`lora` or `full`) measures, after every round, the mean
next-token loss (nats per predicted token) of its backbone on texts the pretrained model never trained
on, through the pretrained output layer: the held-out texts `mistral-cl pretrain` writes beside its
model (`heldout.txt`), or a file of SMILES (`continual.retention`). A tied output layer (the shipped
`chem-small`) is the backbone's own token embeddings, so full fine-tuning moves it too; an untied one
(Mistral-7B's `lm_head.weight`) stays as loaded. Where the model's softmax was trained over a
restricted vocabulary (`vocab_ids.json`), the loss is taken over that vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from jax.sharding import Mesh

import sharding
from mistral_cl.errors import InputError
from mistral_cl.layers import Linear
from mistral_cl.predictor import YieldModel

if TYPE_CHECKING:
    from mistral_cl.pretrain import EncodedTexts
    from mistral_cl.runs import RunConfig

MAX_TEXTS = 1000


@dataclasses.dataclass(frozen=True, eq=False)
class Retention:
    """Texts to score, the output layer (None: tied to the embeddings) and the restricted vocabulary."""

    texts: EncodedTexts
    output: Linear | None
    vocab_ids: np.ndarray | None
    source: str

    def loss(self, model: YieldModel, mesh: Mesh | None = None, batch_size: int = 64) -> float:
        """The language-model loss of `model`'s backbone on the texts (nats per predicted token)."""
        from mistral_cl.pretrain import CausalLM, heldout_loss

        output = self.output
        if output is not None and mesh is not None:
            output = sharding.replicate(output, mesh)
        return heldout_loss(CausalLM(model.backbone, output), self.texts, self.vocab_ids,
                            batch_size=batch_size, mesh=mesh)


def retention_for(config: RunConfig) -> Retention | None:
    """The retention measurement of a continual run (`continual.retention`: auto, none or a file), or
    None: `auto` measures when the run fine-tunes (`lora`/`full`) weights written by `mistral-cl
    pretrain` (they carry held-out texts and their output layer)."""
    from mistral_cl.convert import is_converted
    from mistral_cl.data.corpus import seeded_sample
    from mistral_cl.pretrain import encode_texts, read_lm_extras
    from mistral_cl.runs import tokenizer_for
    from mistral_cl.weights import output_layer, read_output_layer

    choice = config.continual.retention if config.continual else "none"
    if choice == "none":
        return None
    usable = config.adaptation.mode in ("lora", "full") and config.weights is not None
    if choice != "auto" and not usable:
        raise InputError("retention measures a pretrained backbone while it is fine-tuned",
                         hint="give `weights` and `adaptation.mode` lora or full, or set "
                              "`continual.retention=none`")
    if not usable or is_converted(config.weights):
        return None
    vocab_ids, texts = read_lm_extras(config.weights)
    source = f"{config.weights}/heldout.txt"
    if choice != "auto":
        from mistral_cl.data.corpus import read_source

        texts, source = read_source(choice).texts, choice
    if not texts:
        return None
    texts = seeded_sample(texts, MAX_TEXTS)
    weight = read_output_layer(config.weights)  # only the output layer: the backbone is the run's own
    encoded, _ = encode_texts(texts, tokenizer_for(config), config.model.max_seq_len)
    return Retention(encoded, None if weight is None else output_layer(weight), vocab_ids, source)

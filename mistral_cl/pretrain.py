"""Causal-language-model pretraining of the backbone on SMILES corpora, and its Hugging Face output.

`mistral-cl pretrain` trains a `CausalLM` (the Mistral backbone plus an output layer) to predict the
next token of molecules and reaction SMILES: from scratch for any `ModelConfig`, or continued from
loaded weights (domain-adaptive pretraining of Mistral-7B) in `full` or `lora` mode. It runs through
the project's one loop (`train.train_epochs`), on one device or on a mesh, like every other command.

- **Stream.** Training runs in segments of `eval_every` steps. Segment `e` draws its texts from every
  corpus source by share, each source walking through its own seeded permutation, so the texts of a
  segment depend only on the seed and `e`: a run resumed after segment `e` sees what an uninterrupted
  one would. Within a segment, texts are sorted by length and cut into full batches, whose widths are
  multiples of 32 tokens (few compiled shapes, little padding), served in a shuffled order.
- **Texts** are `BOS SMILES EOS`, one per row, never packed: the model sees every molecule from
  position 0, as the yield head later sees every reaction.
- **Held-out loss.** `heldout` texts of each source never enter training; after every segment the
  mean loss per predicted token (nats) on them is recorded per source, with tokens/s.
- **Output layer.** A model trained from scratch ties it to the token embeddings (Hugging Face's
  `tie_word_embeddings`) and, by default, restricts its softmax to the token ids that occur in the
  corpus (`restrict_vocab`): rows of the 32000-token vocabulary the corpus never uses cost no compute
  and stay as initialised. A loaded model keeps its own `lm_head.weight` / `output.weight` and
  vocabulary.
- **Result.** `OUT/model/` holds `config.json` and `model.safetensors` in Hugging Face's layout (LoRA
  adapters merged in), which every command loads with `--weights`; `OUT/pretrain.json` holds the
  settings, the corpus, the loss curve and the timings; `OUT/checkpoints/` the state to resume from.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Float, Int, PRNGKeyArray
from tqdm.auto import tqdm

import sharding
from mistral_cl import checkpoint
from mistral_cl.config import ModelConfig
from mistral_cl.data.batching import Batch, padded_rows
from mistral_cl.data.corpus import (
    CorpusSource,
    read_corpus,
    read_source,
    seeded_sample,
    shares,
    suzuki_overlap,
)
from mistral_cl.errors import InputError, warn
from mistral_cl.layers import Linear
from mistral_cl.lora import LoRAConfig, add_lora, lora_filter, merge_lora
from mistral_cl.model import Mistral, Remat
from mistral_cl.predictor import cast_floating, is_parameter
from mistral_cl.tokenizer import Tokenizer
from mistral_cl.train import TrainConfig, init_opt_state, make_optimizer, make_train_step, train_epochs

WIDTH_MULTIPLE = 32
CHECKPOINTS = "checkpoints"
RESULTS = "pretrain.json"
MODEL_DIR = "model"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Settings of one pretraining run (see the module docstring).

    `steps` is rounded up to whole segments of `eval_every` steps. `restrict_vocab=None` restricts
    the output layer to the corpus's token ids when training from scratch, and not otherwise.
    `monitor` names texts whose loss is recorded after every segment but never trained on (sources
    as in the corpus, or `suzuki`: 1000 reactions of the evaluation set, to see how pretraining moves
    the model's reading of it); with a restricted vocabulary, only tokens inside it count.
    """

    corpus: tuple[str, ...] = ("moses", "buchwald@0.1")
    mode: Literal["full", "lora"] = "full"
    steps: int = 2000
    eval_every: int = 250
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.02
    clip_norm: float | None = 1.0
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    max_len: int = 256
    heldout: int = 1000
    restrict_vocab: bool | None = None
    monitor: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "eval_every", "batch_size", "max_len"):
            if getattr(self, name) <= 0:
                raise InputError(f"`{name}` must be positive, got {getattr(self, name)}")
        if self.heldout < 0:
            raise InputError(f"`heldout` must be 0 or more, got {self.heldout}")
        if self.mode not in ("full", "lora"):
            raise InputError(f"pretraining mode {self.mode!r} trains nothing of the backbone",
                             hint="choose `mode` full or lora")

    @property
    def segments(self) -> int:
        return -(-self.steps // self.eval_every)

    def train_config(self) -> TrainConfig:
        """The optimisation settings in the form the shared optimizer and step take."""
        return TrainConfig(epochs=self.segments, batch_size=self.batch_size, learning_rate=self.learning_rate,
                           weight_decay=self.weight_decay, warmup_fraction=self.warmup_fraction,
                           clip_norm=self.clip_norm, compute_dtype=self.compute_dtype, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PretrainConfig:
        return cls(**{**raw, "corpus": tuple(raw["corpus"]), "monitor": tuple(raw.get("monitor", ()))})


# ------------------------------------------------------------------------------------- the model
class CausalLM(eqx.Module):
    """The backbone and an output layer over the vocabulary (`output=None`: tied to the embeddings)."""

    backbone: Mistral
    output: Linear | None

    def output_weight(self) -> Float[Array, "vocab dim"]:
        return (self.backbone.tok_embeddings if self.output is None else self.output).weight

    def logits(
        self,
        tokens: Int[Array, "batch seq"],
        mask: Array,
        vocab_ids: Int[Array, " v"] | None = None,
    ) -> Float[Array, "batch seq v"]:
        """Next-token logits at every position, over `vocab_ids` only when given (else all)."""
        hidden = self.backbone(tokens, mask)
        weight = self.output_weight()
        if vocab_ids is not None:
            weight = jnp.take(weight, vocab_ids, axis=0)
        batch, seq, dim = hidden.shape
        return (hidden.reshape(-1, dim) @ weight.astype(hidden.dtype).T).reshape(batch, seq, -1)


def new_causal_lm(config: ModelConfig, *, key: PRNGKeyArray, remat: Remat = "none") -> CausalLM:
    """A randomly initialised model whose output layer is tied to its token embeddings."""
    return CausalLM(Mistral(config, key=key, remat=remat), None)


def vocab_index(vocab_ids: np.ndarray | None, vocab_size: int) -> np.ndarray | None:
    """token id -> its column among the logits (-1: outside a restricted vocabulary)."""
    if vocab_ids is None:
        return None
    index = np.full(vocab_size, -1, np.int32)
    index[vocab_ids] = np.arange(len(vocab_ids), dtype=np.int32)
    return index


def token_nll(model: CausalLM, batch: Batch, vocab_ids: Array | None, index: Array | None
              ) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """(sum of next-token negative log-likelihoods, number of predicted tokens) over a batch's real rows.

    Position t predicts token t+1 where both are real tokens; a target outside a restricted vocabulary
    is not counted (the corpus's own texts have none)."""
    tokens, mask = batch.tokens, batch.mask.astype(bool)
    logits = model.logits(tokens, mask, vocab_ids).astype(jnp.float32)[:, :-1]
    targets = tokens[:, 1:]
    if index is not None:
        targets = jnp.take(index, targets)
    valid = mask[:, 1:] & mask[:, :-1] & (targets >= 0) & (batch.weight[:, None] > 0)
    targets = jnp.maximum(targets, 0)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(jnp.where(valid, nll, 0.0)), jnp.sum(valid).astype(jnp.float32)


def lm_objective(vocab_ids: np.ndarray | None, vocab_size: int):
    """The step's objective: mean next-token loss per predicted token (nats)."""
    ids = None if vocab_ids is None else jnp.asarray(vocab_ids)
    index = vocab_index(vocab_ids, vocab_size)
    index = None if index is None else jnp.asarray(index)

    def objective(model, batches, key, extra):
        total, count = token_nll(model, batches[0], ids, index)
        loss = total / jnp.maximum(count, 1.0)
        return loss, {"loss": loss}

    return objective


@eqx.filter_jit
def _nll_sums(model: CausalLM, batch: Batch, vocab_ids, index):
    return token_nll(model, batch, vocab_ids, index)


def heldout_loss(model: CausalLM, texts: EncodedTexts, vocab_ids: np.ndarray | None, *,
                 batch_size: int, mesh: Mesh | None = None) -> float:
    """Mean next-token loss (nats per predicted token) of `model` on `texts`."""
    ids = None if vocab_ids is None else jnp.asarray(vocab_ids)
    index = vocab_index(vocab_ids, model.backbone.config.vocab_size)
    index = None if index is None else jnp.asarray(index)
    total = count = 0.0
    for batch in texts.batches(batch_size):
        s, n = sharding.to_host(_nll_sums(model, sharding.feed(batch, mesh), ids, index))
        total, count = total + float(s), count + float(n)
    return total / max(count, 1.0)


# ------------------------------------------------------------------------------------------ texts
@dataclasses.dataclass(frozen=True, eq=False)
class EncodedTexts:
    """`BOS text EOS` token ids, right-padded: tokens int32 [N, L], lengths int32 [N]."""

    tokens: np.ndarray
    lengths: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self, batch_size: int, *, order: np.ndarray | None = None) -> list[Batch]:
        """Full batches of texts sorted by length (the last one filled up with weight-0 copies), each
        padded to a multiple of `WIDTH_MULTIPLE` tokens; served in `order` (default: by length)."""
        by_length = np.argsort(self.lengths, kind="stable")
        out = []
        for start in range(0, len(by_length), batch_size):
            members = by_length[start:start + batch_size]
            width = -(-int(self.lengths[members].max()) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
            rows, tokens, mask, weight = padded_rows(self.tokens, self.lengths, self.pad_id, members,
                                                     batch_size, width)
            zeros = np.zeros(batch_size, np.float32)
            out.append(Batch(tokens, mask, zeros, weight, zeros.astype(np.int32), rows.astype(np.int32)))
        return out if order is None else [out[i] for i in order]


def encode_texts(texts: Sequence[str], tokenizer: Tokenizer, max_len: int) -> tuple[EncodedTexts, int]:
    """`BOS text EOS` for every text, cut to `max_len` tokens; also how many texts were cut."""
    ids = tokenizer.encode_all(texts, bos=True, eos=True)
    lengths = np.array([min(len(s), max_len) for s in ids], np.int32)
    width = int(lengths.max()) if len(ids) else 1
    tokens = np.full((len(ids), width), tokenizer.pad_id, np.int32)
    for row, seq in enumerate(ids):
        tokens[row, :lengths[row]] = seq[:lengths[row]]
    cut = sum(len(s) > max_len for s in ids)
    return EncodedTexts(tokens, lengths, tokenizer.pad_id), cut


def corpus_vocab(sources: Sequence[CorpusSource], tokenizer: Tokenizer) -> np.ndarray:
    """Every token id the corpus's `BOS text EOS` sequences use, sorted."""
    used = {tokenizer.bos_id, tokenizer.eos_id}
    for source in sources:
        for seq in tokenizer.encode_all(source.texts, bos=False):
            used.update(seq)
    return np.array(sorted(used), np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class Stream:
    """Which texts of each source are held out and which train, and in what order (see module doc)."""

    sources: list[CorpusSource]
    heldout: list[np.ndarray]  # per source: indices held out
    train: list[np.ndarray]  # per source: the other indices
    rows_per_segment: list[int]  # per source: texts drawn by each segment
    seed: int

    @classmethod
    def plan(cls, sources: list[CorpusSource], config: PretrainConfig) -> Stream:
        heldout, train = [], []
        for i, source in enumerate(sources):
            order = np.random.default_rng([config.seed, i, 7]).permutation(len(source.texts))
            n = min(config.heldout, len(order) // 10)
            heldout.append(np.sort(order[:n]))
            train.append(np.sort(order[n:]))
        empty = [s.name for s, t in zip(sources, train, strict=True) if not len(t)]
        if empty:
            raise InputError(f"no training texts left in {', '.join(empty)}", hint="add texts to the corpus")
        rows = config.eval_every * config.batch_size
        share = shares(sources)
        counts = np.floor(share * rows).astype(int)
        counts[np.argmax(share - counts / rows)] += rows - counts.sum()
        return cls(sources, heldout, train, counts.tolist(), config.seed)

    def segment_texts(self, segment: int) -> list[str]:
        """The texts segment `segment` trains on (each source's next `rows_per_segment` in its order)."""
        texts = []
        for i, (source, pool, count) in enumerate(zip(self.sources, self.train, self.rows_per_segment,
                                                      strict=True)):
            start = segment * count
            picked = []
            while len(picked) < count:
                cycle, offset = divmod(start + len(picked), len(pool))
                order = np.random.default_rng([self.seed, i, cycle]).permutation(len(pool))
                picked += order[offset:offset + count - len(picked)].tolist()
            texts += [source.texts[pool[j]] for j in picked]
        return texts

    def heldout_texts(self, i: int) -> list[str]:
        return [self.sources[i].texts[j] for j in self.heldout[i]]


def monitor_texts(name: str, count: int = 1000) -> list[str]:
    """Texts to watch but never train on: `suzuki` (a seeded sample of the evaluation set) or a source."""
    if name == "suzuki":
        from mistral_cl.data.suzuki import read_suzuki_csv

        return seeded_sample(list(read_suzuki_csv(duplicates="first").smiles), count)
    return seeded_sample(read_source(name).texts, count)


# ------------------------------------------------------------------------------------------- runs
@dataclasses.dataclass
class PretrainResult:
    model: CausalLM
    history: list[dict[str, Any]]
    directory: Path


def initial_lm(model: ModelConfig, weights: str | None, mode: str, *, key: PRNGKeyArray,
               mesh: Mesh | None, remat: Remat = "none", lora: LoRAConfig | None = None) -> CausalLM:
    """The model pretraining starts from: loaded (with its own output layer) or new, with LoRA adapters
    in `lora` mode; placed on `mesh` by the model's specs."""
    k_model, k_lora = jax.random.split(key)
    if weights is None:
        if mode == "lora":
            raise InputError("LoRA adapts pretrained weights; a model trained from scratch trains in full",
                             hint="set `mode=full`, or give `weights`")
        build = lambda: new_causal_lm(model, key=k_model, remat=remat)
        return build() if mesh is None else sharding.sharded_init(build, mesh)
    from mistral_cl.weights import load_causal_lm

    lm = load_causal_lm(weights, config=model)
    lm = eqx.tree_at(lambda m: m.backbone, lm, lm.backbone.with_remat(remat))
    if mode == "lora":
        lm = eqx.tree_at(lambda m: m.backbone, lm, add_lora(lm.backbone, lora or LoRAConfig(), key=k_lora))
    return lm if mesh is None else sharding.place(lm, mesh)


def trainable_filter(lm: CausalLM, mode: str) -> CausalLM:
    if mode == "lora":
        return CausalLM(lora_filter(lm.backbone), jax.tree.map(lambda _: False, lm.output))
    return jax.tree.map(is_parameter, lm)


def pretraining_run(directory: str | Path) -> bool:
    """Whether `directory` holds a `pretrain` run (its model, once written, is `directory / MODEL_DIR`)."""
    return (Path(directory) / RESULTS).is_file()


def _warn_about_plan(config: PretrainConfig, stream: Stream) -> None:
    """Warnings for settings the run reads otherwise than they may have been meant."""
    if config.steps % config.eval_every:
        warn(f"{config.steps} steps are rounded up to {config.segments * config.eval_every}, whole segments "
             f"of {config.eval_every} steps (`eval_every`)",
             hint="give `steps` as a multiple of `eval_every`, or lower `eval_every`")
    if config.heldout:
        small = [s.name for s, h in zip(stream.sources, stream.heldout, strict=True) if not len(h)]
        if small:
            warn(f"no held-out loss for {', '.join(small)}: a source holds out at most a tenth of its "
                 f"texts, and {'it has' if len(small) == 1 else 'they have'} fewer than 10",
                 hint="add texts to the source to measure how well the model reads unseen ones")


def pretrain(
    config: PretrainConfig,
    out: str | Path,
    *,
    model: ModelConfig | None = None,
    weights: str | None = None,
    tokenizer: Tokenizer | None = None,
    resume: bool = False,
    mesh: Mesh | None = None,
    progress: bool = True,
    lora: LoRAConfig | None = None,
    remat: Remat = "none",
) -> PretrainResult:
    """Pretrains (or, with `resume`, goes on pretraining) the run in `out`; see the module docstring."""
    from mistral_cl.runs import make_run_dir, write_json

    out = Path(out)
    tokenizer = tokenizer or Tokenizer.default()
    if resume:
        saved = json.loads((out / RESULTS).read_text()) if (out / RESULTS).is_file() else None
        if saved is None:
            raise InputError("no pretraining run to resume here", file=str(out),
                             hint="start one without `resume`")
        config, weights = PretrainConfig.from_dict(saved["config"]), saved["weights"]
        model = ModelConfig.from_dict(saved["model"])
    elif model is None:
        raise InputError("no model shapes given", hint="set `model` (a preset or config.json) or `weights`")
    if tokenizer.vocab_size > model.vocab_size:
        raise InputError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model {model.vocab_size}",
                         hint="use the tokenizer that belongs to the weights")
    # A bad corpus is refused before anything is written.
    sources = read_corpus(config.corpus)
    monitored = {f"monitor_{name}": monitor_texts(name) for name in config.monitor}
    overlap = suzuki_overlap(sources)
    stream = Stream.plan(sources, config)
    if not resume:
        if pretraining_run(out):
            raise InputError("a pretraining run already exists here", file=str(out),
                             hint=f"continue it with `resume` {out}, or choose another `out`")
        _warn_about_plan(config, stream)
        if sharding.is_reporting_process():
            make_run_dir(out)
    restrict = config.restrict_vocab if config.restrict_vocab is not None else weights is None
    if resume:
        vocab_ids = None if saved["vocab_ids"] is None else np.array(saved["vocab_ids"], np.int32)
    else:
        vocab_ids = corpus_vocab(sources, tokenizer) if restrict else None

    key = jax.random.key(config.seed)
    lm = initial_lm(model, weights, config.mode, key=key, mesh=mesh, remat=remat, lora=lora)
    trainable, frozen = eqx.partition(lm, trainable_filter(lm, config.mode))
    train = config.train_config()
    optimizer = make_optimizer(train, config.segments * config.eval_every)
    opt_state = init_opt_state(optimizer, trainable, mesh)
    step = make_train_step(optimizer, lm_objective(vocab_ids, model.vocab_size),
                           compute_dtype=config.compute_dtype,
                           constrain=None if mesh is None else sharding.state_constraint(mesh))
    heldout = [encode_texts(stream.heldout_texts(i), tokenizer, config.max_len)[0]
               for i in range(len(sources)) if len(stream.heldout[i])]
    heldout_names = [f"heldout_{s.name}" for i, s in enumerate(sources) if len(stream.heldout[i])]
    for name, texts in monitored.items():
        heldout.append(encode_texts(texts, tokenizer, config.max_len)[0])
        heldout_names.append(name)

    record: dict[str, Any] = {
        "config": config.to_dict(), "model": model.to_dict(), "weights": weights,
        "tokenizer": str(tokenizer.path),
        "corpus": [{"source": s.name, "texts": len(s.texts), "heldout": int(len(h)), "share": float(p),
                    "suzuki_reactions": overlap.get(s.name, 0)}
                   for s, h, p in zip(sources, stream.heldout, shares(sources), strict=True)],
        "vocab_ids": None if vocab_ids is None else vocab_ids.tolist(),
        "history": [], "seconds": 0.0, "cpu_seconds": 0.0, "tokens": 0,
    }
    done = 0
    if resume and checkpoint.latest_step(out / CHECKPOINTS):
        tree, meta = checkpoint.restore(out / CHECKPOINTS, {"trainable": trainable, "opt_state": opt_state})
        trainable, opt_state = tree["trainable"], tree["opt_state"]
        record = meta["record"]
        done = len(record["history"])

    def evaluate(current: CausalLM) -> dict[str, float]:
        return {name: heldout_loss(current, texts, vocab_ids, batch_size=config.batch_size,
                                                mesh=mesh)
                for name, texts in zip(heldout_names, heldout, strict=True)}

    if done == 0 and not record["history"]:
        record["initial"] = evaluate(eqx.combine(trainable, frozen))
    with tqdm(total=config.segments * config.eval_every, initial=done * config.eval_every, desc="pretrain",
              unit="step", dynamic_ncols=True, disable=not progress) as bar:
        for segment in range(done, config.segments):
            clock, cpu = time.perf_counter(), time.process_time()
            texts, cut = encode_texts(stream.segment_texts(segment), tokenizer, config.max_len)
            if cut and segment == done:
                warn(f"{cut} of {len(texts)} texts of the first segment were cut to {config.max_len} tokens",
                     hint="raise `max_len` to train on whole texts")
            order = np.random.default_rng([config.seed, segment, 11]).permutation(config.eval_every)
            steps = [(b,) for b in texts.batches(config.batch_size, order=order)]
            result = train_epochs(step, trainable, frozen, opt_state, lambda _, steps=steps: iter(steps),
                                  epochs=1, key=jax.random.fold_in(key, segment + 1), mesh=mesh, bar=bar)
            trainable, opt_state = result.trainable, result.opt_state
            entry = {"step": (segment + 1) * config.eval_every, **result.history[0]}
            entry.update(evaluate(eqx.combine(trainable, frozen)))
            entry["tokens_per_s"] = entry["tokens"] / max(entry["seconds"], 1e-9)
            record["history"].append(entry)
            record["seconds"] += time.perf_counter() - clock
            record["cpu_seconds"] += time.process_time() - cpu
            record["tokens"] += entry["tokens"]
            bar.set_postfix(loss=f"{entry['loss']:.3f}", tok_s=f"{entry['tokens_per_s']:.0f}")
            checkpoint.save(out / CHECKPOINTS, segment + 1, {"trainable": trainable, "opt_state": opt_state},
                            metadata={"record": record}, keep=2)
            if sharding.is_reporting_process():
                write_json(out / RESULTS, record)
    lm = eqx.combine(trainable, frozen)
    if sharding.is_reporting_process():
        from mistral_cl.weights import save_hf

        save_hf(out / MODEL_DIR, finished_lm(lm), dtype="float32")
        held = [text for i in range(len(sources)) for text in stream.heldout_texts(i)]
        write_lm_extras(out / MODEL_DIR, vocab_ids, held)
        write_json(out / RESULTS, record)
    return PretrainResult(lm, record["history"], out)


# Beside the Hugging Face files of a pretrained model: the vocabulary its softmax was trained over (when
# restricted) and texts it never trained on, so a fine-tuned copy's language-model loss can be measured.
VOCAB_FILE = "vocab_ids.json"
HELDOUT_FILE = "heldout.txt"


def write_lm_extras(directory: Path, vocab_ids: np.ndarray | None, heldout: Sequence[str]) -> None:
    if vocab_ids is not None:
        (directory / VOCAB_FILE).write_text(json.dumps([int(i) for i in vocab_ids]) + "\n")
    (directory / HELDOUT_FILE).write_text("".join(f"{text}\n" for text in heldout))


def read_lm_extras(directory: str | Path) -> tuple[np.ndarray | None, list[str]]:
    """(restricted vocabulary or None, held-out texts) written beside a pretrained model; no texts when
    the directory has none (weights from elsewhere)."""
    directory = Path(directory)
    vocab = directory / VOCAB_FILE
    held = directory / HELDOUT_FILE
    ids = np.array(json.loads(vocab.read_text()), np.int32) if vocab.is_file() else None
    texts = [line for line in held.read_text().splitlines() if line] if held.is_file() else []
    return ids, texts


def finished_lm(lm: CausalLM) -> CausalLM:
    """The model as it is written: adapters merged, in float32, on the host."""
    lm = CausalLM(merge_lora(lm.backbone), lm.output)
    on_host = jax.tree.map(lambda x: np.asarray(sharding.to_host(x)) if eqx.is_array(x) else x, lm)
    return cast_floating(on_host, jnp.float32)

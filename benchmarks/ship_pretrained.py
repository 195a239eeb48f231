"""Ship a `mistral-cl pretrain` run as a model inside the package, with its model card.

    python benchmarks/ship_pretrained.py RUN_DIR [--name chem-small] [--command "mistral-cl pretrain ..."]

Writes mistral_cl/models/NAME/ (config.json, model.safetensors in bfloat16, README.md: the card with
the file's SHA-256, shapes, corpus, tokens seen, wall time, the held-out loss curve and the command
that reproduces it) and benchmarks/results/pretrain.json (the run's record: settings, corpus, loss
curve, timings, machine, commit). Load the result with `--weights NAME`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import git_commit, machine  # noqa: E402

from mistral_cl.data.corpus import read_corpus  # noqa: E402
from mistral_cl.models import SHIPPED  # noqa: E402
from mistral_cl.pretrain import (  # noqa: E402
    HELDOUT_FILE,
    MODEL_DIR,
    RESULTS,
    PretrainConfig,
    Stream,
    read_lm_extras,
    write_lm_extras,
)
from mistral_cl.weights import load_causal_lm, save_hf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 32 * 2**20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def suzuki_coverage(vocab: list[int] | None) -> tuple[int, int, list[str]]:
    """(Suzuki token ids inside the corpus vocabulary, Suzuki token ids, the pieces of those outside)."""
    from mistral_cl.data.suzuki import read_suzuki_csv
    from mistral_cl.tokenizer import Tokenizer

    tokenizer = Tokenizer.default()
    used = {i for ids in tokenizer.encode_all(list(read_suzuki_csv(duplicates="first").smiles), bos=False)
            for i in ids}
    inside = used if vocab is None else used & set(vocab)
    return len(inside), len(used), sorted(tokenizer.decode([i]) or f"<{i}>" for i in used - inside)


def card(name: str, record: dict, digest: str, size: int, command: str) -> str:
    config, model, history = record["config"], record["model"], record["history"]
    last = history[-1]
    losses = sorted(k for k in last if k.startswith(("heldout_", "monitor_")))
    curve = ["| step | train loss | " + " | ".join(k.replace("_", " ", 1) for k in losses) + " | tokens/s |",
             "|---|---|" + "---|" * len(losses) + "---|",
             "| 0 | – | " + " | ".join(f"{record['initial'][k]:.3f}" for k in losses) + " | – |"]
    curve += [f"| {h['step']} | {h['loss']:.3f} | " + " | ".join(f"{h[k]:.3f}" for k in losses)
              + f" | {h['tokens_per_s']:.0f} |" for h in history]
    corpus = [f"| {c['source']} | {c['texts']:,} | {c['share']:.2f} | {c['heldout']} "
              f"| {c['suzuki_reactions']} |"
              for c in record["corpus"]]
    vocab = record["vocab_ids"]
    covered, total, outside = suzuki_coverage(vocab)
    return "\n".join([
        f"# {name}: a small chemistry Mistral pretrained on CPU",
        "",
        "A Mistral decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU) with the Mistral v0.1 "
        "tokenizer, trained from scratch by `mistral-cl pretrain` to predict the next token of SMILES. "
        f"Load it with `--weights {name}` in every command; it is stored in Hugging Face's layout "
        "(`MistralForCausalLM`, output layer tied to the token embeddings) and loads in `transformers` too.",
        "",
        "## Files",
        f"- `model.safetensors`: bfloat16, {size:,} bytes, SHA-256 `{digest}`",
        "- `config.json`: the shapes below (`tie_word_embeddings: true`)",
        "",
        "## Shapes",
        f"dim {model['dim']}, {model['n_layers']} blocks, {model['n_heads']} query / "
        f"{model['n_kv_heads']} KV "
        f"heads of {model['head_dim']}, SwiGLU {model['hidden_dim']}, vocabulary {model['vocab_size']}, "
        f"RoPE θ {model['rope_theta']:g}, sliding window {model['sliding_window']}.",
        "",
        "## Training",
        f"- Objective: next-token cross-entropy on `BOS SMILES EOS`, one text per row (not packed). The "
        f"softmax ran over the {len(vocab) if vocab else model['vocab_size']} token ids the corpus uses"
        + (" (`--restrict-vocab`); the embedding rows of the other ids were never trained."
           if vocab else "."),
        f"- Corpus (each batch drawn by share; {config['heldout']} texts of each source held out). It holds "
        f"{covered} of the {total} token ids of the Suzuki–Miyaura reactions"
        + (f"; never seen: {', '.join(repr(p) for p in outside)}." if outside else "."),
        "",
        "| source | texts | share | held out | Suzuki reactions in it |",
        "|---|---|---|---|---|",
        *corpus,
        "",
        f"- {config['steps']} steps of {config['batch_size']} texts, AdamW, "
        f"peak lr {config['learning_rate']:g} "
        f"(warm-up {config['warmup_fraction']:g}, cosine to 1 %), weight decay {config['weight_decay']:g}, "
        f"clip {config['clip_norm']}, {config['compute_dtype']}, seed {config['seed']}.",
        f"- {record['tokens']:,} real tokens seen in {record['seconds'] / 60:.1f} min wall "
        f"({record['cpu_seconds'] / 60:.1f} CPU-min) on {record.get('machine', 'this machine')}.",
        "",
        "## Held-out loss (nats per predicted token)",
        "`monitor suzuki` is the loss on 1000 Suzuki–Miyaura reactions (the evaluation set, never trained "
        "on); "
        "with the restricted vocabulary only their tokens inside it count.",
        "",
        *curve,
        "",
        "## Reproduce",
        "```",
        "make install-pretrain",
        command,
        f"python benchmarks/ship_pretrained.py runs/{name} --name {name}",
        "```",
        "The run's record is benchmarks/results/pretrain.json. Bit-identical results need the same machine "
        "type and library versions; float rounding differs across CPUs.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--name", default="chem-small", choices=SHIPPED)
    parser.add_argument("--command", required=True, help="the pretrain command line that made RUN")
    args = parser.parse_args(argv)
    record = json.loads((args.run / RESULTS).read_text())
    record["machine"] = "2 CPU cores (x86_64)"
    target = ROOT / "mistral_cl" / "models" / args.name
    save_hf(target, load_causal_lm(args.run / MODEL_DIR), dtype="bfloat16")
    vocab, held = read_lm_extras(args.run / MODEL_DIR)
    if not (args.run / MODEL_DIR / HELDOUT_FILE).is_file():  # a run from before they were written
        config = PretrainConfig.from_dict(record["config"])
        sources = read_corpus(config.corpus)
        stream = Stream.plan(sources, config)
        held = [text for i in range(len(sources)) for text in stream.heldout_texts(i)]
        vocab = None if record["vocab_ids"] is None else record["vocab_ids"]
    write_lm_extras(target, vocab, held)
    weights = target / "model.safetensors"
    size = weights.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{weights} is {size:,} bytes, over the {MAX_BYTES:,} a shipped model may take")
    digest = sha256(weights)
    (target / "README.md").write_text(card(args.name, record, digest, size, args.command))
    out = ROOT / "benchmarks" / "results" / "pretrain.json"
    out.write_text(json.dumps({
        "benchmark": f"pretraining of {args.name}", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "machine": machine(), "command": args.command, "sha256": digest,
        "bytes": size, **{k: v for k, v in record.items() if k not in ("vocab_ids", "machine")},
    }, indent=2) + "\n")
    print(f"wrote {target}/ ({size:,} bytes, sha256 {digest[:16]}...) and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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


def stage_lines(k: int, record: dict, command: str) -> list[str]:
    """The card's section on one pretraining stage: command, corpus, settings, tokens, time, loss curve."""
    config, history = record["config"], record["history"]
    losses = sorted(key for key in history[-1] if key.startswith(("heldout_", "monitor_")))
    names = " | ".join(key.replace("_", " ", 1) for key in losses)
    curve = [f"| step | train loss | {names} | tokens/s |",
             "|---|---|" + "---|" * len(losses) + "---|",
             "| 0 | – | " + " | ".join(f"{record['initial'][key]:.3f}" for key in losses) + " | – |"]
    curve += [f"| {h['step']} | {h['loss']:.3f} | " + " | ".join(f"{h[key]:.3f}" for key in losses)
              + f" | {h['tokens_per_s']:.0f} |" for h in history]
    corpus = [f"| {c['source']} | {c['texts']:,} | {c['share']:.2f} | {c['heldout']} "
              f"| {c['suzuki_reactions']} |"
              for c in record["corpus"]]
    vocab = record["vocab_ids"]
    covered, total, outside = suzuki_coverage(vocab)
    start = "from random weights" if record["weights"] is None else "continued from the stage before"
    return [
        f"### Stage {k}: {start}",
        "",
        f"`{command}`",
        "",
        f"- Softmax over the {len(vocab) if vocab else record['model']['vocab_size']} token ids its "
        "corpus uses"
        + (" (`--restrict-vocab`)." if vocab else "."),
        f"- Corpus, each batch drawn by share, {config['heldout']} texts of each source held out; it holds "
        f"{covered} of the {total} token ids of the Suzuki–Miyaura reactions"
        + (f" (never seen: {', '.join(repr(p) for p in outside)})" if outside else "") + ":",
        "",
        "| source | texts | share | held out | Suzuki reactions in it |",
        "|---|---|---|---|---|",
        *corpus,
        "",
        f"- {config['steps']} steps of {config['batch_size']} texts, AdamW, "
        f"peak lr {config['learning_rate']:g} "
        f"(warm-up {config['warmup_fraction']:g}, cosine to 1 %), weight decay {config['weight_decay']:g}, "
        f"clip {config['clip_norm']}, {config['compute_dtype']}, seed {config['seed']}: "
        f"{record['tokens']:,} real tokens in {record['seconds'] / 60:.1f} min wall "
        f"({record['cpu_seconds'] / 60:.1f} CPU-min).",
        "",
        "Held-out loss, nats per predicted token (`monitor suzuki`: 1000 Suzuki–Miyaura reactions, never "
        "trained on; only their tokens inside the restricted vocabulary count):",
        "",
        *curve,
        "",
    ]


def card(name: str, records: list[dict], digest: str, size: int, commands: list[str]) -> str:
    model = records[-1]["model"]
    tokens = sum(r["tokens"] for r in records)
    minutes = sum(r["seconds"] for r in records) / 60
    stages = [line for k, (r, c) in enumerate(zip(records, commands, strict=True), start=1)
              for line in stage_lines(k, r, c)]
    return "\n".join([
        f"# {name}: a small chemistry Mistral pretrained on CPU",
        "",
        "A Mistral decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU) with the Mistral v0.1 "
        "tokenizer, trained from scratch by `mistral-cl pretrain` to predict the next token of SMILES "
        f"({len(records)} stage{'s' if len(records) > 1 else ''}, {tokens:,} real tokens, "
        f"{minutes:.0f} min on "
        f"{records[-1].get('machine', 'this machine')}). Load it with `--weights {name}` in every command; "
        "it is stored in Hugging Face's layout (`MistralForCausalLM`, output layer tied to the token "
        "embeddings) and loads in `transformers` too. Whether it helps yield prediction is measured in "
        "benchmarks/README.md.",
        "",
        "## Files",
        f"- `model.safetensors`: bfloat16, {size:,} bytes, SHA-256 `{digest}`",
        "- `config.json`: the shapes below (`tie_word_embeddings: true`)",
        "- `vocab_ids.json`: the token ids of the last stage's softmax; `heldout.txt`: its held-out texts "
        "(what `continual --retention auto` scores)",
        "",
        "## Shapes",
        f"dim {model['dim']}, {model['n_layers']} blocks, {model['n_heads']} query / "
        f"{model['n_kv_heads']} KV "
        f"heads of {model['head_dim']}, SwiGLU {model['hidden_dim']}, vocabulary {model['vocab_size']}, "
        f"RoPE θ {model['rope_theta']:g}, sliding window {model['sliding_window']}.",
        "",
        "## Training",
        "Next-token cross-entropy on `BOS SMILES EOS`, one text per row (not packed).",
        "",
        *stages,
        "## Reproduce",
        "```",
        "make install-pretrain",
        *commands,
        "python benchmarks/ship_pretrained.py "
        f"{' '.join('RUN' + str(k) for k in range(1, len(records) + 1))} "
        f"--name {name} --command ...",
        "```",
        "The records are in benchmarks/results/pretrain.json. Bit-identical weights need the same machine "
        "type and library versions; float rounding differs across CPUs. Both stages ran while other jobs "
        "shared the two cores (load average 5 to 8), so their tokens/s and minutes are pessimistic.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+",
                        help="the run of each stage, in order; the last is shipped")
    parser.add_argument("--name", default="chem-small", choices=SHIPPED)
    parser.add_argument("--command", action="append", required=True,
                        help="the pretrain command line of each stage, in order")
    args = parser.parse_args(argv)
    if len(args.command) != len(args.runs):
        raise SystemExit("give one --command per run")
    records = [json.loads((run / RESULTS).read_text()) for run in args.runs]
    for record in records:
        record["machine"] = "2 CPU cores (x86_64)"
    last, record = args.runs[-1], records[-1]
    target = ROOT / "mistral_cl" / "models" / args.name
    save_hf(target, load_causal_lm(last / MODEL_DIR), dtype="bfloat16")
    vocab, held = read_lm_extras(last / MODEL_DIR)
    if not (last / MODEL_DIR / HELDOUT_FILE).is_file():  # a run from before they were written
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
    (target / "README.md").write_text(card(args.name, records, digest, size, args.command))
    out = ROOT / "benchmarks" / "results" / "pretrain.json"
    stages = [{"command": c, **{k: v for k, v in r.items() if k not in ("vocab_ids", "machine")}}
              for c, r in zip(args.command, records, strict=True)]
    out.write_text(json.dumps({
        "benchmark": f"pretraining of {args.name}", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(), "machine": machine(), "sha256": digest, "bytes": size, "stages": stages,
    }, indent=2) + "\n")
    print(f"wrote {target}/ ({size:,} bytes, sha256 {digest[:16]}...) and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

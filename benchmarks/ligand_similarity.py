"""Does a backbone know which ligands behave alike? The ceiling of ligand knowledge on the ligand splits.

    python benchmarks/ligand_similarity.py [--backbone LABEL=OPTIONS --depths 0,last] [--rxnfp]

The placeholder reading (`--molecule-dropout`) predicts a reaction under a new ligand by what the
known ligands give on average; to do better a model must know something about the new ligand. This
benchmark measures what two simple forms of such knowledge are worth before any head is trained. Each
held-out reaction of a ligand split (`pretrained.LIGAND_SPLITS`) is predicted from the measured yields
of the same quinoline, indazole, base and solvent under the training ligands:

- `similarity` rows: weighted by softmax(similarity / T) between the new ligand and each known one.
  The reactions without a ligand (`none`) get no weight; T = inf is the plain mean over the known
  ligands. Similarities: the cosine of a backbone's mean-pooled states of the ligand's canonical
  SMILES at a depth (`chem-small` and the random `tiny`), and the Tanimoto similarity of Morgan
  fingerprints (RDKit, radius 2, 2048 bits);
- `offset` rows: the mean over known ligands plus the new ligand's offset, predicted by ridge
  regression of each known ligand's mean offset (its mean yield minus the mean over ligands) on its
  mean-pooled states or Morgan bits;
- `mean` rows: the plain mean over the known ligands, with and without `none`.

`--backbone LABEL=OPTIONS` (repeatable) adds any backbone `mistral-cl train OPTIONS` loads, read at
the block counts of `--depths` (default `0,last`): Mistral-7B's own weights, for one, with
`--backbone 'Mistral-7B=--weights DIR' --depths 0,8,16,24,last`.

With `--rxnfp`, the same readings are scored on a peer that has read real reactions: two BERT models
of the rxnfp package, trained by its authors on patent reactions (USPTO; Schwaller et al., 2021):
`bert_pretrained`, the masked language model that Yield-BERT fine-tunes, and `bert_ft`, the fine-tune
whose [CLS] state is the package's default reaction fingerprint. Each ligand is read `alone` (the
[CLS] state of its canonical SMILES written as a reaction without product, not centred, as the
backbones' codes) and `in reactions` (the mean [CLS] state over all 480 of the screen's reactions run
with it, less the mean of that over the eleven ligands: the reactions share everything but the
ligand, so without centring every pair of ligands would look alike; the centring reads the held-out
ligands' reaction strings, never their yields). rxnfp is a peer, not a dependency: `pip install
--no-deps rxnfp==0.1.0` (its weights; it is never imported) beside the test extra's torch and
transformers.

T (or the ridge penalty) is chosen two ways: `peeked`, the value that scores best on the held-out
ligands themselves (a ceiling no lab has), and `nested`, the value whose mean R² over the training
ligands, each predicted from the others (leave one ligand out), is highest: what a lab could do. The
held-out score pools the split's two ligands into one R².

Writes benchmarks/results/ligand_similarity.json (R² per split and means, each ligand's three nearest
known ligands per similarity, machine, commit, load) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import git_commit, machine, train_settings  # noqa: E402
from pretrained import LIGAND_SPLITS, held_ligands  # noqa: E402

from mistral_cl.data.smiles import canonical_smiles  # noqa: E402
from mistral_cl.data.suzuki_components import LIGANDS, NONE, suzuki_conditions  # noqa: E402
from mistral_cl.features import mean_pooled_states  # noqa: E402
from mistral_cl.runs import initial_model, tokenizer_for  # noqa: E402
from mistral_cl.scores import regression_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ligand_similarity.json"
TEMPERATURES = (math.inf, 1.0, 0.3, 0.1, 0.03, 0.01)
PENALTIES = (1e-2, 1e-1, 1.0, 10.0, 1e2, 1e4)
Similarity = Callable[[str, str], float]
# A predictor: (yield table, ligand names, held-out ligands, training ligands, T or penalty) ->
# the predicted yield columns of the held-out ligands.
Predictor = Callable[[np.ndarray, list[str], Sequence[str], Sequence[str], float], list[np.ndarray]]
RXNFP_MODELS = ("bert_pretrained", "bert_ft")
# How rxnfp's tokenizer splits a SMILES string (the regular expression of Schwaller et al.).
RXNFP_TOKENS = re.compile(r"(\%\([0-9]{3}\)|\[[^\]]+]|Br?|Cl?|N|O|S|P|F|I|b|c|n|o|s|p|\||\(|\)|\.|=|#|-|\+|"
                          r"\\|\/|:|~|@|\?|>>?|\*|\$|\%[0-9]{2}|[0-9])")


def screen() -> tuple[np.ndarray, list[str], list[list[str]]]:
    """Yields as (everything but the ligand) × (ligand, `none` first): one reaction per cell; the
    ligands' names; the reaction strings of the same cells."""
    dataset = train_settings([]).data.read()
    cells: dict[tuple[str, str], tuple[float, str]] = {}
    for reaction, y in zip(dataset.smiles, dataset.yields, strict=True):
        conditions = suzuki_conditions(reaction)
        key = ("|".join(v for k, v in sorted(conditions.items()) if k != "ligand"), conditions["ligand"])
        if key in cells:
            raise ValueError(f"two reactions of the screen read as {key}")
        cells[key] = float(y), reaction
    ligands = [NONE, *LIGANDS]
    rests = sorted({rest for rest, _ in cells})
    table = np.array([[cells[(rest, ligand)][0] for ligand in ligands] for rest in rests])
    return table, ligands, [[cells[(rest, ligand)][1] for ligand in ligands] for rest in rests]


def backbone_codes(options: Sequence[str], depths: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """For each depth, the unit-norm mean over tokens of `mistral-cl train OPTIONS`'s backbone states
    after `depth` blocks, for each ligand's canonical SMILES read alone (as the molecule head reads it
    in a reaction). The backbone is built once."""
    config = train_settings(options)
    backbone = initial_model(config, jax.random.key(0)).backbone
    tokenizer = tokenizer_for(config)
    codes: dict[int, dict[str, np.ndarray]] = {depth: {} for depth in depths}
    for name, smiles in LIGANDS.items():
        ids = jnp.asarray([tokenizer.encode(canonical_smiles(smiles))])
        mask = jnp.ones(ids.shape, bool)
        for depth in depths:
            code = np.asarray(mean_pooled_states(backbone, ids, mask, depth)[0], np.float64)
            codes[depth][name] = code / np.linalg.norm(code)
    return codes


def parse_backbone(text: str, depths: str) -> tuple[str, list[str], list[int]]:
    """`LABEL=OPTIONS` and `0,16,last` -> (label, train options, depths); raises ValueError on a bad
    form or a depth the backbone does not have."""
    label, eq, options = text.partition("=")
    if not eq or not label.strip():
        raise ValueError(f"{text!r} is not LABEL=OPTIONS, e.g. 'Mistral-7B=--weights DIR'")
    parsed = shlex.split(options)
    n_layers = train_settings(parsed).model.n_layers
    chosen = []
    for item in filter(None, (part.strip() for part in depths.split(","))):
        depth = n_layers if item == "last" else int(item) if item.isdigit() else -1
        if not 0 <= depth <= n_layers:
            raise ValueError(f"depth {item!r}: a block count from 0 to {n_layers}, or 'last'")
        chosen.append(depth)
    if not chosen:
        raise ValueError("--depths names no depth")
    return label.strip(), parsed, sorted(set(chosen))


def morgan_bits() -> dict[str, np.ndarray]:
    """Each ligand's Morgan fingerprint (radius 2, 2048 bits) as a 0/1 vector."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return {name: generator.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)).astype(np.float64)
            for name, s in LIGANDS.items()}


def rxnfp_models() -> Path | str:
    """The folder of rxnfp's BERT checkpoints where the package is installed (found, not imported),
    or what is missing."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (the test extra: pip install -e '.[test]')"
    spec = importlib.util.find_spec("rxnfp")
    if spec is None or spec.origin is None:
        return "rxnfp not installed (pip install --no-deps rxnfp==0.1.0)"
    folder = Path(spec.origin).parent / "models" / "transformers"
    absent = [m for m in RXNFP_MODELS if not (folder / m / "config.json").exists()]
    return folder if not absent else f"rxnfp's {', '.join(absent)} not found under {folder}"


class RxnfpReader:
    """The [CLS] states of texts by one of rxnfp's BERT checkpoints (padded batches, masked), counting
    the tokens outside its vocabulary (read as [UNK])."""

    def __init__(self, folder: Path, model: str):
        from transformers import BertModel

        names = (folder / model / "vocab.txt").read_text().splitlines()
        self.vocabulary = {t: i for i, t in enumerate(names)}
        self.bert = BertModel.from_pretrained(folder / model).eval()
        self.unknown = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        v = self.vocabulary
        rows = []
        for text in texts:
            tokens = RXNFP_TOKENS.findall(text)
            if "".join(tokens) != text:
                raise ValueError(f"rxnfp's tokens do not spell {text!r}")
            self.unknown += sum(t not in v for t in tokens)
            rows.append([v["[CLS]"], *(v.get(t, v["[UNK]"]) for t in tokens), v["[SEP]"]])
        width = max(map(len, rows))
        if width > self.bert.config.max_position_embeddings:
            raise ValueError(f"a text of {width} tokens is longer than rxnfp's "
                             f"{self.bert.config.max_position_embeddings} positions")
        ids = torch.tensor([r + [v["[PAD]"]] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        with torch.no_grad():
            states = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return states[:, 0].numpy().astype(np.float64)


def rxnfp_codes(read: Callable[[Sequence[str]], np.ndarray], reactions: list[list[str]], ligands: list[str],
                batch: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """Each ligand's `alone` reading (its canonical SMILES as a reaction without product) and its `in
    reactions` reading (the mean over every row of the screen's reactions run with it, read in batches
    of `batch`, less the mean of that over ligands)."""
    alone = read([canonical_smiles(s) + ">>" for s in LIGANDS.values()])
    contexts = []
    for name in LIGANDS:
        texts = [row[ligands.index(name)] for row in reactions]
        states = [read(texts[i:i + batch]) for i in range(0, len(texts), batch)]
        contexts.append(np.concatenate(states).mean(axis=0))
    centred = np.stack(contexts) - np.mean(contexts, axis=0)
    return {"alone": dict(zip(LIGANDS, alone, strict=True)),
            "in reactions": dict(zip(LIGANDS, centred, strict=True))}


def cosine(codes: dict[str, np.ndarray]) -> Similarity:
    def similarity(a: str, b: str) -> float:
        return float(codes[a] @ codes[b] / np.linalg.norm(codes[a]) / np.linalg.norm(codes[b]))
    return similarity


def tanimoto(bits: dict[str, np.ndarray]) -> Similarity:
    def similarity(a: str, b: str) -> float:
        both = float(bits[a] @ bits[b])
        return both / (bits[a].sum() + bits[b].sum() - both)
    return similarity


def weighted(similarity: Similarity) -> Predictor:
    """Softmax(similarity / T)-weighted mean over the known ligands (`none` excluded)."""
    def predict(table, ligands, held, train, temperature):
        known = [t for t in train if t != NONE]
        columns = table[:, [ligands.index(t) for t in known]]
        out = []
        for ligand in held:
            scores = np.array([similarity(ligand, t) for t in known])
            weights = (np.ones(len(known)) if math.isinf(temperature)
                       else np.exp((scores - scores.max()) / temperature))
            out.append(columns @ (weights / weights.sum()))
        return out
    return predict


def mean_over(with_none: bool) -> Predictor:
    """The plain mean over the known ligands, `none` counted as one of them or not."""
    def predict(table, ligands, held, train, _):
        kept = [t for t in train if with_none or t != NONE]
        return [table[:, [ligands.index(t) for t in kept]].mean(axis=1) for _ in held]
    return predict


def ridge_offset(vectors: dict[str, np.ndarray]) -> Predictor:
    """Mean over the known ligands plus the held-out ligand's offset from it, predicted by ridge
    regression (centred, penalty `alpha`) of the known ligands' mean offsets on their `vectors`."""
    def predict(table, ligands, held, train, alpha):
        known = [t for t in train if t != NONE]
        columns = table[:, [ligands.index(t) for t in known]]
        base = columns.mean(axis=1)
        offsets = (columns - base[:, None]).mean(axis=0)
        centred = np.stack([vectors[t] for t in known])
        centre = centred.mean(axis=0)
        centred = centred - centre
        gram = centred @ centred.T + alpha * np.eye(len(known))
        dual = np.linalg.solve(gram, offsets - offsets.mean())
        return [base + offsets.mean() + (vectors[ligand] - centre) @ centred.T @ dual for ligand in held]
    return predict


def r2_of(predictor: Predictor, table: np.ndarray, ligands: list[str], held: Sequence[str],
          train: Sequence[str], setting: float) -> float:
    """R² over the reactions of the `held` ligands pooled, predicted from the `train` ligands."""
    truth = np.concatenate([table[:, ligands.index(h)] for h in held])
    return regression_scores(truth, np.concatenate(predictor(table, ligands, held, train, setting)))["r2"]


def left_out(predictor: Predictor, table: np.ndarray, ligands: list[str], train: Sequence[str],
             setting: float) -> float:
    """Mean R² over the training ligands (but `none`), each predicted from the other training ligands."""
    return float(np.mean([r2_of(predictor, table, ligands, [x], [y for y in train if y != x], setting)
                          for x in train if x != NONE]))


def scores(predictor: Predictor, table: np.ndarray, ligands: list[str], settings: Sequence[float]
           ) -> dict[str, Any]:
    """Per split: R² with the peeked and the nested setting (T or penalty), and the settings chosen."""
    out: dict[str, Any] = {}
    for split in LIGAND_SPLITS:
        held = held_ligands(split)
        train = [t for t in ligands if t not in held]
        held_out = {s: r2_of(predictor, table, ligands, held, train, s) for s in settings}
        peeked = max(settings, key=held_out.__getitem__)
        nested = max(settings, key=lambda s: left_out(predictor, table, ligands, train, s))
        out[split] = {"peeked": held_out[peeked], "peeked_setting": peeked,
                      "nested": held_out[nested], "nested_setting": nested}
    for reading in ("peeked", "nested"):
        out[f"mean_{reading}"] = float(np.mean([out[s][reading] for s in LIGAND_SPLITS]))
    return out


def nearest(closeness: Callable[[str, str], float], names: Sequence[str], count: int = 3
            ) -> dict[str, list[str]]:
    """Each ligand's `count` closest among `names` (itself excluded)."""
    return {a: sorted((b for b in names if b != a), key=lambda b: -closeness(a, b))[:count] for a in LIGANDS}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return "inf" if isinstance(value, float) and math.isinf(value) else value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--backbone", action="append", default=[], metavar="LABEL=OPTIONS",
                        help="also read the ligands with `mistral-cl train OPTIONS`'s backbone, e.g. "
                             "'Mistral-7B=--weights ~/models/Mistral-7B-v0.1' (repeatable)")
    parser.add_argument("--depths", default="0,last",
                        help="block counts at which --backbone is read, comma-separated; 'last' is the final "
                             "layer (default: 0,last)")
    parser.add_argument("--rxnfp", action="store_true",
                        help="also score rxnfp's USPTO BERT models (pip install --no-deps rxnfp==0.1.0)")
    args = parser.parse_args(argv)
    folder = rxnfp_models() if args.rxnfp else None
    if isinstance(folder, str):
        parser.error(f"--rxnfp: {folder}")
    backbones = [("chem-small", ["--weights", "chem-small"], [0, 2, 4, 6]), ("tiny", [], [0])]
    for text in args.backbone:
        try:
            backbones.append(parse_backbone(text, args.depths))
        except ValueError as error:
            parser.error(f"--backbone: {error}")
    table, ligands, reactions = screen()
    representations: dict[str, tuple[dict[str, np.ndarray], Callable]] = {"Morgan": (morgan_bits(), tanimoto)}
    for label, options, depths in backbones:
        for depth, vectors in backbone_codes(options, depths).items():
            representations[f"{label} L{depth}"] = (vectors, cosine)
    unknown_tokens = {}
    for model in RXNFP_MODELS if folder is not None else ():
        read = RxnfpReader(folder, model)
        for reading, vectors in rxnfp_codes(read, reactions, ligands).items():
            representations[f"rxnfp {model} {reading}"] = (vectors, cosine)
        unknown_tokens[f"rxnfp {model}"] = read.unknown

    rows = {"mean of known ligands and none": {"kind": "mean",
                                               **scores(mean_over(True), table, ligands, [0.0])},
            "mean of known ligands": {"kind": "mean", **scores(mean_over(False), table, ligands, [0.0])}}
    neighbours = {}
    for label, (vectors, kind) in representations.items():
        similarity = kind(vectors)
        rows[f"{label} similarity"] = {"kind": "similarity",
                                       **scores(weighted(similarity), table, ligands, TEMPERATURES)}
        rows[f"{label} offset"] = {"kind": "offset",
                                   **scores(ridge_offset(vectors), table, ligands, PENALTIES)}
        neighbours[label] = nearest(similarity, list(LIGANDS))

    def correlation(a: str, b: str) -> float:
        return float(np.corrcoef(table[:, ligands.index(a)], table[:, ligands.index(b)])[0, 1])

    results = {"benchmark": "ligand-out-of-sample R² of the known ligands' yields read with ligand knowledge",
               "date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
               "machine": machine(), "load_average": [round(x, 2) for x in os.getloadavg()],
               "splits": list(LIGAND_SPLITS), "temperatures": list(TEMPERATURES),
               "penalties": list(PENALTIES), "rows": rows, "nearest_ligands": neighbours,
               "rxnfp": ({"models": list(RXNFP_MODELS), "tokens_outside_vocabulary": unknown_tokens}
                         if folder is not None else "not run (--rxnfp)"),
               "nearest_ligands_by_yield_correlation": nearest(correlation, ligands)}
    args.results.write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    print("| reading | " + " | ".join(s.partition(":")[2] for s in LIGAND_SPLITS)
          + " | mean, peeked | mean, nested |")
    print("|---" * (len(LIGAND_SPLITS) + 3) + "|")
    for label, row in rows.items():
        cells = " | ".join(f"{row[s]['nested']:.3f}" for s in LIGAND_SPLITS)
        print(f"| {label} | {cells} | {row['mean_peeked']:.3f} | {row['mean_nested']:.3f} |")
    print("\nPer-split R² with the nested setting (leave one training ligand out).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

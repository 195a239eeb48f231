"""Does a backbone know which ligands behave alike? The ceiling of similarity on the ligand splits.

    python benchmarks/ligand_similarity.py

The placeholder reading (`--molecule-dropout`) predicts a reaction under a new ligand by what the
known ligands give on average; to do better a model must know something about the new ligand. The
cheapest such knowledge is similarity, and this benchmark measures what it can be worth before any
head is trained: each held-out reaction of a ligand split (`pretrained.LIGAND_SPLITS`) is predicted
from the measured yields of the same quinoline, indazole, base and solvent under the training
ligands, weighted by softmax(similarity / T) between the new ligand and each known one (the
reactions without a ligand get no weight). Similarities: the cosine of a backbone's mean-pooled
states of the ligand's SMILES at a depth (`chem-small` and the random `tiny`), and the Tanimoto
similarity of Morgan fingerprints (RDKit, radius 2, 2048 bits), with uniform weights as the plain
mean over known ligands.

Two ways to pick T from (1, 0.3, 0.1, 0.03, 0.01): `peeked`, the T that scores best on the held-out
ligands themselves (an optimistic ceiling), and `nested`, the T that best predicts each training
ligand from the others (leave one ligand out), which is what a lab could do.

Writes benchmarks/results/ligand_similarity.json (R² per split and means, machine, commit, load)
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accuracy import git_commit, machine, train_settings  # noqa: E402
from pretrained import LIGAND_SPLITS  # noqa: E402

from mistral_cl.data.suzuki_components import LIGANDS, NONE, suzuki_conditions  # noqa: E402
from mistral_cl.features import hidden_states  # noqa: E402
from mistral_cl.runs import initial_model, tokenizer_for  # noqa: E402
from mistral_cl.scores import regression_scores  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ligand_similarity.json"
TEMPERATURES = (1.0, 0.3, 0.1, 0.03, 0.01)
Similarity = Callable[[str, str], float]


def yield_table() -> tuple[np.ndarray, list[str]]:
    """Yields as (everything but the ligand) × (ligand, `none` first): one reaction per cell."""
    dataset = train_settings([]).data.read()
    cells: dict[tuple[str, str], float] = {}
    for reaction, y in zip(dataset.smiles, dataset.yields, strict=True):
        conditions = suzuki_conditions(reaction)
        rest = "|".join(v for k, v in sorted(conditions.items()) if k != "ligand")
        cells[(rest, conditions["ligand"])] = float(y)
    ligands = [NONE, *LIGANDS]
    rests = sorted({rest for rest, _ in cells})
    return np.array([[cells[(rest, ligand)] for ligand in ligands] for rest in rests]), ligands


def backbone_similarity(options: Sequence[str], depth: int) -> Similarity:
    """Cosine of `mistral-cl train OPTIONS`'s backbone states after `depth` blocks, mean-pooled over
    each ligand's SMILES read alone."""
    config = train_settings(options)
    backbone = initial_model(config, jax.random.key(0)).backbone
    tokenizer = tokenizer_for(config)
    codes = {}
    for name, smiles in LIGANDS.items():
        ids = jnp.asarray([tokenizer.encode(smiles)])
        states = hidden_states(backbone, ids, jnp.ones(ids.shape, bool), depth=depth)
        code = np.asarray(states[0], np.float64).mean(axis=0)
        codes[name] = code / np.linalg.norm(code)
    return lambda a, b: float(codes[a] @ codes[b])


def tanimoto_similarity() -> Similarity:
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    prints = {name: generator.GetFingerprint(Chem.MolFromSmiles(s)) for name, s in LIGANDS.items()}
    return lambda a, b: DataStructs.TanimotoSimilarity(prints[a], prints[b])


def r2_of(table: np.ndarray, ligands: list[str], held: Sequence[str], train: Sequence[str],
          similarity: Similarity | None, temperature: float) -> float:
    """R² over the reactions of the `held` ligands, each predicted from the `train` ligands' yields
    (uniform weights when `similarity` is None)."""
    truth, guess = [], []
    columns = [ligands.index(t) for t in train]
    for ligand in held:
        if similarity is None:
            weights = np.ones(len(train))
        else:
            known = np.array([t != NONE for t in train])
            scores = np.array([similarity(ligand, t) if t != NONE else 0.0 for t in train])
            weights = np.where(known, np.exp((scores - scores[known].max()) / temperature), 0.0)
        guess.append(table[:, columns] @ (weights / weights.sum()))
        truth.append(table[:, ligands.index(ligand)])
    return regression_scores(np.concatenate(truth), np.concatenate(guess))["r2"]


def left_out(table: np.ndarray, ligands: list[str], train: Sequence[str], similarity: Similarity,
             temperature: float) -> float:
    """Mean R² of each training ligand (but `none`) predicted from the other training ligands."""
    return float(np.mean([r2_of(table, ligands, [x], [y for y in train if y != x], similarity, temperature)
                          for x in train if x != NONE]))


def scores(table: np.ndarray, ligands: list[str], similarity: Similarity | None) -> dict[str, dict]:
    """Per split: R² with the peeked and the nested temperature, and the temperatures chosen."""
    out = {}
    for split in LIGAND_SPLITS:
        held = split.partition(":")[2].split("+")
        train = [t for t in ligands if t not in held]
        if similarity is None:
            r2 = r2_of(table, ligands, held, train, None, 1.0)
            out[split] = {"peeked": r2, "nested": r2}
            continue
        peeked = max(TEMPERATURES, key=lambda t: r2_of(table, ligands, held, train, similarity, t))
        nested = max(TEMPERATURES, key=lambda t: left_out(table, ligands, train, similarity, t))
        out[split] = {"peeked": r2_of(table, ligands, held, train, similarity, peeked), "peeked_T": peeked,
                      "nested": r2_of(table, ligands, held, train, similarity, nested), "nested_T": nested}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    table, ligands = yield_table()
    similarities: dict[str, Similarity | None] = {"uniform (mean of known ligands)": None,
                                                  "Morgan Tanimoto": tanimoto_similarity()}
    for depth in (0, 2, 4, 6):
        similarities[f"chem-small L{depth}"] = backbone_similarity(["--weights", "chem-small"], depth)
    similarities["tiny L0"] = backbone_similarity([], 0)
    rows = {label: scores(table, ligands, sim) for label, sim in similarities.items()}
    for row in rows.values():
        for reading in ("peeked", "nested"):
            row[f"mean_{reading}"] = float(np.mean([row[s][reading] for s in LIGAND_SPLITS]))
    results = {"benchmark": "ligand-out-of-sample R² of similarity-weighted means over known ligands",
               "date": datetime.now(UTC).isoformat(timespec="seconds"), "git_commit": git_commit(),
               "machine": machine(), "load_average": [round(x, 2) for x in os.getloadavg()],
               "splits": list(LIGAND_SPLITS), "temperatures": list(TEMPERATURES), "rows": rows}
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print("| similarity | " + " | ".join(s.partition(":")[2] for s in LIGAND_SPLITS)
          + " | mean, T peeked | mean, T nested |")
    print("|---" * (len(LIGAND_SPLITS) + 3) + "|")
    for label, row in rows.items():
        cells = " | ".join(f"{row[s]['nested']:.3f}" for s in LIGAND_SPLITS)
        print(f"| {label} | {cells} | {row['mean_peeked']:.3f} | {row['mean_nested']:.3f} |")
    print("\nPer-split R² with the nested T (leave one training ligand out).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

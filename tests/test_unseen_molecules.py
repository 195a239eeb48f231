"""Molecules a run never trained on: read as one placeholder, which training taught to mean the
average over the molecules it stood for (`data.unseen`, `--molecule-dropout`)."""

import json

import numpy as np
import pandas as pd
import pytest

from mistral_cl.cli import main
from mistral_cl.config import ModelConfig
from mistral_cl.data.reactions import ReactionDataset
from mistral_cl.data.smiles import canonical_reaction, reaction_components
from mistral_cl.data.sources import load_dataset
from mistral_cl.data.suzuki_components import suzuki_conditions
from mistral_cl.data.unseen import PLACEHOLDER, masked, molecules_of, unseen_count, with_molecule_dropout

MICRO = ModelConfig(vocab_size=32000, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                    hidden_dim=64)


def _screen() -> ReactionDataset:
    """Two aryl halides x three ligands, one product and one solvent in every reaction."""
    halides, ligands = ["Brc1ccccc1", "Ic1ccccc1"], ["CP(C)C", "CCP(CC)CC", "c1ccc(P(c2ccccc2)c2ccccc2)cc1"]
    smiles, yields = [], []
    for i, halide in enumerate(halides):
        for j, ligand in enumerate(ligands):
            smiles.append(canonical_reaction(f"{halide}.OB(O)c1ccccc1>{ligand}.CCO>c1ccc(-c2ccccc2)cc1"))
            yields.append(0.1 * (1 + i) + 0.2 * j)
    return ReactionDataset.build(smiles, yields, ["t"] * 6, np.arange(2, 8), "screen.csv")


def _molecules(reaction: str) -> list[str]:
    return [m for side in reaction_components(reaction) for m in side]


def test_a_copy_reads_one_varying_molecule_as_the_placeholder_and_learns_their_average():
    screen = _screen()
    read = with_molecule_dropout(screen, 1.0, seed=0)
    assert len(read) == 2 * len(screen)
    np.testing.assert_array_equal(read.smiles[:6], screen.smiles)  # the originals first, unchanged
    everywhere = set.intersection(*(set(_molecules(r)) for r in screen.smiles))
    for original, copy, y in zip(screen.smiles, read.smiles[6:], read.yields[6:], strict=True):
        before, after = _molecules(original), _molecules(copy)
        dropped = [m for m, n in zip(before, after, strict=True) if m != n]
        assert len(dropped) == 1 and after.count(PLACEHOLDER) == 1
        assert dropped[0] not in everywhere  # never the solvent, the boronic acid or the product
        rest = set(before) - {dropped[0]}
        alike = [i for i, r in enumerate(screen.smiles)
                 if any(set(_molecules(r)) - {m} == rest for m in _molecules(r))]
        assert len(alike) in (2, 3)  # the other halide, or the other two ligands, and itself
        assert y == pytest.approx(float(np.mean(screen.yields[alike])))
    np.testing.assert_array_equal(read.rows[6:], screen.rows)  # errors still name the source row
    assert with_molecule_dropout(screen, 0.0, seed=0) is screen


def test_reactions_are_alike_only_with_the_same_count_of_every_other_molecule():
    """A potassium base beside a trifluoroborate's potassium is a second `[K+]`: dropping the ligand of
    such a reaction averages over the ligands tried with that base, never over the reaction without a
    ligand and with a sodium base, whose molecules are the same but for the count of `[K+]`."""
    boron = "F[B-](F)(F)c1ccccc1.[K+]"
    rows = [("CP(C)C.[K+].[OH-]", 0.2), ("CCP(CC)CC.[K+].[OH-]", 0.4),
            ("CP(C)C.[Na+].[OH-]", 0.9), ("CCP(CC)CC.[Na+].[OH-]", 0.7), ("[Na+].[OH-]", 0.05)]
    screen = ReactionDataset.build(
        [canonical_reaction(f"Brc1ccccc1.{boron}>{agents}>c1ccc(-c2ccccc2)cc1") for agents, _ in rows],
        [y for _, y in rows], ["t"] * 5, np.arange(2, 7), "salts.csv")
    seen = {}
    for seed in range(12):
        read = with_molecule_dropout(screen, 1.0, seed=seed)
        for original, copy, y in zip(screen.smiles, read.smiles[5:], read.yields[5:], strict=True):
            before, after = _molecules(original), _molecules(copy)
            for ligand in ("CP(C)C", "CCP(CC)CC"):
                if ligand in before and ligand not in after:  # the ligand read as the placeholder
                    seen.setdefault("[Na+]" in before, set()).add(round(float(y), 6))
    assert seen == {False: {0.3}, True: {0.8}}


def test_the_share_of_copies_follows_the_rate_and_the_seed():
    screen = load_dataset("suzuki").subset(np.arange(400))
    a, b = with_molecule_dropout(screen, 0.5, seed=1), with_molecule_dropout(screen, 0.5, seed=1)
    np.testing.assert_array_equal(a.smiles, b.smiles)
    assert 150 < len(a) - len(screen) < 250
    assert not np.array_equal(a.smiles, with_molecule_dropout(screen, 0.5, seed=2).smiles)


def test_molecules_never_trained_on_are_read_as_the_placeholder():
    screen = _screen()
    known = molecules_of(screen.subset([0, 1, 3, 4]))  # the third ligand never trained
    read = masked(screen, known)
    np.testing.assert_array_equal(read.smiles[[0, 1, 3, 4]], screen.smiles[[0, 1, 3, 4]])
    for i in (2, 5):
        assert _molecules(read.smiles[i]).count(PLACEHOLDER) == 1
        assert "c1ccc(P(c2ccccc2)c2ccccc2)cc1" not in _molecules(read.smiles[i])
    assert unseen_count(screen, known) == 2 and unseen_count(read, known) == 0
    np.testing.assert_array_equal(masked(read, known).smiles, read.smiles)  # the placeholder is known


@pytest.fixture(scope="module")
def screen_csv(tmp_path_factory):
    """60 Suzuki reactions without the ligand P(Cy)3, and 6 with it (the queries)."""
    dataset = load_dataset("suzuki")
    ligand = np.array([suzuki_conditions(s)["ligand"] for s in dataset.smiles])
    folder = tmp_path_factory.mktemp("screen")
    seen, new = np.flatnonzero(ligand != "P(Cy)3")[:60], np.flatnonzero(ligand == "P(Cy)3")[:6]
    pd.DataFrame({"rxn": dataset.smiles[seen], "yield": 100 * dataset.yields[seen]}).to_csv(
        folder / "seen.csv", index=False)
    pd.DataFrame({"rxn": dataset.smiles[new]}).to_csv(folder / "new.csv", index=False)
    return folder


def _train(folder, run, *extra):
    shapes = folder / "micro.json"
    shapes.write_text(json.dumps(MICRO.to_hf_config()))
    return main(["train", "--data", str(folder / "seen.csv"), "--model", str(shapes), "--epochs", "1",
                 "--batch-size", "16", "--head-heads", "2", "--head-pool", "molecules",
                 "--head-context", "molecule", *extra, "--out", str(run), "--no-progress"])


def test_a_run_reads_a_new_ligand_as_the_placeholder_when_it_predicts(capsys, screen_csv, tmp_path):
    run = tmp_path / "run"
    assert _train(screen_csv, run, "--molecule-dropout", "0.5") == 0
    known = set(json.loads((run / "molecules.json").read_text()))
    seen = pd.read_csv(screen_csv / "seen.csv")["rxn"]
    tested = set(pd.read_csv(run / "predictions.csv")["reaction"])
    trained = [r for r in seen if r not in tested]
    assert len(trained) + len(tested) == 60
    assert known == molecules_of(ReactionDataset.build(trained, np.zeros(len(trained)), ["t"] * len(trained),
                                                       np.arange(len(trained)), "seen.csv"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_train"] + metrics["n_test"] == 60 and metrics["n_train_placeholder_copies"] > 0
    assert metrics["n_test_with_unseen_molecules"] == sum(bool(set(_molecules(r)) - known) for r in tested)
    held_out = pd.read_csv(run / "predictions.csv")
    assert PLACEHOLDER not in ".".join(held_out["reaction"])  # the reactions as the lab wrote them

    new = pd.read_csv(screen_csv / "new.csv")
    by_hand = tmp_path / "by_hand.csv"
    pd.DataFrame({"rxn": [">".join(".".join(m if m in known else PLACEHOLDER for m in side)
                                   for side in reaction_components(r)) for r in new["rxn"]]}).to_csv(
        by_hand, index=False)
    assert all(PLACEHOLDER in r for r in pd.read_csv(by_hand)["rxn"])
    # (read back, the hand-masked reactions are canonicalised, which moves `*` within the string:
    # the molecule head reads a sum over molecules, so only which molecules are there matters)
    assert main(["predict", "--run", str(run), str(screen_csv / "new.csv"),
                 "--output", str(tmp_path / "new.out.csv")]) == 0
    assert "6 of 6 reactions hold molecules the run never trained on" in capsys.readouterr().err
    assert main(["predict", "--run", str(run), str(by_hand), "--output", str(tmp_path / "hand.out.csv")]) == 0
    column = "predicted_yield_percent"
    np.testing.assert_allclose(pd.read_csv(tmp_path / "new.out.csv")[column],
                               pd.read_csv(tmp_path / "hand.out.csv")[column], atol=1e-6)

    (run / "molecules.json").write_text("{not json")
    assert main(["predict", "--run", str(run), str(screen_csv / "new.csv"),
                 "--output", str(tmp_path / "again.csv")]) == 2
    assert not (tmp_path / "again.csv").exists()


def test_without_molecule_dropout_a_new_ligand_is_read_as_written(screen_csv, tmp_path):
    run = tmp_path / "run"
    assert _train(screen_csv, run) == 0
    assert not (run / "molecules.json").exists()
    assert json.loads((run / "metrics.json").read_text())["n_train_placeholder_copies"] == 0


@pytest.mark.parametrize("argv", [["train", "--molecule-dropout", "1.5"],
                                  ["continual", "--molecule-dropout", "0.5"]])
def test_molecule_dropout_out_of_range_or_in_a_continual_run_is_a_clear_error(capsys, screen_csv, tmp_path,
                                                                              argv):
    try:
        code = main([*argv, "--data", str(screen_csv / "seen.csv"), "--out", str(tmp_path / "run")])
    except SystemExit as exit_:  # argparse: continual has no such option
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and "--molecule-dropout" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()

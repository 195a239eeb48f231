"""The ligand-similarity benchmark: its readings of the known ligands' yields, and a nested choice
of T that never sees the held-out ligands."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ligand_similarity  # noqa: E402

from mistral_cl.data.smiles import canonical_smiles  # noqa: E402
from mistral_cl.data.suzuki_components import NONE  # noqa: E402
from mistral_cl.scores import regression_scores  # noqa: E402

LIGANDS = [NONE, "a", "b", "c", "new"]
TRAIN = [NONE, "a", "b", "c"]


def _table(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 100, size=(40, len(LIGANDS)))


def _similarity(table: dict[tuple[str, str], float]):
    def similarity(x: str, y: str) -> float:
        return table.get((x, y), table.get((y, x), 0.0))
    return similarity


def test_the_plain_means_count_none_or_not():
    table = _table()
    with_none = ligand_similarity.mean_over(True)(table, LIGANDS, ["new"], TRAIN, 0.0)[0]
    without = ligand_similarity.mean_over(False)(table, LIGANDS, ["new"], TRAIN, 0.0)[0]
    np.testing.assert_allclose(with_none, table[:, :4].mean(axis=1))
    np.testing.assert_allclose(without, table[:, 1:4].mean(axis=1))
    infinite = ligand_similarity.weighted(_similarity({("new", "b"): 1.0}))(table, LIGANDS, ["new"], TRAIN,
                                                                            np.inf)[0]
    np.testing.assert_allclose(infinite, without)


def test_a_sharp_similarity_predicts_with_the_nearest_known_ligand_and_never_with_none():
    table = _table(1)
    table[:, 0] = table[:, 4]  # `none` yields exactly like the new ligand: it must get no weight
    similarity = _similarity({("new", "a"): 0.2, ("new", "b"): 0.9, ("new", "c"): 0.1})
    weighted = ligand_similarity.weighted(similarity)
    r2 = ligand_similarity.r2_of(weighted, table, LIGANDS, ["new"], TRAIN, 0.001)
    assert r2 == pytest.approx(regression_scores(table[:, 4], table[:, 2])["r2"])
    assert r2 < 0.5  # independent random columns: far from the perfect score `none` would give


def test_ridge_offsets_follow_a_linear_code_and_a_large_penalty_gives_the_mean():
    table = _table(2)
    codes = {"a": np.array([0.0]), "b": np.array([1.0]), "c": np.array([2.0]), "new": np.array([3.0])}
    base = table[:, 1:4].mean(axis=1)
    for name, code in codes.items():  # each ligand's offset from the mean is 10 × its code minus 10
        table[:, LIGANDS.index(name)] = base + 10.0 * code[0] - 10.0
    table[:, 1:4] += np.random.default_rng(3).normal(0, 1e-9, size=(40, 3))
    ridge = ligand_similarity.ridge_offset(codes)
    np.testing.assert_allclose(ridge(table, LIGANDS, ["new"], TRAIN, 1e-9)[0], base + 20.0, atol=1e-4)
    np.testing.assert_allclose(ridge(table, LIGANDS, ["new"], TRAIN, 1e12)[0], base, atol=1e-4)


def test_the_nested_choice_ignores_the_held_out_ligands_and_the_peeked_one_does_not(monkeypatch):
    table = _table(4)
    table[:, 3] = table[:, 1] + 1.0  # c yields like a, so sharp weights predict the training ligands well
    table[:, 4] = table[:, 2]  # and the held-out ligand yields like b
    similarity = _similarity({("a", "c"): 0.9, ("a", "b"): 0.1, ("b", "c"): 0.1,
                              ("new", "b"): 0.1, ("new", "a"): 0.9, ("new", "c"): 0.9})
    monkeypatch.setattr(ligand_similarity, "LIGAND_SPLITS", ("ligand:new",))
    monkeypatch.setattr(ligand_similarity, "held_ligands", lambda split: ["new"])
    settings = (np.inf, 0.01)
    first = ligand_similarity.scores(ligand_similarity.weighted(similarity), table, LIGANDS, settings)
    assert first["ligand:new"]["nested_setting"] == 0.01  # a and c predict each other when sharp
    assert first["ligand:new"]["peeked_setting"] == np.inf  # sharp weights point `new` at a and c, not b
    assert first["ligand:new"]["peeked"] > first["ligand:new"]["nested"]
    table[:, 4] = table[:, 1]  # now the held-out ligand yields like a: the peeked choice moves
    second = ligand_similarity.scores(ligand_similarity.weighted(similarity), table, LIGANDS, settings)
    assert second["ligand:new"]["nested_setting"] == 0.01
    assert second["ligand:new"]["peeked_setting"] == 0.01


def _ligand_texts() -> list[str]:
    """The ligands as the rxnfp readings write them: canonical SMILES as a reaction without product."""
    return [canonical_smiles(s) + ">>" for s in ligand_similarity.LIGANDS.values()]


def test_rxnfp_tokens_spell_every_reaction_and_ligand_of_the_screen():
    table, ligands, reactions = ligand_similarity.screen()
    assert table.shape == (len(reactions), len(ligands)) == (480, 12)
    for text in [r for row in reactions for r in row] + _ligand_texts():
        assert "".join(ligand_similarity.RXNFP_TOKENS.findall(text)) == text
    assert ligand_similarity.RXNFP_TOKENS.findall("[Pd]~CC(=O)O.Cl>>Br") == [
        "[Pd]", "~", "C", "C", "(", "=", "O", ")", "O", ".", "Cl", ">>", "Br"]


def test_rxnfp_readings_count_unknown_tokens_ignore_padding_and_centre_the_in_reaction_codes(tmp_path):
    import torch
    import transformers

    _, ligands, reactions = ligand_similarity.screen()
    reactions = reactions[:40]  # the reading's arithmetic, on fewer rows
    texts = [r for row in reactions for r in row] + _ligand_texts()
    tokens = sorted({t for text in texts for t in ligand_similarity.RXNFP_TOKENS.findall(text)})
    tokens.remove("Br")  # one token left out: counted as outside the vocabulary
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *tokens]
    folder = tmp_path / "models"
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocabulary), hidden_size=16, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=32)
    transformers.BertModel(config).save_pretrained(folder / "bert_x")
    (folder / "bert_x" / "vocab.txt").write_text("\n".join(vocabulary) + "\n")

    read = ligand_similarity.RxnfpReader(folder, "bert_x")
    readings = ligand_similarity.rxnfp_codes(read, reactions, ligands, batch=64)
    assert read.unknown == sum(t == "Br" for row in reactions for r in row[1:]
                               for t in ligand_similarity.RXNFP_TOKENS.findall(r))
    assert read.unknown > 0
    assert set(readings["alone"]) == set(readings["in reactions"]) == set(ligand_similarity.LIGANDS)
    np.testing.assert_allclose(sum(readings["in reactions"].values()), 0.0, atol=1e-9)
    # smaller batches, padded differently, give the same codes
    again = ligand_similarity.rxnfp_codes(read, reactions, ligands, batch=7)
    for name in ligand_similarity.LIGANDS:
        np.testing.assert_allclose(again["in reactions"][name], readings["in reactions"][name], atol=1e-5)
    # a short text read alone, unpadded, gets the state it gets beside a long one in a padded batch
    short, long = "P(C)C>>", reactions[0][1]
    np.testing.assert_allclose(read([short])[0], read([short, long])[0], atol=1e-5)
    assert not np.allclose(read([short])[0], read([long])[0], atol=1e-3)
    with pytest.raises(ValueError, match="longer than rxnfp's 512 positions"):
        read(["C" * 600 + ">>"])


def test_rxnfp_missing_is_a_usage_error_before_anything_is_read_or_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ligand_similarity, "rxnfp_models",
                        lambda: "rxnfp not installed (pip install --no-deps rxnfp==0.1.0)")
    monkeypatch.setattr(ligand_similarity, "screen", lambda: pytest.fail("read the screen before the check"))
    with pytest.raises(SystemExit) as stop:
        ligand_similarity.main(["--rxnfp", "--results", str(tmp_path / "out.json")])
    assert stop.value.code == 2
    assert "--rxnfp: rxnfp not installed (pip install --no-deps rxnfp==0.1.0)" in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_the_readme_names_the_rxnfp_rows_only_when_they_ran():
    import readme

    row = {s: {"nested": 0.1} for s in ligand_similarity.LIGAND_SPLITS}
    row |= {"mean_peeked": 0.2, "mean_nested": 0.1}
    neighbours = {name: ["a", "b", "c"] for name in ligand_similarity.LIGANDS}
    result = {"date": "2026-12-07T00:00:00+00:00", "git_commit": "0" * 40, "machine": {},
              "splits": list(ligand_similarity.LIGAND_SPLITS), "rows": {"mean of known ligands": row},
              "nearest_ligands": {"chem-small L0": neighbours},
              "nearest_ligands_by_yield_correlation": neighbours, "rxnfp": "not run (--rxnfp)"}
    assert "`rxnfp` rows" not in readme.ligand_similarity_section(result)
    result["rxnfp"] = {"models": ["bert_pretrained"],
                       "tokens_outside_vocabulary": {"rxnfp bert_pretrained": 3}}
    text = readme.ligand_similarity_section(result)
    assert "`rxnfp` rows" in text and "rxnfp bert_pretrained 3." in text


def test_a_backbone_is_named_with_its_train_options_and_depths_it_has():
    assert ligand_similarity.parse_backbone(" mine =--weights chem-small", "last,0,2,2") == (
        "mine", ["--weights", "chem-small"], [0, 2, 6])
    for text, depths, message in [("no-options", "0", "is not LABEL=OPTIONS"),
                                  ("=--weights chem-small", "0", "is not LABEL=OPTIONS"),
                                  ("mine=--weights chem-small", "7", "from 0 to 6"),
                                  ("mine=--weights chem-small", "-1", "from 0 to 6"),
                                  ("mine=--weights chem-small", " , ", "names no depth")]:
        with pytest.raises(ValueError, match=message):
            ligand_similarity.parse_backbone(text, depths)


def test_a_bad_backbone_is_a_usage_error_before_anything_is_read(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ligand_similarity, "screen", lambda: pytest.fail("read the screen before the check"))
    for backbone, message in [("mine=--weights " + str(tmp_path / "absent"), "weights directory not found"),
                              ("mine=--weights chem-small", "from 0 to 6")]:
        with pytest.raises(SystemExit) as stop:
            ligand_similarity.main(["--backbone", backbone, "--depths", "0,9",
                                    "--results", str(tmp_path / "out.json")])
        assert stop.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_backbone_codes_are_unit_vectors_per_depth_from_one_backbone():
    codes = ligand_similarity.backbone_codes([], [0, 1])
    assert set(codes) == {0, 1} and set(codes[0]) == set(ligand_similarity.LIGANDS)
    for depth in (0, 1):
        for code in codes[depth].values():
            assert np.linalg.norm(code) == pytest.approx(1.0)
    assert not np.allclose(codes[0]["XPhos"], codes[1]["XPhos"])
    np.testing.assert_allclose(ligand_similarity.backbone_codes([], [0])[0]["XPhos"], codes[0]["XPhos"])


def test_a_backbone_in_hugging_face_format_is_read_as_transformers_reads_it(tmp_path):
    """The path Mistral-7B's weights take (`--backbone 'LABEL=--weights DIR'`), on a tiny random
    checkpoint that transformers writes: each depth's code is transformers' `hidden_states[depth]`
    averaged over the ligand's tokens."""
    import dataclasses

    import torch
    from hf_fixtures import GQA, hf_mistral

    from mistral_cl.runs import tokenizer_for

    config = dataclasses.replace(GQA, vocab_size=32000, max_seq_len=256, sliding_window=256)
    hf_mistral(config).save_pretrained(tmp_path, safe_serialization=True)
    label, options, depths = ligand_similarity.parse_backbone(f"hf=--weights {tmp_path}", "0,1,last")
    assert (label, depths) == ("hf", [0, 1, 2])
    codes = ligand_similarity.backbone_codes(options, depths)
    transformers_model = hf_mistral(config)
    tokenizer = tokenizer_for(ligand_similarity.train_settings(options))
    for name in ("XPhos", "dppf"):
        ids = torch.tensor([tokenizer.encode(canonical_smiles(ligand_similarity.LIGANDS[name]))])
        with torch.no_grad():
            states = transformers_model(input_ids=ids, output_hidden_states=True).hidden_states
        for depth in depths:
            expected = states[depth][0].mean(0).numpy().astype(np.float64)
            np.testing.assert_allclose(codes[depth][name], expected / np.linalg.norm(expected), atol=2e-3)

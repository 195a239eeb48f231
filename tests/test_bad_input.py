"""What bad input gets, in the data layer: an error naming the file, the rows and the column, with what
to do, or, for input that is valid but doubtful, a warning. Never a silently wrong reading."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mistral_cl.cli import in_flags
from mistral_cl.data.reactions import read_csv
from mistral_cl.data.sources import DataConfig, describe, load_dataset
from mistral_cl.data.tasks import TaskStream, random_split, split_by_task
from mistral_cl.errors import InputError, InputWarning


def reaction(n: int, halide: str = "Br") -> str:
    """A distinct valid reaction for each n >= 1 (an alkyl chain of n carbons)."""
    return f"{'C' * n}{halide}.OB(O)c1ccccc1>>{'C' * n}c1ccccc1"


def table(tmp_path: Path, rows: list[dict], name: str = "data.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def shown(error: Exception) -> str:
    """The message as the command line prints it: the config fields it names written as flags."""
    return in_flags(str(error))


def error_of(call, *args, **kwargs) -> InputError:
    with pytest.raises(InputError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- 1. one reaction, one label ----------------------------------------------------------------


def test_the_same_reaction_with_two_yields_is_an_error_listing_the_conflicting_rows(tmp_path):
    swapped = "OB(O)c1ccccc1.CBr>>Cc1ccccc1"  # reaction(1), its reactants written the other way round
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 50}, {"rxn": reaction(2), "yield": 60},
                            {"rxn": swapped, "yield": 70}])
    error = error_of(read_csv, path)
    assert error.rows == [2, 4] and error.column == "rxn" and str(path) in shown(error)
    assert "rows 2, 4: yields 50, 70" in shown(error)
    assert "--duplicates mean" in shown(error) and "--duplicates first" in shown(error)


def test_the_same_reaction_in_two_tasks_is_a_conflict_too(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 50, "pair": "A"},
                            {"rxn": reaction(1), "yield": 50, "pair": "B"}])
    error = error_of(read_csv, path, task_columns=("pair",))
    assert error.rows == [2, 3] and "tasks 'A', 'B'" in shown(error)


def test_identical_repeats_are_merged_into_the_first_row_with_a_warning(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 50}, {"rxn": reaction(2), "yield": 60},
                            {"rxn": reaction(1), "yield": "50.0"}])
    with pytest.warns(InputWarning, match="row 4.*repeat an earlier row") as caught:
        dataset = read_csv(path)
    assert str(path) in str(caught[0].message)
    assert dataset.rows.tolist() == [2, 3] and len(set(dataset.smiles.tolist())) == 2


@pytest.mark.parametrize(("policy", "expected"), [("mean", 0.6), ("first", 0.5)])
def test_duplicates_mean_or_first_resolve_a_conflict_with_a_warning(tmp_path, policy, expected):
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 50}, {"rxn": reaction(2), "yield": 10},
                            {"rxn": reaction(1), "yield": 70}])
    with pytest.warns(InputWarning, match=f"`duplicates={policy}`"):
        dataset = read_csv(path, duplicates=policy)
    assert dataset.rows.tolist() == [2, 3]
    np.testing.assert_allclose(dataset.yields, [expected, 0.1], rtol=1e-6)


def test_no_reaction_ever_lands_on_both_sides_of_a_split(tmp_path):
    rows = [{"rxn": reaction(n), "yield": 3 * n, "task": "A" if n % 2 else "B"} for n in range(1, 31)]
    path = table(tmp_path, rows + rows)  # every row twice, as a copy-paste slip would leave them
    with pytest.warns(InputWarning, match="30 row"):
        dataset = read_csv(path, task_columns=("task",))
    assert len(dataset) == 30
    train, test = random_split(dataset, 0.3, seed=0)
    assert not set(train.smiles) & set(test.smiles)
    for task in split_by_task(dataset, 0.3, seed=0):
        assert not set(task.train.smiles) & set(task.test.smiles)


# --- 3. the yield unit is never guessed silently -----------------------------------------------


def test_one_yield_above_1_among_fractions_is_refused_as_an_unclear_unit(tmp_path):
    rows = [{"rxn": reaction(n), "yield": round(0.05 * n, 2)} for n in range(1, 11)]
    rows[6]["yield"] = 1.5
    path = table(tmp_path, rows)
    error = error_of(read_csv, path)
    assert error.rows == [8] and error.column == "yield"
    assert "unit is unclear" in shown(error) and "--yield-unit percent" in shown(error)


def test_auto_reads_percent_when_yields_above_1_prevail_and_says_so(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(n), "yield": v} for n, v in ((1, 0.5), (2, 45), (3, 80))])
    dataset = read_csv(path)
    np.testing.assert_allclose(dataset.yields, [0.005, 0.45, 0.8], rtol=1e-6)
    assert dataset.yield_unit == "percent"
    line = in_flags(describe(dataset, DataConfig(str(path))))
    assert "percent" in line and "detected" in line and "--yield-unit" in line


def test_a_stated_fraction_unit_refuses_values_above_1_and_names_the_flag(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 0.4}, {"rxn": reaction(2), "yield": 40}])
    error = error_of(read_csv, path, yield_unit="fraction")
    assert error.rows == [3] and "outside [0, 1]" in shown(error) and "--yield-unit percent" in shown(error)


def test_percent_yields_that_all_lie_within_0_and_1_are_read_as_stated_with_a_warning(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 0.43}, {"rxn": reaction(2), "yield": 0.2}])
    with pytest.warns(InputWarning, match="every yield lies within \\[0, 1\\].*run's unit"):
        dataset = read_csv(path, yield_unit="percent", unit_reason="the run's unit")
    np.testing.assert_allclose(dataset.yields, [0.0043, 0.002], rtol=1e-6)


# --- 5. infinite yields --------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "1e400"])
def test_infinite_yields_are_errors_not_0_or_100_percent(tmp_path, value):
    path = table(tmp_path, [{"rxn": reaction(1), "yield": 50}, {"rxn": reaction(2), "yield": value}])
    error = error_of(read_csv, path)
    assert error.rows == [3] and error.column == "yield" and "infinite" in shown(error)


# --- 7, 8. splits that cannot be scored --------------------------------------------------------


def test_a_task_too_small_to_split_names_its_file_and_rows_and_a_way_out(tmp_path):
    rows = [{"rxn": reaction(n), "yield": 5 * n, "task": "big"} for n in range(1, 11)]
    rows.append({"rxn": reaction(1, "I"), "yield": 40, "task": "tiny"})
    path = table(tmp_path, rows)
    dataset = read_csv(path, task_columns=("task",))
    error = error_of(TaskStream.from_dataset, dataset)
    assert str(path) in shown(error) and error.rows == [12] and "task 'tiny' has 1 reaction" in shown(error)
    assert "leave it out of the stream" not in shown(error) and "--task-order" in shown(error)
    # ... and the way out works: an explicit order leaves the task out without splitting it.
    assert TaskStream.from_dataset(dataset, order=["big"]).keys == ["big"]


def test_a_test_fraction_that_holds_out_a_single_reaction_is_refused(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(n), "yield": 2 * n} for n in range(1, 41)])
    dataset = read_csv(path)
    for call in (lambda: random_split(dataset, 0.02), lambda: split_by_task(dataset, 0.02)):
        error = error_of(call)
        assert "leaves 1 test reaction" in shown(error) and "--test-fraction 0.04" in shown(error)
        assert str(path) in shown(error)


def test_a_held_out_set_of_equal_yields_is_warned_about(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(n), "yield": 0 if n > 1 else 5} for n in range(1, 11)])
    dataset = read_csv(path)
    with pytest.warns(InputWarning, match="R² is undefined"):
        split_by_task(dataset, 0.3, seed=0)


# --- 10. messages that say what is wrong -------------------------------------------------------


@pytest.mark.parametrize(("separator", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_separated_by_semicolons_or_tabs_is_told_about_the_separator(tmp_path, separator, name):
    path = tmp_path / "data.csv"
    path.write_text(f"rxn{separator}yield\n{reaction(1)}{separator}50\n")
    error = error_of(read_csv, path)
    assert f"separated by {name}" in shown(error) and "comma" in shown(error) and error.rows == [1]


def test_a_latin1_file_names_the_row_and_column_of_the_first_bad_byte(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(f"rxn,yield,note\n{reaction(1)},5,ok\n{reaction(2)},6,café\n".encode("latin-1"))
    error = error_of(read_csv, path)
    assert error.rows == [3] and error.column == "note" and "UTF-8" in shown(error)


def test_smiles_without_reaction_arrows_get_their_own_message(tmp_path):
    path = table(tmp_path, [{"rxn": "CCBr.OB(O)c1ccccc1", "yield": 5}, {"rxn": reaction(2), "yield": 6},
                            {"rxn": "CC(C>>CC", "yield": 7}])
    message = str(error_of(read_csv, path))
    assert "column 'rxn', row(s) 2: not a reaction SMILES" in message and "'>>'" in message
    assert "column 'rxn', row(s) 4: RDKit cannot parse a molecule" in message


def test_a_directory_is_named_as_a_directory_not_a_missing_file(tmp_path):
    (tmp_path / "batch.csv").write_text("rxn,yield\n")
    error = error_of(read_csv, tmp_path)
    assert "is a directory" in shown(error) and "batch.csv" in shown(error)


def test_hints_name_the_command_line_flags(tmp_path):
    path = table(tmp_path, [{"reaction": reaction(1), "yield": 5}])
    error = error_of(read_csv, path)
    assert "`data.smiles_column`" in error.hint  # the library names the setting ...
    assert "--smiles-column" in shown(error) and "smiles_column=" not in shown(error)  # ... the CLI its flag
    error = error_of(load_dataset, "suzuki", smiles_column="rxn")
    assert "--smiles-column does not apply to suzuki" in shown(error)


def test_blank_lines_keep_the_spreadsheet_row_numbers(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(f"rxn,yield\n{reaction(1)},5\n\n,\n{reaction(2)},NaN\n")
    assert error_of(read_csv, path).rows == [5]


def test_a_valid_file_raises_no_warning_and_its_stated_unit_is_reported(tmp_path):
    path = table(tmp_path, [{"rxn": reaction(n), "yield": 10 * n} for n in range(1, 8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        dataset = read_csv(path, yield_unit="percent")
        split_by_task(dataset, 0.3)
    assert "percent (0-100) (--yield-unit percent)" in in_flags(describe(dataset, DataConfig(
        str(path), yield_unit="percent")))

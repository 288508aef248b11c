"""Nuisance regressors of an fMRI run: found beside it (BIDS/fMRIPrep) or given with ``--confounds``.

fMRIPrep writes ``<entities>_desc-confounds_timeseries.tsv`` beside each preprocessed run
(``<entities>_space-..._desc-preproc_bold.nii.gz``); the entities before ``_space-``/``_desc-``/
``_bold`` name it. ``--confounds FILE`` gives one file for every run instead: a TSV with a header
(the columns chosen as below) or a plain numeric text file (every column used).

Columns: those of ``--confounds-columns`` present in the table (default the six motion
parameters), plus ``<name>_derivative1`` for each when the table has it. A derivative's first
row is ``n/a`` in fMRIPrep output; missing values become 0 (what nilearn's ``load_confounds``
does). A table whose row count differs from the run's volumes is a `ShardError` naming the table:
regressing misaligned confounds would silently corrupt the series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError, ShardOptions

SUFFIX = "_desc-confounds_timeseries.tsv"


@dataclass
class Confounds:
    """Regressors ``values`` [T, K] (float64) named ``columns``, read from ``path``."""

    values: np.ndarray
    columns: list[str]
    path: Path


def bids_confounds_path(run: Path) -> Path | None:
    """The fMRIPrep confounds table beside ``run``, or None when there is none."""
    stem = re.split(r"_(?:space|desc|res|den)-|_bold", run.name, maxsplit=1)[0]
    candidate = run.with_name(stem + SUFFIX)
    return candidate if candidate.is_file() else None


def run_confounds(run: Path, n_volumes: int, options: ShardOptions) -> Confounds | None:
    """The confounds of ``run`` ([n_volumes, K]) or None; raises ``ShardError`` naming the table."""
    path = Path(options.confounds).expanduser() if options.confounds else bids_confounds_path(run)
    if path is None:
        return None
    if not path.is_file():
        raise ShardError(str(run), f"confounds file {path} does not exist")
    values, columns = _read(path, options.confounds_columns)
    if values.shape[0] != n_volumes:
        raise ShardError(
            str(run),
            f"confounds {path} has {values.shape[0]} rows for the run's {n_volumes} volumes "
            "(one row per volume is needed)",
        )
    return Confounds(values, columns, path)


def _read(path: Path, wanted: list[str]) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    try:
        first = path.read_text(encoding="utf-8-sig").splitlines()[:1]
    except (OSError, UnicodeDecodeError) as exc:
        raise ShardError(str(path), f"cannot read the confounds table: {exc}") from exc
    if not first:
        raise ShardError(str(path), "the confounds table is empty")
    if _numeric(first[0]):  # no header: every column
        try:
            values = np.loadtxt(path, ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise ShardError(str(path), f"cannot read the confounds as numbers: {exc}") from exc
        return np.nan_to_num(values), [f"column_{i}" for i in range(values.shape[1])]
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (ValueError, pd.errors.ParserError) as exc:
        raise ShardError(str(path), f"cannot read the confounds table: {exc}") from exc
    columns = [c for c in wanted if c in table.columns]
    columns += [f"{c}_derivative1" for c in list(columns) if f"{c}_derivative1" in table.columns]
    if not columns:
        raise ShardError(
            str(path),
            f"none of the confound columns {', '.join(wanted)} is in the table (its columns: "
            f"{', '.join(map(str, table.columns[:12]))}{' ...' if len(table.columns) > 12 else ''}); "
            "choose them with --confounds-columns",
        )
    try:
        values = table[columns].to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise ShardError(str(path), f"confound columns are not numeric: {exc}") from exc
    return np.nan_to_num(values), columns


def _numeric(line: str) -> bool:
    try:
        [float(v) for v in line.split()]
    except ValueError:
        return False
    return bool(line.split())

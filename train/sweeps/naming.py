"""Which Optuna study a local sweep run belongs to: named by the sweep file's content and its ``--set`` values.

    name = study_name(spec, ["--trainer.max_epochs=2"])            # eeg_pretrain-3f9c01aa
    name = study_name(spec, extra, sweep_id="lr-only")             # eeg_pretrain-lr-only: continue that study
    for line in describe_start(name, storage, spec.name, extra):   # new or continued, and the others here
        print(line)

Re-running the same command (same file content, same ``--set`` values in the same order) meets its
study again and continues it; a changed file or another ``--set`` is a new study, so old trials are
never reported as the result of a sweep that ran other settings. The file's content is hashed as
parsed YAML, so an edit of its comments alone keeps the study. ``--root`` (where the runs go) is not
part of the name: the study lives in that folder's database anyway, and agents on many machines
sharing a database may give different roots. An explicit ``--sweep-id ID`` names the study
``<file stem>-<ID>``: "continue this study", whatever the file and the ``--set`` values are now.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import optuna
from optuna.storages import BaseStorage

from neurotrain.train.sweeps.schema import SweepSpec

SET_ATTR = "set"  # the study's user attribute: the --set overrides its latest run was given


def default_sweep_id(spec: SweepSpec, overrides: Sequence[str] = ()) -> str:
    """8 hex digits of the file's content and the ``--set`` overrides (``--key=value`` strings, in order).

    Without overrides it is `SweepSpec.fingerprint` (the file alone), so a study started without
    ``--set`` is met again under the same name.
    """
    if not overrides:
        return spec.fingerprint
    blob = json.dumps({"sweep": spec.raw, "set": list(overrides)}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def study_name(spec: SweepSpec, overrides: Sequence[str] = (), sweep_id: str | None = None) -> str:
    """``<file stem>-<sweep_id>``; without ``sweep_id``, `default_sweep_id` of the file and the overrides."""
    return f"{spec.name}-{sweep_id or default_sweep_id(spec, overrides)}"


def describe_start(
    name: str, storage: str | BaseStorage, stem: str, overrides: Sequence[str], explicit: bool = False
) -> list[str]:
    """Lines saying whether study ``name`` is new or continued, before it is created or loaded.

    A continued study says how many trials it has, and (``explicit``: named by ``--sweep-id``) when
    its earlier trials ran with other ``--set`` values. A new one lists the other studies of the same
    sweep file (``<stem>-…``) in the storage and how to continue one of them (``--sweep-id``).
    """
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in summaries:
        this = summaries[name]
        lines = [f"sweep {name}: continuing its study ({this.n_trials} trial(s) so far)"]
        before = this.user_attrs.get(SET_ATTR)
        if explicit and before is not None and list(before) != list(overrides):
            lines.append(
                f"note: --sweep-id continues {name}, whose earlier trials ran with --set "
                f"{_shown(before)}; these run with {_shown(overrides)}"
            )
        return lines
    lines = [f"sweep {name}: a new study (no study of this file with these --set values yet)"]
    others = [s for n, s in sorted(summaries.items()) if n.startswith(f"{stem}-")]
    for s in others:
        lines.append(
            f"  an earlier study of {stem} here: {s.study_name} ({s.n_trials} trial(s), --set "
            f"{_shown(s.user_attrs.get(SET_ATTR, []))}); to continue it instead: "
            f"--sweep-id {s.study_name.removeprefix(f'{stem}-')}"
        )
    return lines


def _shown(overrides: Sequence[str]) -> str:
    """The overrides as a user typed them (``a.b=1 c=2``), or ``(none)``."""
    return " ".join(str(o).removeprefix("--") for o in overrides) or "(none)"

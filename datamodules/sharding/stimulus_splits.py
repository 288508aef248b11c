"""Train/val/test assignment by stimulus image (``neurotrain shard --stimuli DIR --split-by stimulus``).

Brain–image retrieval is scored on images the model never saw: every presentation of one image
(all repeats, in every recording) lands in one split. A stimulus is identified by its file name
relative to ``DIR`` (``Stimulus.name``, the ``stim_file`` each event of ``events.json`` carries),
so repeats of one image share one identity whichever recording or segment shows them.

The stimuli are every image file under ``DIR`` (``.png``/``.jpg``/``.jpeg``, any depth), so the
assignment depends on the folder and the seed only, never on which recordings a job processed
(``--part K/N`` jobs and their merge give one split). They are cut exactly like subjects
(``splits.assign_splits``: sha256 order of ``"<seed>:<name>"``, largest-remainder counts).
With this split every recording belongs to every stage (its shards are recorded with split
``"all"``); the loader keeps, per stage, only the epochs whose stimulus is in that stage's split
(``ShardDataModule``, from the manifest's ``splits.stimuli``). Normalisation statistics then come from all recordings (signal amplitudes,
no image and no label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neurotrain.datamodules.sharding.options import ShardError
from neurotrain.datamodules.sharding.splits import SPLITS, assign_splits
from neurotrain.datamodules.sharding.stimuli import IMAGE_EXTENSIONS

SPLIT_BY = ("subject", "stimulus")
ALL = "all"  # the shard/recording split under a stimulus split: read by every stage


def stimulus_names(stimuli_dir: str | Path) -> list[str]:
    """Every image under ``stimuli_dir`` as its name relative to it (posix), sorted."""
    root = Path(stimuli_dir).expanduser().resolve()
    names = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not names:
        raise ShardError(str(root), "--split-by stimulus: no .png/.jpg/.jpeg image in this folder")
    return names


def assign_stimulus_splits(
    names: list[str], ratios: tuple[float, float, float], seed: int = 0
) -> dict[str, str]:
    """Map each stimulus name to ``"train"``, ``"val"`` or ``"test"`` (deterministic from ``seed``)."""
    return dict(sorted(assign_splits(names, ratios, seed).items()))


def manifest_splits(stimuli_dir: str | Path, ratios: tuple[float, float, float], seed: int) -> dict[str, Any]:
    """The manifest's ``splits`` entry of a stimulus split.

    ``{"by": "stimulus", "seed", "ratios", "train": [], "val": [], "test": [], "stimuli": {name:
    split}, "counts": {split: n}}``: the subject lists stay empty (every subject is in every
    stage), ``stimuli`` holds the assignment.
    """
    of = assign_stimulus_splits(stimulus_names(stimuli_dir), ratios, seed)
    return {
        "by": "stimulus",
        "seed": seed,
        "ratios": dict(zip(SPLITS, ratios, strict=True)),
        **{sp: [] for sp in SPLITS},
        "stimuli": of,
        "counts": {sp: sum(v == sp for v in of.values()) for sp in SPLITS},
    }

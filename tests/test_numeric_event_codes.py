"""Numeric event codes (GDF cue codes 769/770, BrainVision markers) are usable in ``label_map``."""

from __future__ import annotations

from pathlib import Path

import pytest
import synthetic

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.sharding import shard_dataset
from neurotrain.train.cli import main


def test_numeric_codes_name_classes_and_inspect_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    events = [(1.0 + 2.0 * i, "769" if i % 2 else "770") for i in range(12)]
    src = synthetic.write_fif(tmp_path / "cues_raw.fif", seconds=30.0, events=events)
    out = tmp_path / "cues"
    shard_dataset([src], out, segment_seconds=30.0, split_ratios=(1.0, 0.0, 0.0))
    assert main(["inspect", str(out)]) == 0
    said = capsys.readouterr()
    assert '"769"(6),"770"(6)' in "".join((said.out + said.err).split())  # wrapping-proof
    # as YAML gives them: int keys
    dm = ShardDataModule(
        [str(out)], mode="epochs", tmin=0.0, tmax=0.5, label_map={769: 0, 770: 1}, train_split="all"
    )
    events_cut = dm.labelled_events("all")
    assert len(events_cut) == 12 and sorted({e["label"] for e in events_cut}) == [0, 1]
    dm.setup("fit")
    labels = [int(v) for b in dm.eval_dataloader("train") for v in b["labels"]]
    assert sorted(labels) == [0] * 6 + [1] * 6

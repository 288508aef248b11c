"""Helpers for the ShardDataModule tests: tiny shard datasets written by the real ``shard_dataset``.

Recordings are made by ``tests/synthetic.py`` (MNE writers), sharded with short segments so a
dataset of a few seconds still has several samples, and every split goes to ``train`` unless
asked otherwise. Also: a recorder model for Lightning runs and small tar surgery for corruption.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import synthetic
import torch

from neurotrain.datamodules.io.files import atomic_write_json, sha256_file
from neurotrain.datamodules.sharding import shard_dataset


def synthetic_shards(
    root: Path,
    name: str,
    subjects: list[str],
    names: list[str] | None = None,
    seconds: float = 40.0,
    sfreq: float = 128.0,
    events: list[tuple[float, str]] | None = None,
    segment_seconds: float = 20.0,
    split_ratios: tuple[float, float, float] = (1.0, 0.0, 0.0),
    evoked: dict[str, float] | None = None,
    **options: Any,
) -> Path:
    """Shard one FIF recording per subject (``names`` channels) into ``root/name``; return the folder.

    ``evoked``: label -> µV of a response after each such event (`synthetic.make_raw`).
    """
    src = root / f"{name}-src"
    src.mkdir(parents=True, exist_ok=True)
    files = [
        synthetic.write_fif(
            src / f"sub-{s}_task-{name}_raw.fif",
            seconds=seconds,
            sfreq=sfreq,
            names=names,
            seed=i,
            events=events,
            evoked=evoked,
        )
        for i, s in enumerate(subjects)
    ]
    out = root / name
    shard_dataset(
        files, out, segment_seconds=segment_seconds, split_ratios=split_ratios, dtype="float32", **options
    )
    return out


class Interrupted(Exception):
    """Raised by ``Recorder`` to kill a run mid-epoch."""


def manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder: Path, m: dict[str, Any]) -> None:
    atomic_write_json(folder / "manifest.json", m)


def rewrite_shard(folder: Path, shard: str, edit, update_manifest: bool = True) -> None:
    """Rewrite ``shard`` member by member through ``edit(name, bytes) -> bytes``; refresh its manifest entry."""
    path = folder / shard
    members = []
    with tarfile.open(path) as tf:
        for m in tf:
            data = tf.extractfile(m).read()
            members.append((m, edit(m.name, data)))
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for m, data in members:
            m.size = len(data)
            tf.addfile(m, io.BytesIO(data))
    if update_manifest:
        m = manifest(folder)
        for entry in m["shards"]:
            if entry["name"] == shard:
                entry["bytes"] = path.stat().st_size
                entry["sha256"] = sha256_file(path)
        write_manifest(folder, m)


def ids(loader) -> list[str]:
    return [i for b in loader for i in b["sample_id"]]


class Recorder(pl.LightningModule):
    """A one-parameter model that records the ``sample_id``s its training steps see.

    ``stop_after``: the training step at that global step raises ``Interrupted`` (a killed run).
    """

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[str] = []
        self.stop_after = stop_after

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.stop_after is not None and self.global_step >= self.stop_after:
            raise Interrupted
        self.seen += batch["sample_id"]
        return (self.w * batch["signal"].mean()).sum() + self.w.square().sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

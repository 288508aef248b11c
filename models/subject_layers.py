"""Per-subject input layers in front of a shared encoder (MindBridge-like subject adaptation).

Subjects rarely share inputs: fMRI subjects have their own voxel or parcel sets, EEG/iEEG subjects
their own montage, often without positions. `SubjectLayers` gives each subject one linear map from
its channels to ``channels`` shared virtual channels, so one encoder reads every subject in the
same layout (MindBridge's subject-wise embedders, reduced to one linear layer on the channel
axis; the papers' voxel-wise MLPs differ in depth, not in role):

    signal [B, C, T] (C slots, a subject's real channels where channel_mask is True)
      -> virtual [B, K, T] = W_s @ signal_b for each sample b of subject s   (W_s: [K, C])

The maps read only real channels (padded slots are zero), so subjects of different widths share
one batch; a batch with fewer slots than the layers read (a new subject's own dataset) is padded. The virtual channels carry no electrode positions (``position_mask`` False) and the
type of the sample's first real channel. The sample's rate, onsets and labels pass unchanged.

Adaptation to a new subject trains only that subject's map with everything else frozen
(``SupervisedModule(adapt_from=..., adapt_subjects=[...])``): the cheap, few-trial recipe of
MindBridge's "new subject" setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class SubjectLayersConfig:
    """``channels``: shared virtual channels K; ``subjects``/``in_channels``: the subjects with a
    layer and the channel slots they read (None: every subject of the datamodule and its
    ``c_max``, filled in when a fit starts and saved with the checkpoint)."""

    channels: int = 16
    subjects: list[str] | None = None
    in_channels: int | None = None


class SubjectLayers(nn.Module):
    """One ``Linear(in_channels -> channels)`` (no bias) on the channel axis per subject id."""

    def __init__(self, subjects: Iterable[str], in_channels: int, channels: int) -> None:
        super().__init__()
        if channels < 1 or in_channels < 1:
            raise ValueError(
                f"subject layers need channels >= 1 and in_channels >= 1, got {channels}, {in_channels}"
            )
        self.in_channels, self.channels = int(in_channels), int(channels)
        self.layers = nn.ModuleDict()
        for subject in subjects:
            self.add_subject(subject)

    @property
    def subjects(self) -> list[str]:
        return [_unkey(k) for k in self.layers]

    def add_subject(self, subject: str, scale: float = 1.0) -> None:
        """A fresh layer for ``subject``: normal weights of std ``scale / sqrt(in_channels)`` (1: the
        virtual channels start at the input's variance)."""
        layer = nn.Linear(self.in_channels, self.channels, bias=False)
        nn.init.normal_(layer.weight, std=scale / self.in_channels**0.5)
        self.layers[layer_key(subject)] = layer

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch with its signal keys replaced by the virtual channels (module docstring)."""
        signal = batch["signal"].float()  # [B, C, T]
        B, C, T = signal.shape
        mask = batch["channel_mask"]  # [B, C]
        if self.in_channels < C:
            raise ValueError(
                f"subject layers read {self.in_channels} channel slots; this batch has {C} "
                f"(set data.max_channels: {self.in_channels} or fewer channels)"
            )
        signal = torch.where(mask[..., None], signal, 0.0)
        if self.in_channels > C:  # a narrower dataset (a new subject): the missing slots are empty
            signal = torch.nn.functional.pad(signal, (0, 0, 0, self.in_channels - C))
        subjects = [str(s) for s in batch["subject"]]
        missing = sorted({s for s in subjects if layer_key(s) not in self.layers})
        if missing:
            raise KeyError(
                f"no subject layer for subject(s) {missing}; layers exist for {self.subjects}: adapt a "
                "model to new subjects with adapt_from + adapt_subjects"
            )
        out = signal.new_empty(B, self.channels, T)
        for s in sorted(set(subjects)):
            rows = torch.tensor([i for i, x in enumerate(subjects) if x == s], device=signal.device)
            out[rows] = torch.einsum("kc,bct->bkt", self.layers[layer_key(s)].weight, signal[rows])
        first = mask.float().argmax(dim=1)  # [B] the first real channel's slot
        types = batch["channel_types"].gather(1, first[:, None]).expand(B, self.channels)  # [B, K]
        adapted = dict(batch)
        adapted.update(
            signal=out,
            channel_mask=torch.ones(B, self.channels, dtype=torch.bool, device=signal.device),
            positions=torch.zeros(B, self.channels, 3, dtype=batch["positions"].dtype, device=signal.device),
            position_mask=torch.zeros(B, self.channels, dtype=torch.bool, device=signal.device),
            channel_types=types.contiguous(),
        )
        for key in ("orientations", "orientation_mask"):
            adapted.pop(key, None)  # coil normals belong to the real sensors
        return adapted


def layer_key(subject: str) -> str:
    """A ModuleDict key for a subject id (dots are not allowed in module names)."""
    return "s_" + str(subject).replace(".", "_dot_")


def _unkey(key: str) -> str:
    return key[2:].replace("_dot_", ".")


def subject_layers_config(value: SubjectLayersConfig | dict | None) -> SubjectLayersConfig | None:
    """A config from a dataclass, a dict (saved hparams, YAML) or None (no subject layers)."""
    if value is None or isinstance(value, SubjectLayersConfig):
        return value
    return SubjectLayersConfig(**value)


def datamodule_subjects(datamodule: Any) -> list[str]:
    """Every subject of a `ShardDataModule`'s manifests (all splits), sorted; [] without one."""
    subjects = {
        str(rec["subject"])
        for manifest in getattr(datamodule, "manifests", None) or []
        for rec in manifest.get("recordings", [])
        if rec.get("subject") is not None
    }
    return sorted(subjects)

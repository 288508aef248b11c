"""Brain responses grouped by stimulus image, and the images themselves, read from shards.

What the encoding and RSA protocols start from: the event epochs of a shard dataset with stimulus
images (``neurotrain shard --stimuli``), read through `ShardDataModule` exactly as a fit reads
them (the config's ``data`` section: ``tmin``/``tmax``, channels, normalisation), grouped per
subject and per image, with the images' encoded bytes as stored.

Per subject the responses are ``epochs`` float32 [n_stimuli, n_repeats, C, T]: the same
``n_repeats`` presentations of every image (the first ones, in stored order; an image shown
fewer times than that is left out and counted), channels in the subject's slot order. Encoding
targets are channels × time bins (`binned`): a response per channel is the mean over each of
``bins`` equal spans of the epoch.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class SubjectResponses:
    """One subject's epochs per image: ``epochs`` [n_stimuli, n_repeats, C, T] aligned with
    ``StimulusResponses.names``; ``positions`` [C, 3] (metres, NaN where unknown); ``types`` [C]
    (channel type names); ``dropped``: images left out (too few presentations)."""

    epochs: np.ndarray
    positions: np.ndarray
    types: list[str]
    dropped: list[str] = field(default_factory=list)

    def binned(self, bins: int) -> np.ndarray:
        """Targets [n_stimuli, n_repeats, C * bins]: the mean of each channel over ``bins`` equal
        time spans (channel-major: target ``c * bins + b``)."""
        from neurotrain.models.readouts import bin_edges  # the learned readouts' bins, exactly

        n, r, c, t = self.epochs.shape
        edges = bin_edges(t, bins)
        parts = [self.epochs[..., a:b].mean(-1) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        return np.stack(parts, axis=-1).reshape(n, r, c * bins)


@dataclass
class StimulusResponses:
    """Every subject's responses (``subjects``), the image ``names`` (sorted, the row order),
    their encoded ``images`` (bytes), the epoch's sample ``times`` [T] (s from the onset) and
    the sampling rate."""

    names: list[str]
    images: dict[str, bytes]
    subjects: dict[str, SubjectResponses]
    times: np.ndarray
    sfreq: float


def collect(dm: Any, stage: str = "test") -> StimulusResponses:
    """Read ``stage`` of an epochs-mode `ShardDataModule` into `StimulusResponses`.

    ``dm`` must be in epochs mode over shards with stimulus images; all of ``stage`` is read (the
    encoding and RSA protocols cross-validate over images themselves, so they read every split:
    build ``dm`` with ``test_split="all"``)."""
    from neurotrain.datamodules.format.channel_types import CHANNEL_TYPES

    of = dm.epoch_stimuli(stage)
    if not of:
        raise ValueError("these shards hold no epoch with a stimulus image: shard with --stimuli DIR")
    images = dm.stimulus_images(stage)
    by_subject: dict[str, dict[str, list[np.ndarray]]] = {}
    layout: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    sfreq, n_times = None, None
    for batch in dm.eval_dataloader(stage):
        signal = batch["signal"].numpy()  # [B, C, T]
        mask = batch["channel_mask"].numpy()
        for j, (sub, sid) in enumerate(zip(batch["subject"], batch["sample_id"], strict=True)):
            name = of.get(sid)
            if name is None:
                continue
            keep = mask[j]
            pos = np.where(batch["position_mask"].numpy()[j][:, None], batch["positions"].numpy()[j], np.nan)
            types = [CHANNEL_TYPES[int(t)] for t in batch["channel_types"].numpy()[j][keep]]
            if sub not in layout:
                layout[sub] = (keep, pos[keep], types)
            elif not np.array_equal(layout[sub][0], keep) or layout[sub][2] != types:
                raise ValueError(
                    f"subject {sub}: epochs with different channel sets; an encoding model needs one "
                    "set per subject (select channels with data.channels)"
                )
            by_subject.setdefault(sub, {}).setdefault(name, []).append(signal[j][keep])
            sfreq, n_times = float(batch["sfreq"][j]), signal.shape[-1]
    names = sorted({n for per in by_subject.values() for n in per})
    subjects = {}
    for sub, per in sorted(by_subject.items()):
        counts = Counter({n: len(per.get(n, [])) for n in names})
        repeats = max(1, _common_repeats(counts))
        dropped = sorted(n for n, c in counts.items() if c < repeats)
        if dropped:
            log.warning(
                "subject %s: %d images shown fewer than %d times are left out", sub, len(dropped), repeats
            )
        rows = [np.stack(per[n][:repeats]) if n in per and len(per[n]) >= repeats else None for n in names]
        shape = next(r for r in rows if r is not None).shape
        epochs = np.stack([r if r is not None else np.full(shape, np.nan, np.float32) for r in rows])
        _, pos, types = layout[sub]
        subjects[sub] = SubjectResponses(epochs.astype(np.float32), pos, types, dropped)
    if sfreq is None or n_times is None:
        raise ValueError("no epoch was read")
    tmin = float(dm.hparams.tmin)
    return StimulusResponses(names, images, subjects, tmin + np.arange(n_times) / sfreq, sfreq)


def _common_repeats(counts: Counter) -> int:
    """The presentation count every kept image has: the most common count, so one image shown
    once more or less does not cut every other image's repeats (those shown fewer are dropped)."""
    values = [c for c in counts.values() if c > 0]
    return Counter(values).most_common(1)[0][0] if values else 0


def kept(responses: SubjectResponses) -> np.ndarray:
    """bool [n_stimuli]: the images this subject has every repeat of."""
    return ~np.isnan(responses.epochs).any(axis=(1, 2, 3))

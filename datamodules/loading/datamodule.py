"""``ShardDataModule``: stream shard datasets as padded, normalised, resumable batches.

Configured from YAML through LightningCLI (the constructor signature is the schema)::

    data:
      class_path: neurotrain.datamodules.loading.datamodule.ShardDataModule
      init_args:
        datasets: [shards/eeg]
        window_seconds: 4.0
        batch_size: 64
        num_workers: 2

Batch (``B`` windows, ``C_max`` channel slots, ``T`` samples):

    signal          float32 [B, C_max, T]   normalised per channel type; 0 on padding
    channel_mask    bool    [B, C_max]      True where the slot holds a real channel
    positions       float32 [B, C_max, 3]   metres (head frame) or MNI; 0 where unknown
    position_mask   bool    [B, C_max]
    channel_types   int64   [B, C_max]      index into CHANNEL_TYPES, 0 = pad
    orientations    float32 [B, C_max, 3]   unit MEG coil normals (head frame); 0 where unknown
    orientation_mask bool   [B, C_max]      True where the slot has a coil normal (MEG sensors)
    sfreq           float32 [B]             samples per second (fMRI: 1 / TR)
    onset_s         float32 [B]             window start in its recording, seconds
    labels          int64   [B]             class of the event (epochs mode), else -1
    dataset         int64   [B]             which of ``datasets`` the window came from (index;
                                            ``dataset_names`` names them, e.g. for per-dataset losses)
    subject, recording, sample_id           list[str] of length B

Rates: every batch has one rate. Datasets stored at different rates need ``sfreq`` (e.g. 256):
segments at another rate are resampled to it as they are read (``loading/resample.py``: scipy's
polyphase resampler with its anti-alias filter), windows are cut in seconds on that grid, and
``sfreq``/``onset_s`` say the load rate. Without it, different rates are an error naming each
dataset's rates; at one rate nothing is resampled and batches are what they were without it.

Paired views, only when asked for (``images``, ``pair_channel_types``):

    image           float32 [B, 3, S, S]    the epoch's stimulus image (ImageNet-normalised)
    pair_signal ... pair_channel_types      the same windows through the pair channel types,
    pair_orientations, pair_orientation_mask  laid out like the main keys ([B, C_pair, T] ...)
    pair_sfreq

Manifests are read through ``format.manifest.load_manifest`` (a schema this version does not know
is refused, naming the file). Exact resume: ``state_dict()`` records (epoch, batches delivered
this epoch) from the trainer's own progress counters; after ``load_state_dict`` the next train
iteration starts at that batch (``loader.ShardLoader``). Every rank gets
``len(train_dataloader())`` batches (see ``plan``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader

from neurotrain.datamodules.loading.collate import Layout, make_layout, widest_kept
from neurotrain.datamodules.loading.dataset_names import dataset_names
from neurotrain.datamodules.loading.images import EventImages
from neurotrain.datamodules.loading.loader import ShardLoader, resume_position
from neurotrain.datamodules.loading.normalize import normalization_from_manifest, type_table
from neurotrain.datamodules.loading.participant_labels import LABEL_SOURCES, participant_labels
from neurotrain.datamodules.loading.plan import StreamConfig
from neurotrain.datamodules.loading.recentring import RECENTER_CHOICES, Recentring, RecentringFit
from neurotrain.datamodules.loading.remote import resolve
from neurotrain.datamodules.loading.resample import rate_ratio
from neurotrain.datamodules.loading.selection import apply_rule, event_id, load_selection
from neurotrain.datamodules.loading.streaming import ShardStream
from neurotrain.datamodules.loading.tar_index import CorruptShardError, Segment, SegmentReader, index_shard
from neurotrain.datamodules.loading.windows import (
    REJECT_REASONS,
    WindowSpec,
    common_sfreq,
    kept_events,
    loaded_grid,
    rejection_counts,
    window_counts,
)

__all__ = ["ShardDataModule", "ShardLoader"]

log = logging.getLogger(__name__)

VOLUME_BUFFER_BYTES = 64 * 2**20  # volumes held by one shuffle block (read whole; the next is read ahead)

Stage = Literal["train", "val", "test", "predict"]


class ShardDataModule(pl.LightningDataModule):
    """Windows (or event epochs) from one or more shard datasets, for any montage.

    Args:
        datasets: shard folders (each with a ``manifest.json``), or URLs of such folders: fsspec
            URLs (``https://``, ``s3://``, ...) or ``pipe:`` command templates with ``{}`` for the
            file name; their shards are staged into ``cache_dir`` as the splits set up need them.
        weights: per-dataset share of each training epoch (``None``: proportional to size).
        mode: ``"windows"`` (random crops in training, tiling in evaluation) or ``"epochs"``
            (one window per event in ``label_map``, from ``tmin`` to ``tmax`` around its onset).
        window_seconds: window length in windows mode.
        window_samples: windows mode, instead of ``window_seconds``: every window is this many
            samples **at its segment's stored rate**, so datasets at different rates (fMRI runs
            with TR 0.72, 1.35 and 2.5 s) mix in one batch without resampling; each window's
            rate is in the batch (``sfreq`` [B]) and the encoder places its patches in seconds.
            Windows then cover different durations (T x TR). Not with ``sfreq``.
        sfreq: the rate batches are delivered at (Hz). ``None`` (default): the datasets' one
            stored rate; datasets at different rates are then an error naming them. Set, every
            segment stored at another rate is resampled to it when read (polyphase, anti-alias
            filtered; ``loading/resample.py``), and windows (``window_seconds``, ``tmin``/``tmax``)
            are cut on that grid, so every dataset's windows span the same seconds. Datasets
            already at ``sfreq`` are read as without it (no cost, the same batches).
        tmin, tmax: epoch bounds in seconds relative to the event onset (epochs mode).
        label_map: event name -> class; ``None`` numbers the manifest's ``labels.names``. Names are
            the labels as stored (``neurotrain inspect`` lists them): annotation descriptions, or a
            file's numeric event codes, e.g. ``{769: 0, 770: 1}`` for GDF cue codes (numbers are
            taken as their text, ``"769"``).
        reject_bad_spans: epochs mode: leave out an epoch whose window ``[onset + tmin, onset +
            tmax)`` overlaps a span annotated ``bad*`` (any case, e.g. ``BAD_break``,
            ``bad_pylossless_ch_sd``: MNE's ``reject_by_annotation``; a zero-duration one counts as
            a point). Only the segment's own annotations are seen: a span that starts in the
            previous segment of the recording does not reject.
        include_next_event: epochs mode: ``False`` (default) leaves out an epoch whose window
            holds, after its onset, the onset of the next event in ``label_map`` (the next
            stimulus: the window would hold the response to it); events of the neighbouring
            segment are not seen. ``True`` keeps them. Counts: ``rejected_epochs``.
        target_channel: windows mode: a continuous regression target read from this stored channel
            (e.g. grip force ``MOV_RIGHT``; shard with ``--channel-types`` keeping it): the
            channel is never input, and each window's ``labels`` (float32) is its stored value at
            the window's last sample (``target_reduce: end``, decoding the present) or its mean
            over the window (``mean``), in its stored unit, not normalised. Every sample must
            hold it (an error names the sample and the channels it has).
        target_reduce: ``"end"`` or ``"mean"`` (see ``target_channel``).
        label_source: where ``labels`` come from. ``"events"`` (default): the event of each epoch
            (epochs mode; windows mode leaves windows unlabelled, -1). ``"participants"``: the
            subject's ``label_column`` value from the ``participants.tsv`` recorded at shard time,
            for every window or volume of the recording (windows mode): classes through ``label_map``
            (int64, -1 = none), else float32 regression targets (NaN = none); see
            ``loading/participant_labels.py``. Subject-level labels (age, group) for run-level
            fMRI or T1 models.
        label_column: the ``participants.tsv`` column ``label_source: participants`` reads.
        channels: keep these channels, slot ``i`` = ``channels[i]`` in every sample.
        channel_types: keep only channels of these MNE types.
        max_channels: ``C_max`` when ``channels`` is not given (default: the largest kept set).
        drop_bad_channels: leave channels listed in ``meta.bad_channels`` out (masked).
        normalize: apply the manifest statistics per channel type.
        normalization: a table recorded by an earlier run (a checkpoint) to use instead.
        recenter: ``"euclidean"`` re-centres each subject's windows after normalisation (Euclidean
            alignment: ``x <- R_s^{-1/2} x`` with ``R_s`` the subject's mean window covariance in
            that stage, fitted in a pass over the stage's windows at set-up; signals only, never
            labels; see ``datamodules/loading/recentring.py``). The cross-subject adaptation the
            evaluation's aligned baselines use, on the same epochs. ``"none"`` (default): off.
        batch_size: windows per batch.
        num_workers: batch builders; 0 builds them in the loop's own thread.
        worker_mode: ``"threads"`` (default) builds batches in threads of the training process:
            no fork per epoch and no copy through shared memory, the faster choice when reading
            and cutting dominate; ``"processes"`` uses DataLoader worker processes.
        shuffle_buffer: windows permuted together in training (also the unit dealt to workers).
        seed: fixes shuffling and crops; epoch ``e`` uses ``(seed, e)``.
        train_split, val_split, test_split, predict_split: manifest split names per stage
            (``"all"``: every shard, whatever its split). Datasets sharded with ``--split-by
            stimulus`` put every shard in every stage; each stage then keeps only the epochs
            whose stimulus image is in its split (``manifest.splits.stimuli``).
        selection: per stage, keep only some subjects or events of its split (evaluation folds;
            see ``datamodules/loading/selection.py``); the mapping or the path of a JSON file.
        verify: check each shard's sha256 against the manifest at setup.
        on_corrupt: ``"fail"`` stops with an error naming the shard/sample; ``"skip"`` drops it
            and counts the skipped samples (``skipped``, and a warning in the log).
        check_finite: reject segments with NaN/inf when they are read.
        images: add ``image`` float32 [B, 3, image_size, image_size], the stimulus image of each
            epoch's event (epochs mode; shards written with ``--stimuli``): RGB, resized, ImageNet
            mean/std normalised, for ``AlignmentModule(pair="image")``.
        image_size: side of the square images (default 224).
        pair_channel_types: add a second view of the same windows made of the channels of these
            types (``pair_signal``, ``pair_channel_mask``, ``pair_positions``,
            ``pair_position_mask``, ``pair_channel_types``, ``pair_orientations``,
            ``pair_orientation_mask``, ``pair_sfreq``), for
            ``AlignmentModule(pair="signal")``; the main view keeps ``channel_types``.
        cache_dir: where shards of remote datasets (URLs, ``pipe:`` templates) are staged before
            reading; default ``$NEUROTRAIN_CACHE/shards`` or ``~/.cache/neurotrain/shards``
            (see ``datamodules/loading/remote.py``).
    """

    def __init__(
        self,
        datasets: list[str],
        weights: list[float] | None = None,
        mode: Literal["windows", "epochs"] = "windows",
        window_seconds: float = 4.0,
        window_samples: int | None = None,
        sfreq: float | None = None,
        tmin: float = -0.2,
        tmax: float = 0.8,
        label_map: dict[str, int] | None = None,
        reject_bad_spans: bool = True,
        include_next_event: bool = False,
        target_channel: str | None = None,
        target_reduce: Literal["end", "mean"] = "end",
        label_source: Literal["events", "participants"] = "events",
        label_column: str | None = None,
        channels: list[str] | None = None,
        channel_types: list[str] | None = None,
        max_channels: int | None = None,
        drop_bad_channels: bool = True,
        normalize: bool = True,
        normalization: dict[str, Any] | None = None,
        recenter: Literal["none", "euclidean"] = "none",
        batch_size: int = 64,
        num_workers: int = 0,
        worker_mode: Literal["threads", "processes"] = "threads",
        shuffle_buffer: int = 1024,
        seed: int = 0,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        predict_split: str = "test",
        selection: dict[str, dict[str, Any]] | str | None = None,
        verify: bool = False,
        on_corrupt: Literal["skip", "fail"] = "fail",
        check_finite: bool = True,
        images: bool = False,
        image_size: int = 224,
        pair_channel_types: list[str] | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if weights is not None and len(weights) != len(datasets):
            raise ValueError(f"weights has {len(weights)} entries for {len(datasets)} datasets")
        if sfreq is not None and not sfreq > 0:
            raise ValueError(f"sfreq must be a positive rate in Hz, got {sfreq}")
        if window_samples is not None and (mode != "windows" or sfreq is not None or window_samples < 1):
            raise ValueError(
                "window_samples cuts windows mode at each segment's stored rate: a positive count, "
                "with mode='windows' and without sfreq"
            )
        if mode == "epochs" and not tmax > tmin:
            raise ValueError(f"tmax ({tmax}) must be greater than tmin ({tmin})")
        if images and mode != "epochs":
            raise ValueError("images pairs each event epoch with its stimulus: use mode='epochs'")
        if target_channel is not None and mode != "windows":
            raise ValueError("target_channel labels windows with a continuous value: use mode='windows'")
        if target_reduce not in ("end", "mean"):
            raise ValueError(f"target_reduce is 'end' or 'mean', got {target_reduce!r}")
        if target_channel is not None and channels is not None and target_channel in channels:
            raise ValueError(f"target_channel {target_channel!r} is also in channels: it cannot be input")
        if label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source is one of {', '.join(LABEL_SOURCES)}, got {label_source!r}")
        if (label_source == "participants") != (label_column is not None):
            raise ValueError("label_source: participants and label_column go together (the column to read)")
        if label_column is not None and mode != "windows":
            raise ValueError("label_source: participants labels whole recordings: use mode='windows'")
        if label_column is not None and target_channel is not None:
            raise ValueError("label_column and target_channel both set labels: give one")
        if recenter not in RECENTER_CHOICES:
            raise ValueError(f"recenter is one of {', '.join(RECENTER_CHOICES)}, got {recenter!r}")
        self.save_hyperparameters()
        self.datasets = [str(d) for d in datasets]
        self.manifests: list[dict[str, Any]] = []
        self.normalization: dict[str, Any] = normalization or {}
        self.skipped: dict[str, Any] = {"shards": [], "samples": 0}
        # YAML reads `769: 0` with an int key; stored labels are text
        self.label_map: dict[str, int] | None = (
            None if label_map is None else {str(k): int(v) for k, v in label_map.items()}
        )
        self.selection = load_selection(selection)
        self._segments: dict[str, list[Segment]] = {}
        self._streams: dict[str, ShardStream] = {}
        self.recentring: dict[str, dict[str, Recentring]] = {}  # stage -> subject -> alignment
        self._resume: dict[str, Any] | None = None
        self._epoch_counter = 0
        self.sfreq: float | None = None
        self.c_max: int = 0

    # ----------------------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Read manifests, index and check the shards of the splits this stage needs."""
        if not self.manifests:
            self._load_manifests()
        splits = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
        }.get(stage or "fit", ["train", "val", "test"])
        for which in splits:
            if which not in self._segments:
                segments = self._index_split(getattr(self.hparams, f"{which}_split"))
                self._segments[which] = apply_rule(segments, (self.selection or {}).get(which))
        self._finish_setup()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    def eval_dataloader(self, stage: Stage) -> DataLoader:
        """Every window of ``stage`` in stored order: no crops, no shuffle, no dropped last batch.

        What the classical baselines train on, so they see all of a training split's epochs.
        """
        return self._loader(stage, shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Data position (epoch, batches delivered) plus the normalisation, for the checkpoint."""
        state: dict[str, Any] = {"normalization": self.normalization, "skipped": self.skipped}
        trainer = self._trainer_or_none()
        if trainer is not None and "train" in self._streams:
            # `processed` counts batches whose training step ran; the fit loop resumes after them.
            progress = trainer.fit_loop.epoch_loop.batch_progress.current
            stream = self._streams["train"]
            state["position"] = {
                "epoch": int(trainer.current_epoch),
                "batches": int(progress.processed),
                "world_size": stream.world,
                "num_workers": stream.num_workers,
                "seed": self.hparams.seed,
            }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("normalization"):
            self.normalization = state_dict["normalization"]
        self._resume = state_dict.get("position")

    def labelled_events(self, split: str = "all") -> list[dict[str, Any]]:
        """Every epoch the epochs mode cuts from ``split``: ``{"subject", "event", "label"}`` dicts.

        ``event`` is the name a ``selection`` uses (``"<sample key>#<i>"``), ``label`` the class
        from the label map; events outside the map, too close to a segment edge, over a bad span
        or holding the next stimulus (``reject_bad_spans``, ``include_next_event``) are left out,
        exactly as the loader leaves them out. Sorted by event name.
        """
        segments, spec = self._epoch_segments(split, "labelled_events")
        out = []
        for seg in segments:
            idx, _, labels = kept_events(*loaded_grid(seg, spec), seg.events, spec)
            out += [
                {"subject": str(seg.meta.get("subject")), "event": event_id(seg, int(i)), "label": int(lb)}
                for i, lb in zip(idx, labels, strict=True)
            ]
        return sorted(out, key=lambda e: e["event"])

    def epoch_stimuli(self, stage: Stage) -> dict[str, str]:
        """``{sample_id: stim_file}`` for the epochs of ``stage`` whose event has a stimulus image.

        Keys are the batch's ``sample_id`` (``"<sample key>@<start>:<class>"``), values the image's
        name relative to the shard's ``--stimuli`` folder: which image each epoch showed, so that
        repeated presentations can be grouped (brain–image retrieval).
        """
        if self.hparams.mode != "epochs":
            raise ValueError("epoch_stimuli needs mode='epochs' (stimuli pair with event epochs)")
        if stage not in self._segments:
            self.setup({"train": "fit", "val": "validate"}.get(stage, stage))
        spec, label_map = self._spec(), self.label_map or {}
        out: dict[str, str] = {}
        for seg in self._segments[stage]:
            if seg.kind != "signal":
                continue
            sfreq = self.sfreq or float(seg.meta["sfreq"])
            for ev in seg.events:
                label = ev.get("label")
                if ev.get("stim_file") is None or label not in label_map or ev.get("selected") is False:
                    continue
                start = int(round((float(ev["onset"]) + spec.tmin) * sfreq))
                cls = int(ev.get("class", label_map[label]))
                out.setdefault(f"{seg.key}@{start}:{cls}", str(ev["stim_file"]))
        return out

    def stimulus_images(self, stage: Stage) -> dict[str, bytes]:
        """``{stim_file: encoded image bytes}`` of every stimulus image the epochs of ``stage`` show
        (as stored in the shards by ``neurotrain shard --stimuli``: PNG/JPEG, undecoded), so
        image models can read them with their own preprocessing (encoding models, RSA)."""
        if stage not in self._segments:
            self.setup({"train": "fit", "val": "validate"}.get(stage, stage))
        reader = SegmentReader()
        out: dict[str, bytes] = {}
        for seg in self._segments[stage]:
            for ev in seg.events:
                name, member = ev.get("stim_file"), ev.get("image")
                if name is None or member is None or name in out or member not in (seg.images or {}):
                    continue
                offset, nbytes = seg.images[member]
                out[str(name)] = reader.read_bytes(seg, offset, nbytes)
        return out

    def rejected_epochs(self, split: str = "all") -> dict[str, int]:
        """How many epochs of ``split`` that would otherwise be cut are left out, per reason.

        ``{"bad_span": n, "next_event": n}``: over a ``bad*`` span (``reject_bad_spans``), or
        holding the next stimulus (``include_next_event`` False); an epoch failing both counts
        under ``bad_span``. Events outside ``label_map`` or too close to a segment edge are not
        counted (they never give an epoch). ``split`` as in ``labelled_events`` (no selection).
        """
        segments, spec = self._epoch_segments(split, "rejected_epochs")
        return self._rejections(segments, spec)

    # ----------------------------------------------------------------------------- internals
    def _epoch_segments(self, split: str, caller: str) -> tuple[list[Segment], WindowSpec]:
        """The signal segments of ``split`` (manifest split name or ``"all"``) and their spec."""
        if self.hparams.mode != "epochs":
            raise ValueError(f"{caller} needs mode='epochs' (windows carry no labels)")
        if not self.manifests:
            self._load_manifests()
        segments = [s for s in self._index_split(split) if s.kind == "signal"]
        return segments, self._spec(self._load_sfreq(segments))

    @staticmethod
    def _rejections(segments: list[Segment], spec: WindowSpec) -> dict[str, int]:
        total = dict.fromkeys(REJECT_REASONS, 0)
        for seg in segments:
            if seg.kind != "signal":
                continue
            for reason, n in rejection_counts(*loaded_grid(seg, spec), seg.events, spec).items():
                total[reason] += n
        return total

    def _trainer_or_none(self) -> pl.Trainer | None:
        try:
            return self.trainer
        except RuntimeError:
            return None

    def _load_manifests(self) -> None:
        """Read every dataset's manifest, schema version checked (``DatasetLocation.manifest``).

        Raises ``ManifestError`` naming the file for a missing, unreadable or unknown-schema one.
        """
        # Remote datasets: the manifest is fetched into the cache now, shards by `_index_split`.
        self._locations = [resolve(d, self.hparams.get("cache_dir")) for d in self.datasets]
        self.manifests = [location.manifest() for location in self._locations]
        if self.label_map is None and self.hparams.mode == "epochs":
            names = sorted({n for m in self.manifests for n in (m.get("labels") or {}).get("names", [])})
            self.label_map = {n: i for i, n in enumerate(names)}
        if not self.normalization:
            self.normalization = {
                "datasets": [
                    {"path": d, "manifest_sha256": m["_sha256"], **normalization_from_manifest(m)}
                    for d, m in zip(self.datasets, self.manifests, strict=True)
                ]
            }
        # Recorded in the hyperparameters too, so `datamodule_hyper_parameters` in a checkpoint
        # carries it and a datamodule rebuilt from them normalises identically.
        self.hparams["normalization"] = self.normalization

    def _index_split(self, split: str) -> list[Segment]:
        segments: list[Segment] = []
        for d, (location, manifest) in enumerate(zip(self._locations, self.manifests, strict=True)):
            for entry in manifest["shards"]:
                if split != "all" and entry.get("split") not in (split, "all"):  # "all": stimulus split
                    continue
                try:
                    path = location.shard_path(entry)  # a remote shard: staged and sha256-checked
                    verify = self.hparams.verify and not location.remote
                    segments += index_shard(path, d, entry, verify)
                except CorruptShardError as err:
                    if self.hparams.on_corrupt == "fail":
                        raise
                    self.skipped["shards"].append(entry["name"])
                    self.skipped["samples"] += int(entry.get("samples") or 0)
                    log.warning("%s; skipped (%d samples skipped in total)", err, self.skipped["samples"])
        return self._stimulus_split(segments, split)

    def _stimulus_split(self, segments: list[Segment], split: str) -> list[Segment]:
        """Datasets sharded with ``--split-by stimulus``: each segment's events whose stimulus
        (``stim_file``) is not in ``split`` are marked ``"selected": False`` (no epoch is cut
        around them, they still count as next stimuli), so a stage never sees another split's
        images. Events without an image (annotations) are left as they are."""
        if split == "all":
            return segments
        out = []
        for seg in segments:
            splits = self.manifests[seg.dataset].get("splits") or {}
            if splits.get("by") != "stimulus":
                out.append(seg)
                continue
            of = splits.get("stimuli") or {}
            events = [
                ev
                if ("stim_file" not in ev and "image" not in ev) or of.get(str(ev.get("stim_file"))) == split
                else {**ev, "selected": False}
                for ev in seg.events
            ]
            out.append(dataclasses.replace(seg, events=events))
        return out

    def _finish_setup(self) -> None:
        every = [s for segs in self._segments.values() for s in segs]
        if len({s.kind for s in every}) > 1:
            raise ValueError("these datasets mix signals and volumes; load them with separate datamodules")
        all_segments = [s for s in every if s.kind == "signal"]
        self.sfreq = self._load_sfreq(all_segments)
        hp = self.hparams
        if hp.channels is not None:
            self.c_max = len(hp.channels)
        else:
            widest = widest_kept(
                (s.meta for s in all_segments), hp.channel_types, hp.drop_bad_channels, self._not_input()
            )
            self.c_max = hp.max_channels or widest

    def _spec(self, sfreq: float | None = None) -> WindowSpec:
        """How windows are cut, at ``sfreq`` (default: the set-up splits' rate)."""
        hp = self.hparams
        if hp.get("window_samples") is not None:
            return WindowSpec("windows", int(hp.window_samples))
        sfreq = sfreq or self.sfreq
        if sfreq is None:
            if any(self._segments.values()):
                return WindowSpec("windows", 0)  # volumes only: one item per sample, nothing to cut
            raise RuntimeError("no segments found; call setup() first and check the split names")
        if hp.mode == "epochs":
            return WindowSpec(
                "epochs",
                int(round((hp.tmax - hp.tmin) * sfreq)),
                hp.tmin,
                self.label_map,
                tmax=hp.tmax,
                reject_bad_spans=hp.reject_bad_spans,
                include_next_event=hp.include_next_event,
                sfreq=hp.get("sfreq"),
            )
        return WindowSpec("windows", int(round(hp.window_seconds * sfreq)), sfreq=hp.get("sfreq"))

    @property
    def dataset_names(self) -> list[str]:
        """Short distinct names of ``datasets`` (``shards/eeg`` -> ``eeg``), indexed by the batch's
        ``dataset`` key: what per-dataset metrics are called (``loading/dataset_names.py``)."""
        return dataset_names(self.datasets)

    def _load_sfreq(self, segments: list[Segment]) -> float | None:
        """The rate batches are delivered at: ``sfreq`` when set (each stored rate checked to have
        a usable ratio to it), else the segments' one rate (several: an error naming each
        dataset's rates and the ``sfreq`` option); None without signal segments."""
        target = self.hparams.get("sfreq")
        if self.hparams.get("window_samples") is not None:
            return None  # native rates: no one rate is the batch's (``sfreq`` [B] says each)
        if target is None:
            return common_sfreq(segments, self.datasets)
        rates = sorted({float(s.meta["sfreq"]) for s in segments if s.kind == "signal"})
        for rate in rates:
            rate_ratio(rate, float(target))  # an unusable ratio fails here, not in a loader thread
        if self.hparams.images and any(rate != float(target) for rate in rates):
            raise ValueError(f"images with resampling at load (sfreq {target:g}) is not supported")
        return float(target) if rates else None

    def _layouts(self, segments: list[Segment], pair: bool = False) -> list[Layout | None]:
        """Per segment, where its channels land in a batch; ``pair``: the ``pair_*`` view's layout."""
        hp = self.hparams
        norms = [type_table(n) for n in self.normalization["datasets"]] if hp.normalize else None
        c_max, channels, types = self.c_max, hp.channels, hp.channel_types
        if pair:  # pair_channel_types fill slots in stored order, up to the widest pair set
            c_max, channels, types = self._pair_c_max(), None, list(hp.pair_channel_types)
        cache: dict[tuple, Layout] = {}
        out = []
        for s in segments:
            if s.kind == "volume":
                out.append(None)
                continue
            key = (
                s.dataset,
                tuple(s.meta["ch_names"]),
                tuple(s.meta.get("bad_channels") or []),
                tuple(s.meta.get("units") or []),
                # MEG coil normals are in the head frame: they differ between head positions
                tuple(o if o is None else tuple(o) for o in s.meta.get("orientations") or ()),
            )
            if key not in cache:
                norm = norms[s.dataset] if norms is not None else None
                cache[key] = make_layout(
                    s.meta, c_max, channels, types, hp.drop_bad_channels, norm, self._not_input()
                )
            out.append(cache[key])
        return out

    def _pair_c_max(self) -> int:
        """Slots of the pair view: the most ``pair_channel_types`` channels any indexed segment keeps."""
        hp = self.hparams
        metas = (s.meta for segs in self._segments.values() for s in segs if s.kind == "signal")
        widest = widest_kept(metas, list(hp.pair_channel_types), hp.drop_bad_channels)
        if widest == 0:
            raise ValueError(f"pair_channel_types {hp.pair_channel_types}: no such channels in the shards")
        return widest

    def _rank_world(self) -> tuple[int, int]:
        trainer = self._trainer_or_none()
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _stream(self, which: str, shuffle: bool) -> ShardStream:
        if which not in self._segments:
            self.setup({"train": "fit", "val": "validate"}.get(which, which))
        hp = self.hparams
        segments = self._segments[which]
        spec = self._spec()
        counts = window_counts(segments, spec)
        if spec.mode == "windows":
            self._check_runs_fit_a_window(segments, counts, spec)
        if spec.mode == "epochs":
            rejected = self._rejections(segments, spec)
            log.info(
                "%s: %d epochs; left out %d over bad spans, %d holding the next stimulus",
                which,
                int(counts.sum()),
                rejected["bad_span"],
                rejected["next_event"],
            )
        cfg = self._stream_config(shuffle, segments)
        rank, world = self._rank_world()
        processes = hp.num_workers if hp.worker_mode == "processes" else 0
        stream = ShardStream(
            segments, counts, self._layouts(segments), spec, cfg, self.c_max, rank, world, processes
        )
        if hp.pair_channel_types is not None and spec.window_samples > 0:
            stream.pair_layouts = self._layouts(segments, pair=True)
            stream.pair_c_max = self._pair_c_max()
        if hp.images:
            stream.images = EventImages(segments, spec, hp.image_size)
            stream.images.check()
        if hp.target_channel is not None:
            stream.target_rows = self._target_rows(segments)
            stream.target_reduce = hp.target_reduce
        if hp.get("label_column") is not None:
            stream.segment_labels = participant_labels(
                [s.meta for s in segments], [s.name for s in segments], hp.label_column, self.label_map
            )
        if hp.recenter != "none":
            stream.recentring, stream.stage = self._fit_recentring(which, segments, counts, spec), which
        self._streams[which] = stream
        return stream

    def _not_input(self) -> tuple[str, ...]:
        """Channels never laid out as input: the regression target."""
        target = self.hparams.get("target_channel")
        return () if target is None else (target,)

    def _target_rows(self, segments: list[Segment]) -> list[int]:
        """Per segment, the stored row of ``target_channel``; a sample without it is an error."""
        target = self.hparams.target_channel
        rows = []
        for s in segments:
            names = list(s.meta["ch_names"])
            if target not in names:
                raise ValueError(
                    f"target_channel {target!r}: sample {s.name} in {s.path} has no such channel "
                    f"(its channels: {', '.join(names)})"
                )
            rows.append(names.index(target))
        return rows

    def _check_runs_fit_a_window(self, segments: list[Segment], counts: Any, spec: WindowSpec) -> None:
        """An fMRI run (one sample) shorter than one window is an error naming it, not a run that
        silently never trains (signals cut into segments may leave a short tail; runs may not)."""
        for seg, n in zip(segments, counts, strict=True):
            if n == 0 and seg.kind == "signal" and seg.meta.get("modality") == "fmri":
                tr = 1.0 / float(seg.meta["sfreq"])
                raise ValueError(
                    f"fMRI run {seg.meta.get('source') or seg.name} ({self.datasets[seg.dataset]}) has "
                    f"{int(seg.shape[1])} TRs ({int(seg.shape[1]) * tr:.1f} s), shorter than one window of "
                    f"{spec.window_samples} samples: lower data.window_samples / window_seconds, or leave the "
                    "run out (data.selection)"
                )

    def _stream_config(self, shuffle: bool, segments: list[Segment] | None = None) -> StreamConfig:
        """Batch order and bad-sample handling: shuffled training (last partial batch dropped,
        dataset weights applied), or every window in stored order.

        ``shuffle_buffer`` counts items; for volumes (megabytes each) it is also capped at
        ``VOLUME_BUFFER_BYTES`` of them, so a large T1 corpus streams in flat memory.
        """
        hp = self.hparams
        buffer = int(hp.shuffle_buffer)
        volumes = [s for s in segments or [] if s.kind == "volume"]
        if volumes:
            largest = max(int(np.prod(s.shape)) for s in volumes) * 4  # float32 as delivered
            buffer = max(hp.batch_size, min(buffer, VOLUME_BUFFER_BYTES // max(largest, 1)))
        return StreamConfig(
            batch_size=hp.batch_size,
            shuffle=shuffle,
            shuffle_buffer=buffer,
            seed=hp.seed,
            drop_last=shuffle,
            weights=hp.weights if shuffle else None,
            on_corrupt=hp.on_corrupt,
            check_finite=hp.check_finite,
            normalize=hp.normalize,
        )

    def _fit_recentring(
        self, which: str, segments: list[Segment], counts, spec: WindowSpec
    ) -> dict[str, Recentring]:
        """Each subject's alignment in stage ``which``, from one pass over all its windows.

        The pass reads every window of the stage in stored order (no crops, no shuffle, no rank
        split: every rank fits the same matrices) with the stage's normalisation; done once per
        stage and kept in ``self.recentring``.
        """
        if which in self.recentring:
            return self.recentring[which]
        if any(s.kind != "signal" for s in segments):
            raise ValueError("recenter applies to signals; these segments hold volumes")
        hp = self.hparams
        probe = ShardStream(
            segments, counts, self._layouts(segments), spec, self._stream_config(False), self.c_max
        )
        fit = RecentringFit(self.c_max)
        for batch in probe.iter_threads(max(1, hp.num_workers)):
            fit.add(batch)
        table = fit.table()
        log.info(
            "%s: re-centred %d subjects (%s windows)",
            which,
            len(table),
            ", ".join(f"{s}: {r.windows}" for s, r in sorted(table.items())),
        )
        self.recentring[which] = table
        return table

    def _loader(self, which: str, shuffle: bool) -> DataLoader:
        stream = self._stream(which, shuffle)
        position = self._train_position if which == "train" else None
        loader = ShardLoader(stream, position, self.hparams.num_workers, self.hparams.worker_mode)
        if which == "train":
            loader.datamodule = self
        return loader

    def _train_position(self, n_batches: int) -> tuple[int, int]:
        """(epoch, batches to skip) for the train iteration about to start."""
        if self._resume is not None:
            pos, self._resume = self._resume, None
            stream = self._streams["train"]
            return resume_position(pos, stream.world, stream.num_workers, n_batches)
        trainer = self._trainer_or_none()
        if trainer is not None:
            return int(trainer.current_epoch), 0
        epoch, self._epoch_counter = self._epoch_counter, self._epoch_counter + 1
        return epoch, 0

"""``PairedModalityDataModule``: each fMRI window with the T1 volume of the same subject.

Structure-function fusion models (BrainHarmonix-like, ``models/modules/fusion.py``) need both
modalities of one subject in one batch. Two `ShardDataModule` do the reading: one over the T1
shards (``volumes``: ``anat`` samples) and one over the fMRI shards (``signals``: parcel series in
windows mode, usually ``window_samples`` at each run's own TR). The fMRI windows stream from the
signal datamodule's loader as usual (its shuffling, crops, normalisation, rank split and resume
position); the T1 volumes, one per subject (few, a few MB each), are read once per stage and held
in memory, and each window is given its subject's volume. Batch (``B`` windows)::

    signal, channel_mask, ...   every key `ShardDataModule` yields for the fMRI windows
    volume          float32 [B, D, H, W]   the T1 of each window's subject (or session)
    labels          [B]                    participants.tsv ``label_column`` (float32, NaN = none;
                                           int64 classes with ``label_map``, -1 = none), else -1
    volume_recording list[str]             which T1 recording each row got

Pairing is by subject, or by (subject, session) with ``pair_by="session"`` (a T1 and the runs of
the same visit). Subjects (or sessions) with only one modality are left out, listed in
``unpaired`` (``{"no_t1": [...], "no_fmri": [...]}``) and named in a logged warning; when none has
both, setting up is a ``ValueError`` naming both dataset folders.

One shard run of a BIDS root holding ``anat/`` and ``func/`` writes one dataset with both kinds
(``manifest["modalities"] == ["anat", "fmri"]``), which a single `ShardDataModule` refuses; give
that folder as both ``volumes.datasets`` and ``signals.datasets``: each side reads only its kind.
Folders sharded separately work the same.

Splits are the shards' own subject splits, stage by stage (``train_split``, ``val_split``, ...
apply to both sides). A subject's split must be the same in both datasets, as it is when both are
sharded in one run, or from the same subjects with the same ``--split`` and ``--split-seed``; a
subject in different splits (its fMRI trained on, its T1 held out) is a ``ValueError`` naming it.

Under DDP every rank caches every T1 (the fMRI windows are split between ranks as usual). Per-stage
``selection`` rules (evaluation folds) are not taken yet: the pairing sets each side's selection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor

from neurotrain.datamodules.loading.datamodule import ShardDataModule
from neurotrain.datamodules.loading.remote import resolve
from neurotrain.datamodules.loading.tar_index import Segment

__all__ = ["PairedModalityDataModule"]

log = logging.getLogger(__name__)

PairBy = Literal["subject", "session"]
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
# Set by the paired datamodule for both sides, so the two agree; not accepted in ``volumes``/``signals``.
OWN_KEYS = (
    "batch_size",
    "seed",
    "train_split",
    "val_split",
    "test_split",
    "predict_split",
    "label_source",
    "label_column",
    "label_map",
    "selection",
)
VOLUME_BATCH = 8  # T1 volumes read per batch while filling the cache


class OneKindShardDataModule(ShardDataModule):
    """A `ShardDataModule` that reads only the segments of one kind (``"volume"`` or ``"signal"``)
    of its datasets, so one dataset sharded from a BIDS root with both ``anat`` and ``func`` serves
    both sides. ``whole``: every process reads every item (no rank split), for the T1 cache."""

    def __init__(self, kind: Literal["volume", "signal"], whole: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.whole = whole

    def _index_split(self, split: str) -> list[Segment]:
        return [s for s in super()._index_split(split) if s.kind == self.kind]

    def _rank_world(self) -> tuple[int, int]:
        return (0, 1) if self.whole else super()._rank_world()


class PairedModalityDataModule(pl.LightningDataModule):
    """fMRI windows paired with their subject's T1 volume (module docstring).

    Args:
        volumes: `ShardDataModule` arguments for the T1 shards (``datasets``, ...).
        signals: `ShardDataModule` arguments for the fMRI shards, windows mode (``datasets``,
            ``window_samples`` or ``window_seconds``, ``num_workers``, ...).
        pair_by: ``"subject"``: a subject's windows all get its T1 (the first in stored order if
            it has several); ``"session"``: a window gets the T1 of its own session.
        batch_size: windows per batch.
        seed: shuffling and crops of the fMRI windows.
        label_column: the ``participants.tsv`` column read as ``labels`` (via the fMRI shards'
            participant rows, ``label_source: participants``); None: no labels (-1).
        label_map: classes for a text ``label_column`` (``{"control": 0, "patient": 1}``).
        train_split, val_split, test_split, predict_split: manifest split names per stage, for
            both sides (``val_split: train`` validates on the training subjects).
    """

    def __init__(
        self,
        volumes: dict[str, Any],
        signals: dict[str, Any],
        pair_by: PairBy = "subject",
        batch_size: int = 8,
        seed: int = 0,
        label_column: str | None = None,
        label_map: dict[str, int] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        predict_split: str = "test",
    ) -> None:
        super().__init__()
        if pair_by not in ("subject", "session"):
            raise ValueError(f"pair_by is 'subject' or 'session', got {pair_by!r}")
        for side, args in (("volumes", volumes), ("signals", signals)):
            if not args.get("datasets"):
                raise ValueError(f"{side}.datasets: give the shard folders of the {side}")
            given = sorted(set(args) & set(OWN_KEYS))
            if given:
                raise ValueError(
                    f"{side}: {', '.join(given)} are set for both sides at the top level of "
                    "PairedModalityDataModule, not per side"
                )
        self.save_hyperparameters()
        self.pair_by: PairBy = pair_by
        self.splits = {"train": train_split, "val": val_split, "test": test_split, "predict": predict_split}
        self.volume_args = {**volumes, "batch_size": VOLUME_BATCH}
        self.signal_args = dict(signals)
        self.label_args: dict[str, Any] = (
            {"label_source": "participants", "label_column": label_column, "label_map": label_map}
            if label_column is not None
            else {}
        )
        self.unpaired: dict[str, list[str]] = {"no_t1": [], "no_fmri": []}
        self.volumes_dm: OneKindShardDataModule | None = None
        self.signals_dm: OneKindShardDataModule | None = None
        self._normalization: dict[str, Any] | None = signals.get("normalization")
        self._paired: set[str] = set()
        # (side, dataset index) -> recording -> session, from the manifests: the pairing key of a row
        self._sessions: dict[tuple[str, str], dict[str, str | None]] = {}
        self._cache: dict[str, dict[str, tuple[Tensor, str]]] = {}  # stage -> key -> (volume, recording)

    # ----------------------------------------------------------------------------- what callers read
    @property
    def datasets(self) -> list[str]:
        """The fMRI dataset folders, then the T1 folders not already among them."""
        signals = [str(d) for d in self.signal_args["datasets"]]
        return signals + [str(d) for d in self.volume_args["datasets"] if str(d) not in signals]

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """The manifests of ``datasets``, in that order (after ``setup``)."""
        if self.signals_dm is None or self.volumes_dm is None:
            return []
        by_path = dict(zip(self.volumes_dm.datasets, self.volumes_dm.manifests, strict=False))
        by_path.update(zip(self.signals_dm.datasets, self.signals_dm.manifests, strict=False))
        return [by_path[d] for d in self.datasets if d in by_path]

    @property
    def normalization(self) -> dict[str, Any] | None:
        """The fMRI side's per-type normalisation table (T1 volumes are normalised at shard time)."""
        if self.signals_dm is not None:
            return self.signals_dm.normalization
        return self._normalization

    @normalization.setter
    def normalization(self, value: dict[str, Any] | None) -> None:
        # e.g. a fine-tune's pretrained statistics, set before setup (``_share_normalization``)
        self._normalization = value
        if self.signals_dm is not None:
            self.signals_dm.normalization = value or {}

    # ----------------------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Pair the subjects (once), then fill the T1 cache of the stage's splits."""
        if self.signals_dm is None or self.volumes_dm is None:
            self._pair()
        assert self.signals_dm is not None and self.volumes_dm is not None
        self.signals_dm.trainer = self.trainer  # epochs, ranks and resume from the real trainer (or None)
        self.signals_dm.setup(stage)
        self.volumes_dm.setup(stage)
        every = ("train", "val", "test")
        for which in STAGE_SPLITS.get(stage, every) if stage else every:
            if which not in self._cache:
                self._cache[which] = self._read_volumes(which)

    def train_dataloader(self) -> PairedLoader:
        return self._loader("train")

    def val_dataloader(self) -> PairedLoader:
        return self._loader("val")

    def test_dataloader(self) -> PairedLoader:
        return self._loader("test")

    def predict_dataloader(self) -> PairedLoader:
        return self._loader("predict")

    def eval_dataloader(self, stage: Literal["train", "val", "test", "predict"]) -> PairedLoader:
        """Every window of ``stage`` in stored order (no crops, no shuffle, no dropped last batch)."""
        return self._loader(stage, ordered=True)

    def state_dict(self) -> dict[str, Any]:
        """The fMRI side's state: its data position and normalisation (the T1 cache is rebuilt)."""
        return {"signals": self.signals_dm.state_dict()} if self.signals_dm is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "signals" not in state_dict:
            return
        if self.signals_dm is None:
            self._pair()
        assert self.signals_dm is not None
        self.signals_dm.load_state_dict(state_dict["signals"])

    # ----------------------------------------------------------------------------- internals
    def _pair(self) -> None:
        """Read both sides' manifests, check the splits agree, pick the pairs, build the two sides."""
        volume_recs = self._recordings(self.volume_args, anat=True)
        signal_recs = self._recordings(self.signal_args, anat=False)
        self._check_splits(volume_recs, signal_recs)
        t1_keys = {self._key(r["subject"], r.get("session")) for r in volume_recs}
        fmri_keys = {self._key(r["subject"], r.get("session")) for r in signal_recs}
        self._paired = t1_keys & fmri_keys
        self.unpaired = {"no_t1": sorted(fmri_keys - t1_keys), "no_fmri": sorted(t1_keys - fmri_keys)}
        if not self._paired:
            raise ValueError(
                f"no {self.pair_by} has both a T1 in {self.volume_args['datasets']} and an fMRI run in "
                f"{self.signal_args['datasets']} (T1: {_few(t1_keys)}; fMRI: {_few(fmri_keys)}); "
                "shard both modalities of the same subjects"
            )
        if self.unpaired["no_t1"] or self.unpaired["no_fmri"]:
            log.warning(
                "left out %d %ss with one modality only: no T1: %s; no fMRI: %s",
                len(self.unpaired["no_t1"]) + len(self.unpaired["no_fmri"]),
                self.pair_by,
                ", ".join(self.unpaired["no_t1"]) or "none",
                ", ".join(self.unpaired["no_fmri"]) or "none",
            )
        subjects = sorted({self._subject_of(k) for k in self._paired})
        selection = {stage: {"subjects": subjects} for stage in ("train", "val", "test", "predict")}
        split_args = {f"{stage}_split": name for stage, name in self.splits.items()}
        self.volumes_dm = OneKindShardDataModule(
            kind="volume", whole=True, **self.volume_args, **split_args, selection=selection
        )
        signal_args = {**self.signal_args, "normalization": self._normalization}
        self.signals_dm = OneKindShardDataModule(
            kind="signal",
            **signal_args,
            **split_args,
            **self.label_args,
            batch_size=self.hparams.batch_size,
            seed=self.hparams.seed,
            selection=selection,
        )

    def _recordings(self, args: dict[str, Any], anat: bool) -> list[dict[str, Any]]:
        """The manifest recordings of one side (``anat`` ones, or all others), each with ``split``
        and ``dataset`` (its folder); records each recording's session for the pairing key."""
        out = []
        side = "volume" if anat else "signal"
        for d, folder in enumerate(args["datasets"]):
            manifest = resolve(str(folder), args.get("cache_dir")).manifest()
            for rec in manifest.get("recordings", []):
                if (rec.get("modality") == "anat") != anat:
                    continue
                rec = {**rec, "subject": str(rec.get("subject")), "dataset": str(folder)}
                self._sessions.setdefault((side, str(d)), {})[str(rec.get("recording") or rec["id"])] = (
                    None if rec.get("session") is None else str(rec["session"])
                )
                out.append(rec)
        return out

    def _check_splits(self, volume_recs: list[dict[str, Any]], signal_recs: list[dict[str, Any]]) -> None:
        """Every subject with both modalities is in one split in every dataset, else ``ValueError``."""
        where: dict[str, dict[str, set[str]]] = {}  # subject -> split -> folders
        for rec in (*volume_recs, *signal_recs):
            where.setdefault(rec["subject"], {}).setdefault(str(rec.get("split")), set()).add(rec["dataset"])
        t1 = {r["subject"] for r in volume_recs}
        fmri = {r["subject"] for r in signal_recs}
        wrong = sorted(s for s in t1 & fmri if len(where[s]) > 1)
        if wrong:
            detail = "; ".join(
                f"subject {s}: "
                + ", ".join(f"{split} in {sorted(folders)}" for split, folders in sorted(where[s].items()))
                for s in wrong[:5]
            )
            raise ValueError(
                f"the T1 and fMRI datasets put {len(wrong)} subject(s) in different splits ({detail}); "
                "shard both modalities in one run, or from the same subjects with the same --split and "
                "--split-seed, so no subject is trained on in one modality and held out in the other"
            )

    def _key(self, subject: str, session: str | None) -> str:
        """The pairing key: ``"01"``, or ``"01/ses-2"`` with ``pair_by="session"``."""
        if self.pair_by == "session" and session is not None:
            return f"{subject}/ses-{session}"
        return str(subject)

    @staticmethod
    def _subject_of(key: str) -> str:
        return key.split("/ses-", 1)[0]

    def _row_key(self, side: str, dataset: int, recording: str, subject: str) -> str:
        session = self._sessions.get((side, str(dataset)), {}).get(recording)
        return self._key(subject, session)

    def _read_volumes(self, which: str) -> dict[str, tuple[Tensor, str]]:
        """``key -> (volume [D, H, W], recording)`` for the paired keys of stage ``which``'s split.

        Volumes stay at the dtype they were stored in (float16 by default), so the cache costs
        what the shards do; a key with several T1s keeps the first in stored order.
        """
        assert self.volumes_dm is not None
        dtype = torch.float16 if self._stored_dtype() == "float16" else torch.float32
        table: dict[str, tuple[Tensor, str]] = {}
        repeated: list[str] = []
        for batch in self.volumes_dm.eval_dataloader(which):
            for i, (subject, recording) in enumerate(zip(batch["subject"], batch["recording"], strict=True)):
                key = self._row_key("volume", int(batch["dataset"][i]), recording, subject)
                if key not in self._paired:
                    continue
                if key in table:
                    repeated.append(key)
                    continue
                table[key] = (batch["volume"][i].to(dtype).clone(), recording)
        if repeated:
            log.info("%s: %d %ss have several T1s; each keeps its first", which, len(repeated), self.pair_by)
        return table

    def _stored_dtype(self) -> str:
        assert self.volumes_dm is not None
        dtypes = {str((m.get("options") or {}).get("dtype", "float32")) for m in self.volumes_dm.manifests}
        return dtypes.pop() if len(dtypes) == 1 else "float32"

    def _loader(self, which: str, ordered: bool = False) -> PairedLoader:
        stage = {"train": "fit", "val": "validate"}.get(which, which)
        if self.signals_dm is None or which not in self._cache:
            self.setup(stage)
        assert self.signals_dm is not None
        if ordered:
            return PairedLoader(self.signals_dm.eval_dataloader(which), self, which)  # type: ignore[arg-type]
        inner = {
            "train": self.signals_dm.train_dataloader,
            "val": self.signals_dm.val_dataloader,
            "test": self.signals_dm.test_dataloader,
            "predict": self.signals_dm.predict_dataloader,
        }[which]()
        return PairedLoader(inner, self, which)


class PairedLoader:
    """Iterates the fMRI loader and adds each window's T1 (``volume``, ``volume_recording``).

    One paired batch per fMRI batch (rows without a T1, possible only with ``pair_by="session"``,
    are dropped from it), so the fMRI loader's length and resume position hold for this one too.
    """

    def __init__(self, inner: Any, datamodule: PairedModalityDataModule, which: str) -> None:
        self.inner = inner
        self.datamodule = datamodule
        self.which = which

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.inner:
            yield self.pair(batch)

    def pair(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The fMRI batch with its rows' T1s: ``volume`` float32 [B, D, H, W]."""
        dm = self.datamodule
        table = dm._cache[self.which]
        keys = [
            dm._row_key("signal", int(d), rec, sub)
            for d, rec, sub in zip(
                batch["dataset"].tolist(), batch["recording"], batch["subject"], strict=True
            )
        ]
        rows = [i for i, k in enumerate(keys) if k in table]
        if len(rows) < len(keys):
            batch = take_rows(batch, rows)
            keys = [keys[i] for i in rows]
        if keys:
            batch["volume"] = torch.stack([table[k][0] for k in keys]).float()  # [B, D, H, W]
        else:
            shape = next(iter(table.values()))[0].shape if table else (0, 0, 0)
            batch["volume"] = torch.zeros((0, *shape), dtype=torch.float32)
        batch["volume_recording"] = [table[k][1] for k in keys]
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if hasattr(self.inner, "load_state_dict"):
            self.inner.load_state_dict(state_dict)


def take_rows(batch: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The batch restricted to ``rows``: tensors and lists of length B indexed, the rest kept."""
    n = len(batch["subject"])
    index = torch.as_tensor(rows, dtype=torch.long)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.ndim > 0 and value.shape[0] == n:
            out[key] = value[index]
        elif isinstance(value, list) and len(value) == n:
            out[key] = [value[i] for i in rows]
        else:
            out[key] = value
    return out


def _few(keys: set[str], n: int = 6) -> str:
    """Up to ``n`` of ``keys``, sorted, for messages."""
    shown = sorted(keys)[:n]
    return ", ".join(shown) + (f" and {len(keys) - n} more" if len(keys) > n else "") if keys else "none"

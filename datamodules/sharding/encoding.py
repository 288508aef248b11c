"""What one recording becomes: its samples as bytes, its manifest summary, its statistics.

Shared by the signal (``samples``) and volume (``volume_samples``) paths: `RecordingOutput`, the
``.npy`` encoders (no pickle, deterministic bytes) and the identifiers every sample and summary
carries.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import numpy as np

from neurotrain.datamodules.sharding.participants import participant_row
from neurotrain.datamodules.sharding.sources import SourceItem


class RecordingOutput:
    """What one recording produced: samples to write, its manifest summary, its statistics.

    ``accumulators`` may be given as a ``Future`` (computed on a helper thread while the samples
    are encoded and written); reading the attribute waits for it.
    """

    def __init__(
        self,
        samples: Iterator[dict[str, Any]],
        summary: dict[str, Any],
        accumulators: dict[str, dict[str, Any]] | Future | None = None,
    ) -> None:
        self.samples = samples
        self.summary = summary
        self._accumulators = {} if accumulators is None else accumulators

    @property
    def accumulators(self) -> dict[str, dict[str, Any]]:
        if isinstance(self._accumulators, Future):
            self._accumulators = self._accumulators.result()
        return self._accumulators


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of an array (no pickle; deterministic)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_npy_as(array: np.ndarray, dtype: np.dtype) -> bytes:
    """The bytes of ``encode_npy(array.astype(dtype))``, cast straight into the output buffer.

    One cast pass instead of astype, a BytesIO copy and ``getvalue``; the final ``bytes`` copy is
    what webdataset's writer accepts.
    """
    dtype = np.dtype(dtype)
    if dtype.hasobject or array.ndim == 0:
        return encode_npy(array.astype(dtype))
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": array.shape}
    np.lib.format.write_array_header_1_0(buf, header)  # what write_array writes for small headers
    head = buf.getvalue()
    out = bytearray(len(head) + array.size * dtype.itemsize)
    out[: len(head)] = head
    np.copyto(np.frombuffer(out, dtype=dtype, offset=len(head)).reshape(array.shape), array, casting="unsafe")
    return bytes(out)


def recording_ids(item: SourceItem) -> dict[str, Any]:
    """The identifiers of a recording, in every sample's ``meta.json`` and its manifest summary.

    ``participant``: the subject's ``participants.tsv`` row when the source has one
    (`participants.participant_row`), the subject-level labels ``label_source: participants``
    reads.
    """
    ids: dict[str, Any] = {
        "subject": item.subject,
        "session": item.session,
        "task": item.task,
        "run": item.run,
        "recording": item.recording_id,
        "dataset": item.dataset,
        "source": item.source,
    }
    row = participant_row(item.path, item.source, item.subject)
    if row is not None:
        ids["participant"] = row
    return ids

"""A plain 16-bit EDF decoded in one pass, straight into float32 in stored units.

``read_edf_scaled`` gives exactly what MNE's ``raw.load_data()`` followed by the float64 scaling
into float32 gives (per sample, in float64 and in this order: ``int16 * cal + offset``, ``* gain``,
``* scale``: the operations of MNE's EDF reader), a few data records at a time, so the whole
recording never exists in float64 (3 fewer passes over it and no 8-byte copy of it).

It reads the file itself, through the EDF header layout the EDF specification documents (a
256-byte fixed part, then 256 bytes per signal: label, transducer, physical dimension, physical
and digital minimum and maximum, prefiltering, samples per data record, reserved; then the data
records, each holding every signal's samples side by side as little-endian int16), and uses
nothing of MNE but its public API: the channel names, types and sample count of the header MNE
read, and ``raw.get_data`` for the cross-check below. MNE's channels are matched to the EDF
signals by label.

In a process sharding alone the records are decoded in two halves on two threads (numpy and
``readinto`` release the GIL; each value goes through the same operations either way, so the
bits do not depend on it); in a worker of ``--workers N``, on one.

Why not edfio, the EDF library MNE itself writes with: its public ``EdfSignal.digital`` gives one
signal at a time (a strided copy out of a memory map of the whole file), and decoding the 128
signals of one example EEG file that way, then scaling each row, took 165-182 ms against
129-136 ms for this decode on one thread (medians of 9, alternated in one process, 2 shared
cores), and 100 ms against 84-91 ms with the rows or records split over two threads; asking it
for blocks of records (``get_digital_slice``) costs one Python call per signal per block and was
slower still. All gave the same bits. MNE's ``read_raw_edf(preload=True)`` of the same file:
268-307 ms.

It applies to the common case only: one EDF file, the picked channels stored side by side in
each record at the full rate, no stim channel, projector or compensation, first sample 0, unique
labels, a file as long as its header says. Anything else, or any doubt (the first and last two
records are compared bit for bit with MNE's own reading), returns None and the caller loads the
data through MNE.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ANNOTATION_LABEL = "EDF Annotations"
_MICRO = ("\u03bcV", "\u00b5V", "\x83\xcaV", "uV")  # the spellings of µV MNE reads as 1e-6
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def helper_threads() -> int:
    """Threads one recording's numpy passes may use: 2 in a process sharding alone, else 1.

    With ``--workers N`` the processes already share the cores; a second thread in each made
    the 2-worker run ~10 % slower on 2 cores, where in a single process it makes it ~10 % faster.
    """
    import multiprocessing

    return 1 if multiprocessing.parent_process() is not None or _CPUS < 2 else 2


_BLOCK_RECORDS = 32  # data records decoded per step (8 MB of float64 for 128 ch x 256; 2-16 were slower)


@dataclass(frozen=True)
class EdfHeader:
    """The fields of an EDF header that the decode needs, parsed as MNE parses them."""

    data_offset: int
    n_records: int
    labels: list[str]
    units: list[str]
    physical_min: np.ndarray
    physical_max: np.ndarray
    digital_min: np.ndarray
    digital_max: np.ndarray
    n_samps: np.ndarray  # samples per data record, per signal


def _text(field: bytes) -> str:
    return field.decode("latin-1").split("\x00")[0]


def _number(field: bytes) -> float:
    return float(_text(field).replace(",", "."))


def read_edf_header(path: Path) -> EdfHeader | None:
    """The header of the EDF file at ``path``, or None when it is not a plain EDF header."""
    with open(path, "rb") as f:
        fixed = f.read(256)
        if len(fixed) != 256 or fixed[:1] != b"0":  # EDF's version field is "0" (BDF's is "\xffBIOSEMI")
            return None
        try:
            data_offset = int(_text(fixed[184:192]))
            n_records = int(_text(fixed[236:244]))
            ns = int(_text(fixed[252:256]))
        except ValueError:
            return None
        if ns <= 0 or n_records <= 0 or data_offset != 256 * (ns + 1):
            return None
        block = f.read(256 * ns)
    if len(block) != 256 * ns:
        return None
    fields, pos = {}, 0
    for name, width in (
        ("label", 16),
        ("transducer", 80),
        ("unit", 8),
        ("pmin", 8),
        ("pmax", 8),
        ("dmin", 8),
        ("dmax", 8),
        ("prefilter", 80),
        ("n_samps", 8),
        ("reserved", 32),
    ):
        fields[name] = [block[pos + i * width : pos + (i + 1) * width] for i in range(ns)]
        pos += width * ns
    try:
        return EdfHeader(
            data_offset=data_offset,
            n_records=n_records,
            labels=[b.strip().decode("latin-1") for b in fields["label"]],
            units=[b.strip().decode("latin-1") for b in fields["unit"]],
            physical_min=np.array([_number(b) for b in fields["pmin"]], dtype=np.float64),
            physical_max=np.array([_number(b) for b in fields["pmax"]], dtype=np.float64),
            digital_min=np.array([_number(b) for b in fields["dmin"]], dtype=np.float64),
            digital_max=np.array([_number(b) for b in fields["dmax"]], dtype=np.float64),
            n_samps=np.array([int(_text(b)) for b in fields["n_samps"]], dtype=np.int64),
        )
    except ValueError:
        return None


def read_edf_scaled(path: Path, raw, scales: np.ndarray) -> np.ndarray | None:
    """The channels of ``raw`` (an EDF MNE opened without loading), scaled to stored units; or None.

    ``scales`` is the factor from MNE's SI units to the stored units, per channel of ``raw``.
    """
    n_ch, n_times = len(raw.ch_names), int(raw.n_times)
    if (
        n_ch == 0
        or n_times == 0
        or len(scales) != n_ch
        or raw.preload
        or raw.first_samp != 0
        or len(raw.filenames) != 1
        or raw.info["projs"]
        or raw.compensation_grade not in (None, 0)
        or "stim" in raw.get_channel_types()
    ):
        return None
    header = read_edf_header(path)
    if header is None:
        return None
    signals = [i for i, label in enumerate(header.labels) if label != _ANNOTATION_LABEL]
    by_label = {header.labels[i]: i for i in signals}
    if len(by_label) != len(signals) or not all(name in by_label for name in raw.ch_names):
        return None  # repeated labels (MNE renames them) or names MNE changed
    idx = np.array([by_label[name] for name in raw.ch_names], dtype=np.int64)
    n_samps = header.n_samps
    buf = int(n_samps[signals].max())
    starts = np.concatenate([[0], np.cumsum(n_samps)])
    if (
        n_times != header.n_records * buf
        or not (n_samps[idx] == buf).all()
        or not (starts[idx] == starts[idx[0]] + buf * np.arange(n_ch)).all()
    ):
        return None
    per_record = int(n_samps.sum())  # int16 values per data record, annotation signals included
    n_rec = header.n_records
    if path.stat().st_size < header.data_offset + 2 * per_record * n_rec:
        return None  # truncated: let MNE read it (and warn)
    digital_range = header.digital_max[idx] - header.digital_min[idx]
    physical_range = header.physical_max[idx] - header.physical_min[idx]
    if not (np.isfinite(digital_range).all() and (digital_range != 0).all() and (physical_range != 0).all()):
        return None  # MNE substitutes 1 for these ranges (with a warning)
    cal = physical_range / digital_range
    offset = header.physical_min[idx] - header.digital_min[idx] * cal
    units = [header.units[i] for i in idx]
    gain = np.array([1e-6 if u in _MICRO else 1e-3 if u == "mV" else 1.0 for u in units], dtype=np.float64)
    layout = _Layout(path, header.data_offset, int(starts[idx[0]]), per_record, buf, n_ch)
    factors = tuple(v[:, None, None] for v in (cal, offset, gain, scales))
    out = np.empty((n_ch, n_times), dtype=np.float32)
    step = -(-n_rec // (helper_threads() * _BLOCK_RECORDS)) * _BLOCK_RECORDS
    ranges = [(r0, min(n_rec, r0 + step)) for r0 in range(0, n_rec, step)]
    if len(ranges) == 1:
        ok = [_decode(layout, factors, out, *ranges[0])]
    else:  # numpy and readinto release the GIL: the ranges decode side by side
        with ThreadPoolExecutor(max_workers=len(ranges), thread_name_prefix="edf-decode") as pool:
            ok = list(pool.map(lambda r: _decode(layout, factors, out, *r), ranges))
    if not all(ok):
        return None
    # Cross-check against MNE's own reader where it is cheap: the first and last records.
    k = min(n_times, 2 * buf)
    for a in (0, n_times - k):
        ref = np.empty((n_ch, k), dtype=np.float32)
        np.multiply(raw.get_data(start=a, stop=a + k), scales[:, None], out=ref, casting="unsafe")
        if not np.array_equal(ref.view(np.int32), out[:, a : a + k].view(np.int32)):
            return None
    return out


@dataclass(frozen=True)
class _Layout:
    path: Path
    data_offset: int  # bytes before the first data record
    first: int  # int16 offset of the first picked signal in a record
    per_record: int  # int16 values per data record, annotation signals included
    buf: int  # samples per record of each picked signal
    n_ch: int


def _decode(layout: _Layout, factors: tuple, out: np.ndarray, r_start: int, r_stop: int) -> bool:
    """Decode data records ``[r_start, r_stop)`` into their columns of ``out``; False if short."""
    cal, offset, gain, scale = factors
    n_ch, buf, first = layout.n_ch, layout.buf, layout.first
    records = np.empty((_BLOCK_RECORDS, layout.per_record), dtype="<i2")
    work = np.empty((n_ch, _BLOCK_RECORDS, buf), dtype=np.float64)
    with open(layout.path, "rb", buffering=0) as f:
        f.seek(layout.data_offset + 2 * layout.per_record * r_start)
        for r0 in range(r_start, r_stop, _BLOCK_RECORDS):
            nr = min(_BLOCK_RECORDS, r_stop - r0)
            block = records[:nr]
            if f.readinto(memoryview(block).cast("B")) != block.nbytes:
                return False
            x = block[:, first : first + n_ch * buf].reshape(nr, n_ch, buf).transpose(1, 0, 2)
            w = work[:, :nr]
            np.multiply(x, cal, out=w)
            w += offset
            w *= gain
            np.multiply(
                w, scale, out=out[:, r0 * buf : (r0 + nr) * buf].reshape(n_ch, nr, buf), casting="unsafe"
            )
    return True

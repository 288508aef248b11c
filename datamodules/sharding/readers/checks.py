"""Checks that say what is wrong with an input file before a reader fails on it with another message.

MNE, mne-bids and nibabel report some broken inputs as something else: a short text file named
``.fif`` as ``'NoneType' object has no attribute 'kind'``, a broken BIDS ``channels.tsv`` as an
unreadable EDF (numpy's "number of columns changed"), a truncated ``.nii.gz`` not at all until its
data is read. Each check here returns or raises a phrase naming the file and its problem.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from neurotrain.datamodules.sharding.options import ShardError

# A FIF file opens with the tag FIFF_FILE_ID (kind 100) of type FIFFT_ID_STRUCT (31), 20 bytes long.
_FIF_FILE_ID = struct.pack(">iii", 100, 31, 20)
_BLOCK = 1 << 16  # decompressed bytes read at a time


def check_fif(path: Path) -> None:
    """Refuse a ``.fif``/``.fif.gz`` that does not start with the FIF file-id tag."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            head = f.read(16)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ShardError(str(path), f"cannot be read as FIF: not a FIF file ({exc})") from exc
    if head[:12] == _FIF_FILE_ID:
        return
    if not head:
        what = "the file is empty"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        what = f"it holds text: {head.decode('ascii')!r}..."
    else:
        what = f"it starts with bytes {head.hex(' ')}"
    raise ShardError(
        str(path), f"cannot be read as FIF: not a FIF file ({what}; a FIF file starts with a file-id tag)"
    )


def channels_tsv_problem(tsv: Path) -> str | None:
    """What is wrong with a BIDS ``channels.tsv`` (as a phrase), or None when it is well formed."""
    try:
        text = tsv.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        return f"it cannot be read: {exc}"
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text ({exc.reason} at byte {exc.start})"
    rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not rows:
        return (
            "it is empty; a channels.tsv holds a header row (name, type, units, ...) and one row per channel"
        )
    header = [h.strip() for h in rows[0][1].split("\t")]
    missing = [c for c in ("name", "type") if c not in header]
    if missing:
        tabs = "\t" in rows[0][1]
        hint = (
            "" if tabs or "," not in rows[0][1] else "; its columns are separated by commas, BIDS needs tabs"
        )
        return (
            f"its header row has no {' or '.join(repr(c) for c in missing)} column "
            f"(header: {rows[0][1][:120]!r}){hint}"
        )
    if len(rows) == 1:
        return "it lists no channels (only a header row)"
    seen: dict[str, int] = {}
    for n, line in rows[1:]:
        cells = line.split("\t")
        if len(cells) != len(header):
            return f"line {n} has {len(cells)} tab-separated fields where the header row has {len(header)}"
        name = cells[header.index("name")].strip()
        if name in seen:
            return f"it lists channel {name!r} twice (lines {seen[name]} and {n})"
        seen[name] = n
    return None


# BIDS channel types of recorded signals: a channels.tsv row of these types must have its channel in
# the recording. Trigger/status rows (TRIG, SYSCLOCK, ...) often are not channels MNE reads as data.
_SIGNAL_TYPES = {"EEG", "ECOG", "SEEG", "DBS", "MEGMAG", "MEGGRADAXIAL", "MEGGRADPLANAR", "EOG", "ECG", "EMG"}


def listed_channels(tsv: Path, signals_only: bool = False) -> list[str]:
    """The ``name`` column of a well-formed ``channels.tsv`` (``signals_only``: rows of a recorded
    signal type, ``_SIGNAL_TYPES``)."""
    rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    header = [h.strip() for h in rows[0]]
    col = header.index("name")
    kind = header.index("type") if "type" in header else None
    return [
        r[col].strip()
        for r in rows[1:]
        if not signals_only or (kind is not None and r[kind].strip().upper() in _SIGNAL_TYPES)
    ]


def channel_mismatch(tsv: Path, ch_names: list[str], listed_only: bool = False) -> str | None:
    """How the channel names of a well-formed ``channels.tsv`` differ from the recording's, or None.

    ``listed_only``: only signal channels (EEG, ECOG, SEEG, DBS, MEG, EOG, ECG, EMG rows) the sidecar
    lists and the recording lacks count; the recording's channels missing from the sidecar, and
    trigger/status rows, are then tolerated, as mne-bids tolerates them."""
    names = listed_channels(tsv)
    extra = [n for n in names if n not in ch_names]
    if listed_only:
        signals = set(listed_channels(tsv, signals_only=True))
        extra = [n for n in extra if n in signals]
        if not extra:
            return None
    absent = [n for n in ch_names if n not in names]
    if not extra and not absent:
        return None
    parts = []
    if extra:
        parts.append(
            f"it lists {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}, not in the recording"
        )
    if absent:
        parts.append(
            f"the recording has {', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}, not listed"
        )
    return "its channel names do not match the recording's: " + "; ".join(parts)


def volume_data_problem(path: Path, img) -> str | None:
    """Whether the data of a NIfTI/MGZ image is all there: a phrase saying what is missing, or None.

    Compares the bytes the file (decompressed, for ``.gz``/``.mgz``) holds with the header's data
    offset plus shape × voxel size. A compressed file is read to its end once (a damaged gzip
    stream is reported as such); an uncompressed one only has its size compared.
    """
    try:
        offset = int(getattr(img.dataobj, "offset", None) or img.header.get_data_offset())
        shape = tuple(int(v) for v in img.shape)
        dtype = np.dtype(img.get_data_dtype())
    except Exception:  # a header nibabel read but cannot describe: leave it to the reader
        return None
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    promise = (
        f"the {expected:,} bytes its header promises ({' x '.join(map(str, shape))} {dtype.name} voxels)"
    )
    name = path.name.lower()
    if not (name.endswith(".gz") or name.endswith(".mgz")):
        size = path.stat().st_size
        return None if size >= expected else f"truncated file: it holds {size:,} of {promise}"
    held = 0  # decompressed bytes, to within one block
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(_BLOCK):
                held += len(block)
    except EOFError:
        return f"truncated file: its gzip stream ends after about {held:,} of {promise}"
    except (OSError, zlib.error) as exc:
        return f"damaged file: its gzip stream cannot be decompressed after about {held:,} bytes ({exc})"
    return None if held >= expected else f"truncated file: it decompresses to {held:,} of {promise}"

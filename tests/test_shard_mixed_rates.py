"""A corpus of recordings at different sampling rates shards to the same bytes, run after run.

Recordings at 128, 200 and 256 Hz (EDF and FIF in a folder, and EDF in a BIDS dataset), sharded
with their own rates kept and resampled to one rate with ``--sfreq``: every shard and the
manifest (but ``created_by``, which names the output folder) are the same bytes across two runs
and across ``--workers 1`` and ``--workers 2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import synthetic

from neurotrain.datamodules.sharding import shard_dataset

RATES = (128.0, 200.0, 256.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import mne
    import mne_bids

    base = tmp_path_factory.mktemp("mixed")
    folder = base / "folder"
    folder.mkdir()
    for i, sfreq in enumerate(RATES):
        events = [(2.0, "face"), (7.25, "house"), (13.5, "face")]
        synthetic.write_edf(folder / f"sub-{i:02d}_edf.edf", seconds=21.3, sfreq=sfreq, seed=i, events=events)
        synthetic.write_fif(
            folder / f"sub-{i:02d}_fif_raw.fif", seconds=17.0, sfreq=sfreq, seed=10 + i, events=events
        )
    bids = base / "bids"
    for i, sfreq in enumerate(RATES):
        raw = synthetic.make_raw(
            sfreq=sfreq, seconds=19.0, seed=20 + i, events=[(3.0, "face"), (9.5, "house")]
        )
        tmp = base / f"_tmp{i}_raw.fif"
        raw.save(tmp, overwrite=True, verbose="error")
        raw = mne.io.read_raw_fif(tmp, verbose="error")
        bp = mne_bids.BIDSPath(subject=f"{i:02d}", task="rates", datatype="eeg", root=bids)
        mne_bids.write_raw_bids(raw, bp, format="EDF", allow_preload=False, overwrite=True, verbose="error")
        tmp.unlink()
    return {"folder": folder, "bids": bids}


def _bytes(out: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}
    manifest = json.loads((out / "manifest.json").read_bytes())
    manifest.pop("created_by")
    files["manifest.json"] = json.dumps(manifest, sort_keys=True).encode()
    return files


@pytest.mark.parametrize("source", ["folder", "bids"])
@pytest.mark.parametrize("sfreq", [None, 128.0])
def test_mixed_rates_same_bytes_across_runs_and_workers(
    corpus: dict[str, Path], source: str, sfreq: float | None, tmp_path: Path
) -> None:
    opts = {"segment_seconds": 5.0, "min_segment_seconds": 1.0, "dtype": "float16"}
    if sfreq is not None:
        opts["sfreq"] = sfreq
    runs = [("a", 1), ("b", 1), ("c", 2)]
    got = {name: shard_dataset([corpus[source]], tmp_path / name, workers=w, **opts) for name, w in runs}
    first = _bytes(tmp_path / "a")
    assert len([n for n in first if n.endswith(".tar")]) == len(got["a"]["recordings"])
    for name, _ in runs[1:]:
        assert _bytes(tmp_path / name) == first, f"run {name} differs"
    rates = sorted({r["sfreq"] for r in got["a"]["recordings"]})
    assert rates == ([sfreq] if sfreq is not None else list(RATES))
    for rec in got["a"]["recordings"]:
        assert rec["n_segments"] >= 3 and rec["event_counts"]

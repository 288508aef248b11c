"""fMRI runs and structural images as shard samples: one sample per run or volume.

An fMRI run becomes parcel series ``signal.npy`` [parcels, TRs] (the signal layout, ``sfreq`` =
1/TR, parcel centroids as positions) with its BIDS ``events.tsv`` as ``events.json``; a T1 becomes ``volume.npy`` [D, H, W] on the RAS grid.
Non-finite parcel values follow ``--nonfinite`` like signals.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from neurotrain.datamodules.io.files import dumps_json
from neurotrain.datamodules.sharding import statistics as stats
from neurotrain.datamodules.sharding.encoding import RecordingOutput, encode_npy, recording_ids
from neurotrain.datamodules.sharding.options import ShardError, ShardOptions
from neurotrain.datamodules.sharding.readers.anat import read_anat
from neurotrain.datamodules.sharding.readers.fmri_events import run_events
from neurotrain.datamodules.sharding.readers.fmri_surface import read_surface_fmri
from neurotrain.datamodules.sharding.readers.volumes import read_fmri
from neurotrain.datamodules.sharding.sources import SourceItem


def fmri_samples(item: SourceItem, options: ShardOptions) -> RecordingOutput:
    """The run's parcel series as one sample (``signal.npy`` [parcels, TRs]); ``ShardError`` names the file."""
    ps = read_surface_fmri(item, options) if item.hemispheres else read_fmri(item, options)
    bad = ~np.isfinite(ps.data)
    if bad.any():
        if options.nonfinite == "fail":
            raise ShardError(
                str(item.path), "NaN or infinite values in the parcel series (use --nonfinite zero)"
            )
        ps.data[bad] = 0.0
    types = ["bold"] * len(ps.names)
    events = run_events(item.path, ps.data.shape[1] * ps.tr)  # BIDS events.tsv: blocks, trials
    acc = stats.accumulate(ps.data, types, np.zeros(len(types), dtype=bool))
    meta = {
        **recording_ids(item),
        "modality": "fmri",
        "sfreq": 1.0 / ps.tr,
        "tr": ps.tr,
        "n_times": int(ps.data.shape[1]),
        "ch_names": ps.names,
        "ch_types": types,
        "units": [
            "z" if options.fmri_normalize == "zscore" else "%" if options.fmri_normalize == "psc" else "a.u."
        ]
        * len(types),
        "positions": [[float(v) for v in p] for p in ps.positions],
        "position_frame": ps.position_frame,
        "position_source": "atlas",
        "bad_channels": [],
        "segment_index": 0,
        "onset_s": 0.0,
        "duration_s": ps.data.shape[1] * ps.tr,
        "preprocessing": ps.preprocessing,
    }
    sample = {
        "__key__": f"{item.recording_id}_seg00000",
        "signal.npy": encode_npy(ps.data.astype(options.dtype)),
        "meta.json": dumps_json(meta).encode(),
        "events.json": dumps_json(events).encode(),
    }
    summary = {
        **recording_ids(item),
        "modality": "fmri",
        "sfreq": 1.0 / ps.tr,
        "tr": ps.tr,
        "n_channels": len(ps.names),
        "ch_names": ps.names,
        "ch_types": types,
        "duration_s": meta["duration_s"],
        "n_segments": 1,
        "bad_channels": [],
        "flat_channels": [],
        "dropped_segments": [],
        "zeroed_values": int(bad.sum()),
        "position_source": "atlas",
        "n_positions": len(ps.names),
        "event_counts": dict(sorted(Counter(e["label"] for e in events).items())),
        "preprocessing": ps.preprocessing,  # confounds, filters, atlas: in the manifest too
    }
    if ps.preprocessing.get("warnings"):  # e.g. a resampled atlas, a TR disagreement, one hemisphere
        summary["warnings"] = list(ps.preprocessing["warnings"])
    return RecordingOutput(iter([sample]), summary, acc)


def anat_samples(item: SourceItem, options: ShardOptions) -> RecordingOutput:
    """The structural image as one sample (``volume.npy`` [D, H, W], RAS, normalised)."""
    vol = read_anat(item, options)
    meta = {
        **recording_ids(item),
        "modality": "anat",
        "voxel_size": vol.voxel_size,
        "shape": list(vol.data.shape),
        "affine": [[float(v) for v in row] for row in vol.affine],
        "orientation": "RAS",
        "normalisation": vol.preprocessing["normalisation"],
        "preprocessing": vol.preprocessing,
    }
    sample = {
        "__key__": f"{item.recording_id}_seg00000",
        "volume.npy": encode_npy(vol.data.astype(options.dtype)),
        "meta.json": dumps_json(meta).encode(),
    }
    summary = {
        **recording_ids(item),
        "modality": "anat",
        "n_channels": 0,
        "ch_names": [],
        "ch_types": [],
        "shape": list(vol.data.shape),
        "voxel_size": vol.voxel_size,
        "duration_s": 0.0,
        "n_segments": 1,
        "bad_channels": [],
        "flat_channels": [],
        "dropped_segments": [],
        "zeroed_values": 0,
        "position_source": "none",
        "n_positions": 0,
        "event_counts": {},
        "preprocessing": vol.preprocessing,  # also in the manifest: how every volume was made
    }
    return RecordingOutput(iter([sample]), summary, {})

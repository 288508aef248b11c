"""Argument parsing of ``neurotrain shard`` (the options mirror ``ShardOptions``)."""

from __future__ import annotations

import argparse
import sys


def add_shard_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``neurotrain shard``."""
    p = sub.add_parser(
        "shard",
        help="convert recordings (BIDS, folders, EDF/BDF/GDF/FIF/BrainVision/EEGLAB/NIfTI/MGZ) into shards",
        description="Convert raw recordings into sharded WebDataset tar files plus manifest.json. "
        "Re-running the same command resumes an interrupted run.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="BIDS root, folder, recording file, or example:NAME (eeg, fmri, fmri_rest, t1)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--modality", choices=["eeg", "meg", "ieeg", "fmri", "anat"], help="force the modality")
    g = p.add_argument_group("signals (EEG/MEG/iEEG)")
    g.add_argument("--sfreq", type=float, help="resample to this rate (Hz)")
    g.add_argument("--l-freq", type=float, help="band-pass low edge (Hz)")
    g.add_argument("--h-freq", type=float, help="band-pass high edge (Hz)")
    g.add_argument("--notch", type=float, nargs="+", default=[], metavar="HZ", help="notch frequencies (Hz)")
    g.add_argument("--reference", help="re-reference: 'average' or comma-separated channel names")
    g.add_argument("--segment-seconds", type=float, default=60.0, help="segment length (default 60 s)")
    g.add_argument(
        "--min-segment-seconds", type=float, default=10.0, help="drop a shorter tail (default 10 s)"
    )
    g.add_argument(
        "--montage",
        default="auto",
        help="'auto' (file/BIDS positions, else the standard 10-05 montage by name), 'none', or a standard montage name",
    )
    g.add_argument(
        "--channel-types", nargs="+", default=[], metavar="TYPE", help="keep only these channel types"
    )
    g.add_argument(
        "--flat", choices=["mark", "drop", "fail"], default="mark", help="flat channels (default mark as bad)"
    )
    g.add_argument("--flat-threshold", type=float, default=1e-3, help="std below this × type median = flat")
    g.add_argument(
        "--noisy-threshold",
        type=float,
        default=5.0,
        help="std above this × type median: noisy, marked bad (0: off)",
    )
    g.add_argument(
        "--stimuli",
        metavar="DIR",
        help="store each event's stimulus image (events.tsv stim_file relative to DIR, "
        "else DIR/<label>.png|jpg|jpeg) for brain-image alignment",
    )
    g = p.add_argument_group("fMRI and structural MRI")
    g.add_argument("--atlas", help="label image for fMRI parcel means (.nii/.nii.gz)")
    g.add_argument("--atlas-labels", help="text file with one parcel name per line (increasing label order)")
    g.add_argument(
        "--atlas-background", type=float, default=0.0, help="atlas value that is not a parcel (default 0)"
    )
    g.add_argument("--tr", type=float, help="override the repetition time (s)")
    g.add_argument("--fmri-normalize", choices=["zscore", "psc", "none"], default="zscore")
    g.add_argument("--voxel-size", type=float, default=2.0, help="T1 grid spacing in mm (default 2)")
    g.add_argument("--volume-shape", type=int, nargs=3, default=[96, 112, 96], metavar=("D", "H", "W"))
    g = p.add_argument_group("dataset")
    g.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored sample type")
    g.add_argument(
        "--split",
        type=float,
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VAL", "TEST"),
        help="subject split ratios (default 0.8 0.1 0.1)",
    )
    g.add_argument("--split-seed", type=int, default=0)
    g.add_argument(
        "--stats",
        choices=["mean_std", "robust"],
        default="robust",
        help="normalisation statistics the loader applies (both are recorded)",
    )
    g.add_argument("--shard-size-mb", type=float, default=256.0, help="target shard size (MB)")
    g.add_argument(
        "--nonfinite",
        choices=["fail", "drop", "zero"],
        default="fail",
        help="NaN/inf samples: fail, drop the segment, or set to zero",
    )
    g.add_argument(
        "--on-error",
        choices=["fail", "skip"],
        default="fail",
        help="a bad file: stop (exit 1, no manifest) or record it under 'skipped' and go on",
    )
    g.add_argument("--workers", type=int, default=1, help="recordings processed in parallel")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_shard)


def run_shard(args: argparse.Namespace) -> int:
    """Run ``neurotrain shard``; prints a one-line result and returns the exit code."""
    from neurotrain.datamodules.sharding import shard_dataset
    from neurotrain.datamodules.sharding.options import ShardError

    options = {
        "modality": args.modality,
        "sfreq": args.sfreq,
        "l_freq": args.l_freq,
        "h_freq": args.h_freq,
        "notch": args.notch,
        "reference": args.reference,
        "segment_seconds": args.segment_seconds,
        "min_segment_seconds": args.min_segment_seconds,
        "montage": args.montage,
        "channel_types": args.channel_types,
        "stimuli": args.stimuli,
        "flat": args.flat,
        "flat_threshold": args.flat_threshold,
        "noisy_threshold": args.noisy_threshold,
        "atlas": args.atlas,
        "atlas_labels": args.atlas_labels,
        "atlas_background": args.atlas_background,
        "tr": args.tr,
        "fmri_normalize": args.fmri_normalize,
        "voxel_size": args.voxel_size,
        "volume_shape": tuple(args.volume_shape),
        "dtype": args.dtype,
        "split_ratios": tuple(args.split),
        "split_seed": args.split_seed,
        "stats": args.stats,
        "shard_size_mb": args.shard_size_mb,
        "nonfinite": args.nonfinite,
        "on_error": args.on_error,
        "workers": args.workers,
    }
    try:
        manifest = shard_dataset(
            args.sources,
            args.out,
            command=["neurotrain", *sys.argv[1:]],
            progress=not args.no_progress,
            **options,
        )
    except (ShardError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        print("no manifest was written; finished recordings are kept and a re-run resumes", file=sys.stderr)
        return 1
    t = manifest["totals"]
    print(
        f"wrote {args.out}: {t['recordings']} recordings, {t['subjects']} subjects, {t['samples']} samples, "
        f"{len(manifest['shards'])} shards, {t['bytes'] / 1e6:.1f} MB, {t['hours']:.2f} h"
        + (f"; skipped {len(manifest['skipped'])} file(s)" if manifest["skipped"] else "")
    )
    return 0

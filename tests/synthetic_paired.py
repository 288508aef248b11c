"""The simulated paired EEG-photograph dataset; the generator ships in the package
(``neurotrain simulate paired``), this module keeps the tests' import path."""

from neurotrain.train.simulated_paired import (  # noqa: F401
    CHANNELS,
    LATENCIES_S,
    PHOTOS,
    PairedDataset,
    image_features,
    photographs,
    write_paired_dataset,
)


def shard_two_ways(root, ds: PairedDataset):
    """``root/shards`` split by stimulus (0.7 / 0.1 / 0.2 of the images) and ``root/by_subject``
    split by subject (0.5 / 0 / 0.5): the split the brain-image protocols need and one they refuse."""
    from neurotrain.datamodules.sharding import shard_dataset

    common = dict(stimuli=ds.stimuli, segment_seconds=60.0, dtype="float32")
    by_stimulus, by_subject = root / "shards", root / "by_subject"
    shard_dataset([ds.bids_root], by_stimulus, split_by="stimulus", split_ratios=(0.7, 0.1, 0.2), **common)
    shard_dataset([ds.bids_root], by_subject, split_ratios=(0.5, 0.0, 0.5), **common)
    return by_stimulus, by_subject

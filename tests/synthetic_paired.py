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

"""The loading side: shard datasets in, padded, normalised, resumable batches out.

``datamodule`` (``ShardDataModule``, what LightningCLI configures), ``loader`` (the DataLoader
that sets epoch and resume point), ``plan`` and ``streaming`` (the deterministic, rank-balanced
window order and the iterable that delivers it), ``tar_index`` (segments located by byte offset),
``windows`` (how windows and event epochs are cut), ``collate`` (channel layouts, padding and
normalisation into a batch), ``selection`` (per-stage subject/event rules), ``normalize``
(statistics tables), ``images`` (stimulus images of paired data), ``remote`` (URL and ``pipe:``
datasets staged into the cache).

Every manifest is read through ``format.manifest.load_manifest`` (schema version checked). May
import ``neurotrain.datamodules.io`` and ``neurotrain.datamodules.format``; never the sharding
side, ``models`` or ``train``.
"""

"""The shard format, the contract between the writing and the loading side.

``manifest`` (the dataset index: its file name, schema version and the one checked reader) and
``channel_types`` (the channel-type vocabulary batches index into). May import
``neurotrain.datamodules.io`` only.
"""

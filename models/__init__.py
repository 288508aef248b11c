"""Encoders, objectives and LightningModules.

- `signal_encoder` (channel-agnostic transformer), `volume_encoder` (3-D patch ViT),
  `image_encoder` (timm, local weights only): encoders with an explicit input contract;
- `objectives` (masked reconstruction, supervised heads, InfoNCE), `pooling` (how heads read
  tokens), `token_cache` (linear probes encode each window once);
- `modules` (the LightningModules a config names: pretrain, classifier/regressor, alignment);
- `optim` (`OptimizerConfig`, layer-wise lr decay, warmup-cosine), `metrics` and
  `metric_names` (torchmetrics collections; metric names and which way they go),
  `checkpoint_io` (safe encoder loading for ``init_from``), `synthetic` (a batch in the data
  contract, for trying a model without data).

May import ``neurotrain.datamodules.io`` and ``neurotrain.datamodules.format``, never the
sharding or loading side or ``train``. Nothing is imported here, so importing one module does
not pull in timm or Lightning.
"""

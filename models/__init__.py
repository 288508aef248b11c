"""Encoders, objectives and LightningModules; `neurotrain.models.registry` names them all.

Modules: `signal_encoder` (channel-agnostic transformer), `volume_encoder` (3-D patch ViT),
`image_encoder` (timm, local weights only), `objectives` (masked reconstruction, supervised heads,
InfoNCE), `optim` (layer-wise lr decay, warmup-cosine), `metrics` (torchmetrics collections),
`checkpoint_io` (safe encoder loading for ``init_from``), `lightning_modules`, `registry`.
Nothing is imported here, so importing one module does not pull in timm or Lightning.
"""

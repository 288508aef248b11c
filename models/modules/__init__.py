"""LightningModules: one signal encoder plus one objective each, built from plain typed arguments.

The constructor signatures are the config schema (LightningCLI/jsonargparse): ``encoder`` and
``optimizer`` are nested groups (`SignalEncoderConfig`, `OptimizerConfig`), so YAML reads
``model.init_args.encoder: {size: small, patch_size: 64}`` and a sweep passes
``--model.encoder.size=base`` or ``--model.optimizer.lr=3e-4``. Saved hyperparameters hold those
groups as plain dicts, so a checkpoint loads with ``weights_only=True``.

- `base`: `EncoderModule`, the shared encoder, ``init_from`` and optimiser set-up;
- `pretrain`: `PretrainModule` (masked reconstruction);
- `supervised`: `SupervisedModule` and its `ClassifierModule` / `RegressorModule`;
- `alignment`: `AlignmentModule` (symmetric InfoNCE with an image or a second signal);
- `volume`: `VolumePretrainModule` (masked 3-D patch reconstruction of T1 volumes) and
  `VolumeClassifierModule` / `VolumeRegressorModule` on the same `VolumeEncoder`;
- `encoding_readout`: `EncodingReadoutModule` (image network layer -> factorised or attention
  readout -> each channel's response: a learned brain-encoding model);
- `braindecode_classifier`: `BraindecodeClassifierModule`, braindecode's EEGNet, ShallowFBCSPNet and
  Deep4Net trained by the same loop and scored with the same metrics (the deep baselines).

Configs name them ``neurotrain.models.modules.PretrainModule`` (the older path
``neurotrain.models.lightning_modules.*`` still works).
"""

from neurotrain.models.modules.alignment import AlignmentModule
from neurotrain.models.modules.base import SIGNAL_KEYS, EncoderModule, encoder_config
from neurotrain.models.modules.braindecode_classifier import BraindecodeClassifierModule
from neurotrain.models.modules.encoding_readout import EncodingReadoutModule
from neurotrain.models.modules.pretrain import PretrainModule
from neurotrain.models.modules.supervised import ClassifierModule, RegressorModule, SupervisedModule
from neurotrain.models.modules.volume import (
    VolumeClassifierModule,
    VolumePretrainModule,
    VolumeRegressorModule,
)

__all__ = [
    "SIGNAL_KEYS",
    "AlignmentModule",
    "BraindecodeClassifierModule",
    "ClassifierModule",
    "EncoderModule",
    "EncodingReadoutModule",
    "PretrainModule",
    "RegressorModule",
    "SupervisedModule",
    "VolumeClassifierModule",
    "VolumePretrainModule",
    "VolumeRegressorModule",
    "encoder_config",
]

"""`AlignmentModule`: contrastive alignment of the signal with a second view (image or signal).

Batch keys: the signal keys + ``image`` [B, 3, H, W] (``pair="image"``), or the second signal's
keys with ``pair_prefix`` (``pair_signal``, ``pair_channel_mask``, …) for ``pair="signal"``,
and ``pair_orientations``/``pair_orientation_mask`` when the batch has them (MEG coil normals).

EEG <-> MEG: ``ShardDataModule(channel_types=["eeg"], pair_channel_types=["mag", "grad"])`` gives
both views of the same windows; ``AlignmentModule(pair="signal")`` trains one encoder per view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from neurotrain.models.image_encoder import ImageEncoder
from neurotrain.models.modules.base import SIGNAL_KEYS, EncoderModule, encoder_config, plain_init_args
from neurotrain.models.modules.subject_adaptation import SubjectAdaptation
from neurotrain.models.objectives import ContrastiveAlignment, topk_retrieval_accuracy
from neurotrain.models.optim import OptimizerConfig
from neurotrain.models.signal_encoder import ORIENTATION_KEYS, SignalEncoder, SignalEncoderConfig
from neurotrain.models.subject_layers import SubjectLayersConfig


class AlignmentModule(SubjectAdaptation, EncoderModule):
    """Contrastive alignment of the signal with a second view by symmetric InfoNCE.

    ``pair="image"``: a timm image encoder (``image_model``, local ``image_weights``) on
    ``batch["image"]``. ``pair="signal"``: a second signal encoder (``pair_encoder``, default the
    same config) on the batch keys prefixed ``pair_prefix``. ``freeze_pair`` keeps the second
    encoder fixed (e.g. pretrained image weights). ``mse_weight`` > 0 adds that weight times the squared
    distance of the signal's embedding to its image's (target detached), as MindEye2 adds an MSE
    to the contrastive loss. ``shuffle_pairing`` is the trained control: every training and
    validation batch's second views are permuted before the loss, so nothing paired is learned
    (``evaluate --protocol retrieval --trained-control``). Validation logs top-k retrieval accuracy over
    the whole validation set in both directions (signal->pair ``a2b``, pair->signal ``b2a``).
    ``subject_layers`` puts per-subject input layers before the signal encoder, so subjects with
    different channels share one aligned space (MindBridge); ``adapt_from`` + ``adapt_subjects``
    adapt it to new subjects (``adapt_head``: the projections train too), as in
    `SupervisedModule` (``models/modules/subject_adaptation.py``).
    """

    ADAPT_HEAD = ("alignment",)

    def __init__(
        self,
        encoder: SignalEncoderConfig | None = None,
        pair: str = "image",
        image_model: str = "resnet18",
        image_weights: str | None = None,
        image_size: int | None = None,
        pair_encoder: SignalEncoderConfig | None = None,
        pair_prefix: str = "pair_",
        freeze_pair: bool = False,
        embed_dim: int = 128,
        temperature: float = 0.07,
        retrieval_k: list[int] | None = None,
        mse_weight: float = 0.0,
        shuffle_pairing: bool = False,
        subject_layers: SubjectLayersConfig | None = None,
        adapt_from: str | None = None,
        adapt_subjects: list[str] | None = None,
        adapt_head: bool = False,
        optimizer: OptimizerConfig | None = None,
        init_from: str | None = None,
    ) -> None:
        args = plain_init_args(locals())
        if args["pair_encoder"] is None:
            args["pair_encoder"] = args["encoder"]
        super().__init__(args["encoder"], args["optimizer"], init_from)
        self.save_config()
        if image_size is None:  # unset: leave the key to the data's image_size (Lightning merges both)
            self.hparams.pop("image_size", None)
            self._hparams_initial.pop("image_size", None)  # what Lightning's logger merge reads
        if pair == "image":
            self.pair_encoder = ImageEncoder(image_model, image_weights, image_size)
        elif pair == "signal":
            self.pair_encoder = SignalEncoder.from_config(encoder_config(args["pair_encoder"]))
        else:
            raise ValueError(f"pair must be 'image' or 'signal', got {pair!r}")
        if freeze_pair:
            self.pair_encoder.requires_grad_(False)
            self.pair_encoder.eval()  # BatchNorm statistics stay frozen too
        self.pair = pair
        self.pair_prefix = pair_prefix
        self.freeze_pair = freeze_pair
        self.retrieval_k = list(retrieval_k or [1, 5])
        if mse_weight < 0:
            raise ValueError(f"mse_weight must be >= 0, got {mse_weight}")
        self.mse_weight = float(mse_weight)
        self.shuffle_pairing = bool(shuffle_pairing)
        self.alignment = ContrastiveAlignment(self.encoder.dim, self.pair_encoder.dim, embed_dim, temperature)
        self._embeddings: dict[str, list[tuple[Tensor, Tensor]]] = {}  # stage -> (z_a, z_b) per batch
        self.init_subject_layers(subject_layers, adapt_from, adapt_subjects, adapt_head)

    def train(self, mode: bool = True) -> AlignmentModule:
        super().train(mode)
        if self.freeze_pair:
            self.pair_encoder.eval()
        self.freeze_for_adaptation()
        return self

    def compute_loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pooled_a = self.encoder(self.adapt_input(batch)).pooled  # [B, Da] (subject layers first)
        view = self.pair_batch(batch)
        if self.shuffle_pairing:  # the control: each signal meets another sample's second view
            order = torch.randperm(pooled_a.shape[0], device=pooled_a.device)
            view = {k: v[order] for k, v in view.items()}
        pooled_b = self.pair_encoder(view).pooled  # [B, Db]
        loss, z_a, z_b = self.alignment(pooled_a, pooled_b)
        out = {"loss": loss, "z_a": z_a, "z_b": z_b}
        if self.mse_weight > 0:  # MindEye2-like: pull the brain embedding onto the image's
            mse = F.mse_loss(z_a, z_b.detach(), reduction="none").sum(-1).mean()
            out.update(loss=loss + self.mse_weight * mse, mse=mse.detach(), nce=loss.detach())
        return out

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The signal's unit-norm embedding in the shared space [B, E] (for retrieval)."""
        pooled = self.encoder(self.adapt_input(batch)).pooled  # [B, Da]
        return torch.nn.functional.normalize(self.alignment.proj_a(pooled), dim=-1)

    def pair_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The second view's inputs, keyed as its encoder expects (orientations when present)."""
        if self.pair == "image":
            return {"image": batch["image"]}
        view = {key: batch[self.pair_prefix + key] for key in SIGNAL_KEYS}
        view.update(
            {k: batch[self.pair_prefix + k] for k in ORIENTATION_KEYS if self.pair_prefix + k in batch}
        )
        return view

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train/temperature", 1.0 / self.alignment.logit_scale.exp().detach())
        return loss

    def update_evaluation(self, batch: dict[str, Tensor], outputs: dict[str, Tensor], stage: str) -> None:
        self._embeddings.setdefault(stage, []).append((outputs["z_a"].detach(), outputs["z_b"].detach()))

    def on_validation_epoch_end(self) -> None:
        self._log_retrieval("val")

    def on_test_epoch_end(self) -> None:
        self._log_retrieval("test")

    def _log_retrieval(self, stage: str) -> None:
        """Top-k retrieval over the whole epoch's pairs (per process: not gathered across ranks)."""
        pairs = self._embeddings.pop(stage, [])
        if not pairs:
            return
        z_a = torch.cat([a for a, _ in pairs])  # [N, E]
        z_b = torch.cat([b for _, b in pairs])  # [N, E]
        for k in self.retrieval_k:
            self.log(f"{stage}/top{k}_a2b", topk_retrieval_accuracy(z_a, z_b, k))
            self.log(f"{stage}/top{k}_b2a", topk_retrieval_accuracy(z_b, z_a, k))

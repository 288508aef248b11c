"""Per-subject input layers and new-subject adaptation, for any module that encodes signals.

A mixin of `SupervisedModule` and `AlignmentModule` (``models/subject_layers.py`` says what the
layers compute). It owns ``subject_layers`` (a `SubjectLayers` or None), builds it when a fit
starts from the datamodule when the config leaves subjects and width open (Lightning's
``setup`` hook, before the optimiser is made, so the layers train), and, with ``adapt_from``,
loads every weight of that checkpoint, adds fresh layers for ``adapt_subjects`` and freezes
everything else (``adapt_head``: also the modules named in ``ADAPT_HEAD``: a supervised head, an
alignment's projections). Frozen parts stay in eval mode.
"""

from __future__ import annotations

from typing import Any

from neurotrain.models.checkpoint_io import read_fitted
from neurotrain.models.subject_layers import (
    SubjectLayers,
    SubjectLayersConfig,
    datamodule_subjects,
    layer_key,
    subject_layers_config,
)

ADAPT_INIT_SCALE = 0.05  # std of a new subject's layer, relative to a trained-from-scratch one


class SubjectAdaptation:
    """Mixin: ``init_subject_layers`` in the constructor, ``adapt_input(batch)`` before encoding."""

    ADAPT_HEAD: tuple[str, ...] = ("head",)  # children that ``adapt_head`` trains too

    def init_subject_layers(
        self,
        subject_layers: SubjectLayersConfig | dict | None,
        adapt_from: str | None,
        adapt_subjects: list[str] | None,
        adapt_head: bool,
    ) -> None:
        if (adapt_from is None) != (adapt_subjects is None):
            raise ValueError("adapt_from (the checkpoint) and adapt_subjects (the new subjects) go together")
        if adapt_from is not None and subject_layers is None:
            raise ValueError("adapt_from adapts subject layers: set subject_layers")
        self.subject_layers_config = subject_layers_config(subject_layers)
        self.adapt_from, self.adapt_subjects = adapt_from, [str(s) for s in adapt_subjects or []]
        self.adapt_head = adapt_head
        self.subject_layers: SubjectLayers | None = None
        cfg = self.subject_layers_config
        if cfg is not None and cfg.subjects is not None and cfg.in_channels is not None:
            self.subject_layers = SubjectLayers(cfg.subjects, cfg.in_channels, cfg.channels)

    def adapt_input(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch through the subject layers (the shared virtual channels), or as it is."""
        return batch if self.subject_layers is None else self.subject_layers(batch)

    def setup(self, stage: str) -> None:
        """Build the subject layers from the datamodule (its subjects, its ``c_max``) when the
        config leaves them open, and, adapting, load ``adapt_from`` and freeze all but the new
        subjects' layers. The resolved subjects and width are saved in the hyperparameters."""
        cfg = self.subject_layers_config
        if cfg is None or self.subject_layers is not None:
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None  # type: ignore[attr-defined]
        if self.adapt_from is not None:
            state, normalization, hparams = read_fitted(self.adapt_from)  # one read of the checkpoint
            saved = hparams.get("subject_layers") or {}
            subjects = list(saved.get("subjects") or [])
            in_channels = saved.get("in_channels") or cfg.in_channels
        else:
            subjects = list(cfg.subjects or datamodule_subjects(dm))
            in_channels = cfg.in_channels or int(getattr(dm, "c_max", 0) or 0)
        if not in_channels:
            raise ValueError("subject_layers.in_channels is unknown: set it or fit with a ShardDataModule")
        self.subject_layers = SubjectLayers(subjects, int(in_channels), cfg.channels)
        if self.adapt_from is not None:
            self._adapt(state, normalization)
        self.hparams["subject_layers"] = {  # type: ignore[attr-defined]
            "channels": cfg.channels,
            "subjects": self.subject_layers.subjects,
            "in_channels": self.subject_layers.in_channels,
        }

    def _adapt(self, state: dict[str, Any], normalization: dict[str, Any] | None) -> None:
        """Load every weight of ``adapt_from`` (``state``), add the new subjects' layers, freeze the rest."""
        self.load_state_dict(state, strict=True)  # type: ignore[attr-defined]
        self.normalization = normalization or self.normalization
        layers = self.subject_layers
        assert layers is not None
        for subject in self.adapt_subjects:
            if subject not in layers.subjects:
                # Near zero: the frozen model starts from unsaturated outputs, where a random
                # full-scale map can park it on one class with vanishing gradients.
                layers.add_subject(subject, scale=ADAPT_INIT_SCALE)
        self.requires_grad_(False)  # type: ignore[attr-defined]
        for subject in self.adapt_subjects:
            layers.layers[layer_key(subject)].requires_grad_(True)
        for name in self.ADAPT_HEAD if self.adapt_head else ():
            getattr(self, name).requires_grad_(True)
        self.train(self.training)  # type: ignore[attr-defined]  # frozen parts in eval mode

    def freeze_for_adaptation(self) -> None:
        """Adapting: every child but the trained ones in eval mode (call from ``train``)."""
        if getattr(self, "adapt_from", None) is None:
            return
        trained = {"subject_layers", *(self.ADAPT_HEAD if self.adapt_head else ())}
        for name, child in self.named_children():  # type: ignore[attr-defined]
            if name not in trained:
                child.eval()

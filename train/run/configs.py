"""Where the shipped run configs live: ``train/configs/*.yaml``, installed with the package."""

from __future__ import annotations

from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


def shipped_config(name: str) -> Path:
    """The path of shipped config ``name`` (``eeg_pretrain`` or ``eeg_pretrain.yaml``)."""
    return CONFIGS_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")

"""What the encoding and RSA protocols read: a config's epochs grouped by image, and image features.

Both protocols take the same command line as the others (``--config`` with ``--data.x=...``
overrides): the config's ``data`` section says which shards and which epoch window, its
``model.init_args.image_model`` / ``image_weights`` which image model (``align_image`` has both;
``--image-model`` / ``--image-weights`` replace them), and ``--layers`` which of its layers give
features. Nothing is fitted to the brain data here: the features come from the image model as
loaded (`neurotrain.models.image_features.ImageFeatureExtractor`, local weights only, cached), and
every split of the shards is read (``test_split: all``), since both protocols cross-validate over
images themselves.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jsonargparse import Namespace

from neurotrain.train.evaluation.stimulus_responses import StimulusResponses, collect


class BrainImageError(ValueError):
    """The encoding or RSA evaluation cannot run as asked."""


@dataclass
class BrainImageInputs:
    """Responses per subject and image (`StimulusResponses`) and ``features`` per layer
    ({layer: float32 [n_stimuli, F]}, rows in ``responses.names`` order) of ``image_model``."""

    responses: StimulusResponses
    features: dict[str, np.ndarray]
    image_model: str
    image_weights: str


def add_brain_image_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``--protocol encoding`` and ``--protocol rsa`` on the ``evaluate`` parser."""
    g = p.add_argument_group("encoding and rsa protocols")
    g.add_argument(
        "--image_model",
        "--image-model",
        default=None,
        help="timm name or open_clip:ARCH (default: the config's)",
    )
    g.add_argument(
        "--image_weights",
        "--image-weights",
        default=None,
        help="local weights of the image model (default: the config's); 'random' only on purpose",
    )
    g.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help="image-model layers giving features (default: its embedding)",
    )
    g.add_argument("--time_bins", "--time-bins", type=int, default=4, help="encoding: targets per channel")
    g.add_argument("--rsa_windows", "--rsa-windows", type=int, default=4, help="rsa: equal time windows")
    g.add_argument(
        "--rsa_method",
        "--rsa-method",
        default="spearman",
        choices=("spearman", "tau-a", "corr"),
        help="rsa: comparison",
    )


def load_inputs(
    config: str | Path,
    overrides: list[str],
    image_model: str | None = None,
    image_weights: str | None = None,
    layers: list[str] | None = None,
) -> BrainImageInputs:
    """Read the config's epochs and compute the image features (see the module docstring)."""
    from neurotrain.datamodules.loading.datamodule import ShardDataModule
    from neurotrain.models.image_features import ImageFeatureExtractor
    from neurotrain.train.run.lightning_cli import load_config

    try:
        cfg = load_config(["--config", str(config), *overrides])
    except Exception as exc:
        raise BrainImageError(f"the config does not parse: {str(exc).strip().splitlines()[0]}") from exc
    data = cfg["data"].as_dict() if isinstance(cfg["data"], Namespace) else dict(cfg["data"])
    if data.get("mode") != "epochs":
        raise BrainImageError("encoding and rsa read event epochs: set data.mode: epochs")
    data.update(images=False, test_split="all", num_workers=0)
    init = cfg.get("model.init_args") or {}
    init = init.as_dict() if isinstance(init, Namespace) else dict(init)
    model = image_model or init.get("image_model")
    weights = image_weights or init.get("image_weights")
    if not model:
        raise BrainImageError("no image model: give --image-model (a timm name or open_clip:ARCH)")
    if not weights:
        raise BrainImageError(
            f"no weights for {model}: give --image-weights FILE (a local .safetensors/.pth file; "
            "'random' for a random network on purpose)"
        )
    dm = ShardDataModule(**data)
    try:
        responses = collect(dm, "test")
    except ValueError as exc:
        raise BrainImageError(str(exc)) from exc
    try:
        extractor = ImageFeatureExtractor(model, weights, layers)
    except (ValueError, FileNotFoundError) as exc:
        raise BrainImageError(str(exc)) from exc
    features = extractor([_decode(responses.images[n]) for n in responses.names])
    return BrainImageInputs(
        responses, {str(k): np.asarray(v) for k, v in features.items()}, model, str(weights)
    )


def _decode(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 [H, W, 3] (the extractor applies the model's own transform)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def plan(args: argparse.Namespace, inputs: BrainImageInputs) -> dict[str, Any]:
    """The part of a results file that says what was compared (for results.json)."""
    r = inputs.responses
    return {
        "config": str(args.config),
        "overrides": list(args.extra or []),
        "image_model": inputs.image_model,
        "image_weights": inputs.image_weights,
        "layers": list(inputs.features),
        "images": len(r.names),
        "subjects": {
            s: {
                "repeats": int(v.epochs.shape[1]),
                "channels": int(v.epochs.shape[2]),
                "dropped_images": v.dropped,
            }
            for s, v in r.subjects.items()
        },
        "epoch_s": [float(r.times[0]), float(r.times[-1] + 1.0 / r.sfreq)],
    }


def log_to_wandb(
    out: Path, project: str, protocol: str, config: dict[str, Any], logged: Callable[[Any], dict]
) -> None:
    """One ``evaluate-<protocol>`` W&B run holding ``logged(wandb)`` (tables, images; offline is a
    normal mode, disabled logs nothing). ``logged`` builds the dict once wandb is imported."""
    from neurotrain.train.tracking.wandb_run import INIT_TIMEOUT_S
    from neurotrain.train.tracking.wandb_server import resolve_mode

    mode = resolve_mode()
    if mode == "disabled":
        return
    import wandb

    run = wandb.init(
        project=project,
        dir=str(out),
        mode=mode,
        name=f"evaluate-{protocol}",
        group=f"evaluate-{protocol}",
        job_type="evaluate",
        config=config,
        settings=wandb.Settings(silent=True, init_timeout=INIT_TIMEOUT_S),
        reinit="create_new",
    )
    try:
        run.log(logged(wandb))
    finally:
        run.finish()

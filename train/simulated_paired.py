"""A simulated BIDS EEG dataset whose epochs respond to real photographs, with a stimuli folder.

No paired brain-image recording ships in any package, so the brain-image examples and tests use
this one (``neurotrain simulate paired --out DIR``): real photographs, responses simulated from a
known image model, so what an alignment, encoding or RSA analysis should find is known.

The stimuli are crops of the natural photographs that ship inside scikit-image (``skimage.data``):
each photograph gives its four quadrants, ``size`` × ``size`` RGB PNGs named ``<photo>_q<k>.png``.
Each image's features are the pooled output of a fixed random timm network (``image_model``,
seeded weights saved to ``weights.safetensors`` beside the stimuli): the stand-in for a pretrained
image model whose features predict brain responses, and the file an alignment config loads as its
frozen image encoder (``image_weights``). The images reach the network exactly as the loader gives
them (``loading.images.decode_image``).

Responses: two evoked components (Gaussian bumps at 0.12 s and 0.28 s after onset), each with a
spatial pattern over the channels given by a fixed random projection of the centred features
(the same for every subject, unit variance over the images per channel), plus white noise of
``noise`` times the pattern's scale, on a 10 µV background. Every image is shown ``repeats``
times to each subject in a seeded random order, one onset every ``isi`` s; the BIDS events have
the image's stem as ``trial_type``, so ``neurotrain shard --stimuli DIR`` pairs
``DIR/<trial_type>.png`` with each event. Written by MNE and mne-bids (EDF), like ``synthetic.py``.

    ds = write_paired_dataset(Path("paired"))
    ds.bids_root, ds.stimuli, ds.weights   # paths
    ds.names                               # image stems, in feature order
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "brick",
          "grass", "gravel", "hubble_deep_field", "retina", "clock", "immunohistochemistry", "cell", "cat",
          "horse", "colorwheel", "logo")  # fmt: skip
CHANNELS = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "T7", "C3", "Cz", "C4", "T8", "P7", "P3",
            "Pz", "P4", "P8", "O1", "Oz", "O2"]  # fmt: skip
LATENCIES_S = (0.12, 0.28)  # the two evoked components
WIDTH_S = 0.04


@dataclass(frozen=True)
class PairedDataset:
    """What ``write_paired_dataset`` wrote: the BIDS root, the stimuli folder, the image model's
    weights, the image names (stems) and their features ``[n_images, F]``."""

    bids_root: Path
    stimuli: Path
    weights: Path
    names: list[str]
    features: np.ndarray


def photographs(n_images: int, size: int = 64) -> dict[str, np.ndarray]:
    """``{name: uint8 [size, size, 3]}``: quadrant crops of scikit-image's photographs."""
    import skimage.data
    from skimage.color import gray2rgb, rgba2rgb
    from skimage.transform import resize
    from skimage.util import img_as_float, img_as_ubyte

    out: dict[str, np.ndarray] = {}
    for k in range(4):
        for photo in PHOTOS:
            if len(out) == n_images:
                return out
            img = img_as_float(getattr(skimage.data, photo)())
            if img.ndim == 2:
                img = gray2rgb(img)
            elif img.shape[-1] == 4:
                img = rgba2rgb(img)
            h, w = img.shape[0] // 2, img.shape[1] // 2
            crop = img[(k // 2) * h : (k // 2 + 1) * h, (k % 2) * w : (k % 2 + 1) * w]
            out[f"{photo}_q{k}"] = img_as_ubyte(resize(crop, (size, size), anti_aliasing=True))
    if len(out) < n_images:
        raise ValueError(f"only {len(out)} crops available, asked for {n_images}")
    return out


def image_features(stimuli: Path, names: list[str], image_model: str, size: int, weights: Path, seed: int):
    """Seeded random weights for ``image_model`` saved to ``weights``; pooled features [N, F]."""
    import torch
    from safetensors.torch import save_file

    from neurotrain.datamodules.loading.images import decode_image
    from neurotrain.models.image_encoder import ImageEncoder

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        enc = ImageEncoder(image_model)
    save_file({k: v.contiguous() for k, v in enc.model.state_dict().items()}, str(weights))
    x = np.stack([decode_image((stimuli / f"{n}.png").read_bytes(), size) for n in names])
    with torch.no_grad():
        return enc.eval()({"image": torch.from_numpy(x)}).pooled.double().numpy()


def write_paired_dataset(
    root: Path,
    n_images: int = 60,
    subjects: tuple[str, ...] = ("01", "02"),
    repeats: int = 3,
    n_channels: int = 16,
    sfreq: float = 100.0,
    isi: float = 0.8,
    noise: float = 1.0,
    image_size: int = 64,
    image_model: str = "resnet18",
    seed: int = 0,
    features_fn=None,
) -> PairedDataset:
    """Write ``root/bids`` (one run per subject), ``root/stimuli`` (PNGs + ``weights.safetensors``).

    ``features_fn(stimuli, names, weights) -> [N, F]``: generate the responses from these features
    instead (e.g. one layer of the saved network as an extractor computes it), to know which
    feature space an encoding or RSA analysis should find."""
    import mne
    import mne_bids
    from PIL import Image

    stimuli = root / "stimuli"
    stimuli.mkdir(parents=True, exist_ok=True)
    images = photographs(n_images, image_size)
    names = list(images)
    for name, img in images.items():
        Image.fromarray(img).save(stimuli / f"{name}.png")
    weights = root / "weights.safetensors"  # outside the stimuli folder: not an image
    feats = image_features(stimuli, names, image_model, image_size, weights, seed)
    if features_fn is not None:
        feats = np.asarray(features_fn(stimuli, names, weights), dtype=np.float64)

    rng = np.random.default_rng(seed)
    z = (feats - feats.mean(0)) / feats.std()  # [N, F]: centred, one scale (features keep their weight)
    patterns = []
    for _ in LATENCIES_S:
        a = z @ rng.standard_normal((z.shape[1], n_channels)) / np.sqrt(z.shape[1])  # [N, C]
        patterns.append((a - a.mean(0)) / a.std(0))
    scale = 10e-6  # volts: pattern and background noise
    bids = root / "bids"
    for s, sub in enumerate(subjects):
        srng = np.random.default_rng([seed, s])
        order = np.concatenate([srng.permutation(len(names)) for _ in range(repeats)])
        onsets = 1.0 + isi * np.arange(len(order))
        n_times = int(round((onsets[-1] + 1.0) * sfreq))
        t = np.arange(n_times) / sfreq
        data = scale * srng.standard_normal((n_channels, n_times))
        for onset, i in zip(onsets, order, strict=True):
            for pattern, latency in zip(patterns, LATENCIES_S, strict=True):
                bump = np.exp(-0.5 * ((t - onset - latency) / WIDTH_S) ** 2)  # [T]
                trial = pattern[i] + noise * srng.standard_normal(n_channels)  # [C]
                data += scale * 2.0 * trial[:, None] * bump[None, :]
        info = mne.create_info(CHANNELS[:n_channels], sfreq, "eeg")
        raw = mne.io.RawArray(data, info, verbose="error")
        raw.set_montage(mne.channels.make_standard_montage("colin27_1020"), verbose="error")
        raw.set_annotations(mne.Annotations(onsets, [0.0] * len(onsets), [names[i] for i in order]))
        tmp = root / f"_tmp_{sub}_raw.fif"
        raw.save(tmp, overwrite=True, verbose="error")
        raw = mne.io.read_raw_fif(tmp, verbose="error")
        bp = mne_bids.BIDSPath(subject=sub, task="images", datatype="eeg", root=bids)
        mne_bids.write_raw_bids(raw, bp, format="EDF", allow_preload=False, overwrite=True, verbose="error")
        tmp.unlink()
    return PairedDataset(bids, stimuli, weights, names, feats)


def add_simulate_parser(sub) -> None:
    """Register ``neurotrain simulate paired --out DIR``."""
    p = sub.add_parser(
        "simulate",
        help="write a simulated dataset: 'paired' = EEG responses to real photographs (BIDS + stimuli)",
    )
    p.add_argument("kind", choices=["paired"], help="paired: EEG epochs x scikit-image photographs")
    p.add_argument("--out", required=True, help="folder to write (bids/, stimuli/, weights.safetensors)")
    p.add_argument("--images", type=int, default=60, help="photographs (quadrant crops)")
    p.add_argument("--subjects", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="presentations of each image per subject")
    p.add_argument("--noise", type=float, default=1.0, help="trial noise, times the response's scale")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_simulate)


def _simulate(args) -> int:
    """Write the dataset and print its folders (BIDS root, stimuli, image weights), one per line."""
    import sys

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"error: {out} is not empty; give a new folder", file=sys.stderr)
        return 2
    subjects = tuple(f"{i + 1:02d}" for i in range(args.subjects))
    ds = write_paired_dataset(
        out, n_images=args.images, subjects=subjects, repeats=args.repeats, noise=args.noise, seed=args.seed
    )
    print(ds.bids_root)
    print(ds.stimuli)
    print(ds.weights)
    return 0

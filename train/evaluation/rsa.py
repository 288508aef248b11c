"""Representational similarity analysis (rsatoolbox): which model layer shares a brain region's geometry.

A representational dissimilarity matrix (RDM) holds the dissimilarity of every pair of stimuli.
`rsa_table` builds one or more **data RDMs** per brain entry (an ROI, a sensor group or a time
window: name → ``[n_stimuli, n_features]``, or ``[n_stimuli, n_repeats, n_features]`` with
repeated presentations) and one **model RDM** per layer (name → ``[n_stimuli, F]``; correlation
distance beside correlation data RDMs, squared Euclidean beside crossnobis ones), compares them with `rsatoolbox.rdm.compare` (``spearman``, ``tau-a`` or ``corr``) and
gives a layer × region table with each region's noise ceiling.

The data RDMs of a region, and so what a score and its ceiling mean:

- no repeats: one RDM (correlation distance of the patterns); no ceiling (NaN).
- repeats, ``rdm_method="correlation"``: one RDM per repeat. A layer's score is its mean
  similarity to these RDMs, and the ceiling is `rsatoolbox.inference.boot_noise_ceiling` on the
  same set: the upper bound compares each RDM with the pooled RDM of all, the lower bound with
  the pooled RDM of the others (leave one out), so a true model lands between the two.
- repeats, ``rdm_method="crossnobis"``: the repeats are dealt into ``n_repeats // 2`` groups; one
  cross-validated Mahalanobis RDM per group (`calc_rdm(..., "crossnobis", cv_descriptor="repeat")`,
  noise precision from the residuals around each stimulus' mean,
  `rsatoolbox.data.noise.prec_from_residuals`), scored and ceilinged the same way (a ceiling needs
  at least 4 repeats, i.e. 2 groups).

    table = rsa_table({"conv1": F1, "conv2": F2}, {"V1": R_v1, "IT": R_it}, method="spearman")
    table.values        # [n_layers, n_regions]
    table.lower, table.upper   # [n_regions]
    fig = plot_rsa_table(table)

For a time course, `time_windows` turns epochs into one entry per window, so the table reads
layer × time.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from rsatoolbox.rdm import RDMs

COMPARISONS = ("spearman", "tau-a", "corr")
RDM_METHODS = ("correlation", "crossnobis")


@dataclass(frozen=True)
class RSATable:
    """Similarity of each layer's RDM to each region's data RDMs.

    ``values`` ``[n_layers, n_regions]``: mean `rsatoolbox.rdm.compare` score over the region's
    data RDMs; ``lower``/``upper`` ``[n_regions]``: the region's noise-ceiling bounds on that
    score (NaN with one data RDM); ``method``: the comparison; ``rdm_method``: the data RDMs'
    dissimilarity.
    """

    layers: list[str]
    regions: list[str]
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    method: str
    rdm_method: str

    def best_layer(self, region: str) -> str:
        """The layer whose RDM is most similar to ``region``'s."""
        return self.layers[int(np.argmax(self.values[:, self.regions.index(region)]))]

    def lines(self) -> list[str]:
        """The table in Markdown: one row per layer, one column per region, the ceilings
        ``[lower, upper]`` last (– where a region has one data RDM)."""
        head = f"| layer | {' | '.join(self.regions)} |"
        rows = [head, "| --- |" + " ---: |" * len(self.regions)]
        for i, layer in enumerate(self.layers):
            rows.append(f"| {layer} | " + " | ".join(f"{v:.3f}" for v in self.values[i]) + " |")
        ceil = " | ".join(
            "–" if np.isnan(lo) else f"[{lo:.3f}, {hi:.3f}]"
            for lo, hi in zip(self.lower, self.upper, strict=True)
        )
        rows.append(f"| noise ceiling | {ceil} |")
        return rows


def rsa_table(
    layers: Mapping[str, np.ndarray],
    brain: Mapping[str, np.ndarray],
    method: str = "spearman",
    rdm_method: str = "correlation",
    layer_rdm_method: str | None = None,
) -> RSATable:
    """Compare every layer's RDM with every brain entry's data RDMs; see the module docstring.

    ``layer_rdm_method``: the layers' dissimilarity, ``"correlation"`` or ``"euclidean"``; None
    matches the data: euclidean (the noiseless counterpart of crossnobis) beside crossnobis data
    RDMs, correlation beside correlation ones."""
    if method not in COMPARISONS:
        raise ValueError(f"unknown comparison {method!r}; choose from {COMPARISONS}")
    from rsatoolbox.inference import boot_noise_ceiling
    from rsatoolbox.rdm import compare

    if not layers or not brain:
        raise ValueError("rsa_table needs at least one layer and one brain entry")
    if layer_rdm_method is None:
        layer_rdm_method = "euclidean" if rdm_method == "crossnobis" else "correlation"
    models = model_rdms(layers, layer_rdm_method)
    n_stimuli = {k: v.n_cond for k, v in models.items()}
    data = brain_rdms(brain, rdm_method)
    for name, rdms in data.items():
        for layer, n in n_stimuli.items():
            if rdms.n_cond != n:
                raise ValueError(f"brain entry {name!r} has {rdms.n_cond} stimuli, layer {layer!r} has {n}")
    values = np.empty((len(models), len(data)))
    lower = np.full(len(data), np.nan)
    upper = np.full(len(data), np.nan)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Noise ceiling for tau based on averaged ranks")
        for j, rdms in enumerate(data.values()):
            for i, model in enumerate(models.values()):
                values[i, j] = float(np.mean(compare(model, rdms, method=method)))
            if rdms.n_rdm >= 2:
                lower[j], upper[j] = boot_noise_ceiling(rdms, method=method, rdm_descriptor="index")
    return RSATable(list(models), list(data), values, lower, upper, method, rdm_method)


def model_rdms(layers: Mapping[str, np.ndarray], method: str = "correlation") -> dict[str, RDMs]:
    """One RDM per layer (``method``: ``"correlation"`` or ``"euclidean"``); each layer
    ``[n_stimuli, F]`` (more dimensions are flattened after the first)."""
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    if method not in ("correlation", "euclidean"):
        raise ValueError(f"unknown layer RDM method {method!r}; choose 'correlation' or 'euclidean'")
    out = {}
    for name, x in layers.items():
        x = np.asarray(x, dtype=float).reshape(len(x), -1)
        check_patterns(name, x)
        out[name] = calc_rdm(Dataset(x), method=method)
    return out


def brain_rdms(brain: Mapping[str, np.ndarray], rdm_method: str = "correlation") -> dict[str, RDMs]:
    """The data RDMs of each brain entry (``[n_stimuli, n_features]`` or
    ``[n_stimuli, n_repeats, n_features]``), as the module docstring lists them."""
    if rdm_method not in RDM_METHODS:
        raise ValueError(f"unknown RDM method {rdm_method!r}; choose from {RDM_METHODS}")
    from rsatoolbox.data import Dataset
    from rsatoolbox.data.noise import prec_from_residuals
    from rsatoolbox.rdm import calc_rdm, concat

    out = {}
    for name, r in brain.items():
        r = np.asarray(r, dtype=float)
        if r.ndim not in (2, 3):
            raise ValueError(
                f"brain entry {name!r} must be [n_stimuli, n_features] or "
                f"[n_stimuli, n_repeats, n_features], got shape {r.shape}"
            )
        check_patterns(name, r.reshape(r.shape[0], -1))
        if r.ndim == 2 or r.shape[1] == 1:
            if rdm_method == "crossnobis":
                raise ValueError(f"crossnobis needs repeated presentations; brain entry {name!r} has none")
            out[name] = calc_rdm(Dataset(r.reshape(r.shape[0], -1)), method="correlation")
            continue
        n_stimuli, n_repeats, n_features = r.shape
        if rdm_method == "correlation":
            out[name] = concat([calc_rdm(Dataset(r[:, k]), method="correlation") for k in range(n_repeats)])
            continue
        residuals = (r - r.mean(axis=1, keepdims=True)).reshape(-1, n_features)
        precision = prec_from_residuals(residuals, dof=n_stimuli * (n_repeats - 1))
        groups = np.array_split(np.arange(n_repeats), n_repeats // 2)
        rdms = []
        for g in groups:
            obs = r[:, g].transpose(1, 0, 2).reshape(-1, n_features)  # [len(g) * n_stimuli, n_features]
            # float descriptors: rsatoolbox fills per-pattern descriptors with NaN, which an int array warns about
            stimulus = np.tile(np.arange(n_stimuli, dtype=float), len(g))
            descriptors = {"stimulus": stimulus, "repeat": np.repeat(g, n_stimuli).astype(float)}
            ds = Dataset(obs, obs_descriptors=descriptors)
            rdms.append(
                calc_rdm(
                    ds, method="crossnobis", descriptor="stimulus", noise=precision, cv_descriptor="repeat"
                )
            )
        out[name] = concat(rdms)
    return out


def time_windows(
    epochs: np.ndarray, times: np.ndarray, windows: Mapping[str, tuple[float, float]]
) -> dict[str, np.ndarray]:
    """Brain entries for a layer × time table: for each named window ``(start, stop)`` in seconds
    (start inclusive, stop exclusive), the samples of ``epochs`` ``[n_stimuli, (n_repeats,)
    n_channels, n_times]`` inside it, flattened into one pattern per stimulus (and repeat):
    ``[n_stimuli, (n_repeats,) n_channels · n_samples_in_window]``."""
    epochs = np.asarray(epochs)
    times = np.asarray(times, dtype=float)
    if epochs.shape[-1] != len(times):
        raise ValueError(f"epochs have {epochs.shape[-1]} samples, times has {len(times)}")
    out = {}
    for name, (start, stop) in windows.items():
        keep = (times >= start) & (times < stop)
        if not keep.any():
            raise ValueError(f"time window {name!r} ({start}, {stop}) holds no sample of times")
        w = epochs[..., keep]
        out[name] = w.reshape(*w.shape[:-2], -1)
    return out


def plot_rsa_table(table: RSATable, ax=None) -> Figure:
    """A heat map of ``table.values`` (layers × regions) with each value written in its cell and
    each region's noise ceiling ``[lower, upper]`` under its name; returns the Figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(1.4 + 1.3 * len(table.regions), 1.0 + 0.45 * len(table.layers)))
    else:
        fig = ax.figure
    im = ax.imshow(table.values, cmap="viridis", aspect="auto")
    for i in range(len(table.layers)):
        for j in range(len(table.regions)):
            ax.text(j, i, f"{table.values[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    labels = [
        name if np.isnan(lo) else f"{name}\nNC [{lo:.2f}, {hi:.2f}]"
        for name, lo, hi in zip(table.regions, table.lower, table.upper, strict=True)
    ]
    ax.set_xticks(range(len(table.regions)), labels, fontsize=8)
    ax.set_yticks(range(len(table.layers)), table.layers, fontsize=8)
    ax.set_xlabel("brain region / time window")
    ax.set_ylabel("model layer")
    fig.colorbar(im, ax=ax, label=f"RDM similarity ({table.method})")
    fig.tight_layout()
    return fig


def check_patterns(name: str, x: np.ndarray) -> None:
    """A ValueError naming ``name`` when its patterns ``[n_stimuli, F]`` cannot give an RDM."""
    if x.shape[0] < 3:
        raise ValueError(f"{name!r}: an RDM needs at least 3 stimuli, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name!r} contains NaN or infinite values")

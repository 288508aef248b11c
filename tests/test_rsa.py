"""Representational similarity (rsatoolbox) on responses simulated from natural images.

Targets are generated from one feature space (Gabor energy or a random CNN; see
`tests/simulated_responses.py`) with SNR 0.5 to 2 per trial and 4 repeats, so the generating
space should win the layer ranking, and the RDM of the noiseless signal should land inside the
noise ceiling that the repeats imply. Margins are stated per test.
"""

from __future__ import annotations

import numpy as np
import pytest
from simulated_responses import simulate

from neurotrain.train.evaluation.rsa import RSATable, brain_rdms, plot_rsa_table, rsa_table, time_windows


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """numpy's BLAS on one thread for these small solves: on the shared 2-core machine two
    OpenBLAS threads made them 10-20x slower (measured 3.2 s vs 0.14 s for one encode)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def sims():
    return {g: simulate(g, n_targets=60, n_repeats=4, snr=(0.5, 2.0), seed=2) for g in ("gabor", "cnn")}


@pytest.mark.parametrize("rdm_method", ["correlation", "crossnobis"])
@pytest.mark.parametrize("generator", ["gabor", "cnn"])
def test_rsa_ranks_the_generating_space_first(sims, generator, rdm_method):
    """Gabor-generated data: the Gabor RDM beats the CNN RDM, and vice versa, under every
    comparison, by ≥ 0.05 (measured ≥ 0.078 with correlation RDMs, ≥ 0.31 with crossnobis, two seeds)."""
    sim = sims[generator]
    other = "cnn" if generator == "gabor" else "gabor"
    for method in ("spearman", "tau-a", "corr"):
        table = rsa_table(sim.features, {"roi": sim.responses}, method=method, rdm_method=rdm_method)
        assert table.layers == ["gabor", "cnn"] and table.regions == ["roi"]
        assert table.best_layer("roi") == generator
        scores = dict(zip(table.layers, table.values[:, 0], strict=True))
        assert scores[generator] - scores[other] >= 0.05, (method, scores)


@pytest.mark.parametrize("rdm_method", ["correlation", "crossnobis"])
def test_noise_ceiling_brackets_the_true_signal(sims, rdm_method):
    """The noiseless signal, as a layer, scores between the ceiling's lower bound (less 0.02) and
    its upper bound; the same signal with its stimuli shuffled scores within 0.1 of 0 (the entries
    of an RDM share stimuli, so a permuted RDM's similarity spreads like a Mantel null, wider than
    one over the root of the 51,040 pairs)."""
    sim = sims["gabor"]
    perm = np.random.default_rng(0).permutation(len(sim.signal))
    layers = {"signal": sim.signal, "shuffled": sim.signal[perm]}
    table = rsa_table(layers, {"roi": sim.responses}, method="corr", rdm_method=rdm_method)
    lower, upper = table.lower[0], table.upper[0]
    assert 0 < lower < upper <= 1
    assert lower - 0.02 <= table.values[0, 0] <= upper
    assert abs(table.values[1, 0]) < 0.1


def test_no_repeats_gives_one_rdm_and_no_ceiling(sims):
    sim = sims["cnn"]
    table = rsa_table(sim.features, {"mean": sim.responses.mean(axis=1)}, method="spearman")
    assert np.isnan(table.lower[0]) and np.isnan(table.upper[0])
    assert table.best_layer("mean") == "cnn"
    assert brain_rdms({"r": sim.responses}, "crossnobis")["r"].n_rdm == 2  # 4 repeats → 2 groups
    assert brain_rdms({"r": sim.responses}, "correlation")["r"].n_rdm == 4  # one per repeat


def test_layer_by_time_window_table(sims):
    """Epochs [stimuli, repeats, channels, times] whose pattern carries the Gabor signal only after
    0.1 s: the late window scores the Gabor layer ≥ 0.2 and with a ceiling above 0.5; the early
    window (noise only) scores within 0.05 of 0 and so does its lower ceiling bound (the upper
    bound of pure noise is about 1/sqrt(4): each repeat RDM is a quarter of the pooled one)."""
    sim = sims["gabor"]
    rng = np.random.default_rng(3)
    n_stimuli, n_repeats, n_channels = sim.responses.shape
    times = np.arange(-0.1, 0.3, 0.05)  # 8 samples
    epochs = rng.standard_normal((n_stimuli, n_repeats, n_channels, len(times)))
    late = times >= 0.1
    epochs[..., late] += sim.signal[:, None, :, None]  # the signal pattern, held over the late window
    brain = time_windows(epochs, times, {"early": (-0.1, 0.1), "late": (0.1, 0.3)})
    assert brain["late"].shape == (n_stimuli, n_repeats, n_channels * late.sum())
    table = rsa_table({"gabor": sim.features["gabor"]}, brain, method="corr")
    early, late_score = table.values[0]
    assert abs(early) < 0.05 and late_score >= 0.2
    assert abs(table.lower[0]) < 0.05 and table.lower[1] > 0.5


def test_plot_and_markdown(sims):
    from matplotlib.figure import Figure

    sim = sims["gabor"]
    table = rsa_table(sim.features, {"V1": sim.responses, "mean": sim.responses.mean(axis=1)}, method="corr")
    fig = plot_rsa_table(table)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (2, 2)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0].startswith("V1\nNC [") and labels[1] == "mean"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["gabor", "cnn"]
    lines = table.lines()
    assert lines[0] == "| layer | V1 | mean |" and lines[-1].startswith("| noise ceiling | [")
    assert lines[-1].endswith(" | – |")  # no repeats, no ceiling
    assert len(lines) == 2 + 2 + 1


def test_rsa_rejects_bad_input(sims):
    sim = sims["gabor"]
    with pytest.raises(ValueError, match="crossnobis needs repeated presentations; brain entry 'm'"):
        rsa_table(sim.features, {"m": sim.responses.mean(axis=1)}, rdm_method="crossnobis")
    with pytest.raises(ValueError, match="brain entry 'r' has 100 stimuli, layer 'gabor' has 320"):
        rsa_table(sim.features, {"r": sim.responses[:100]})
    with pytest.raises(ValueError, match="unknown comparison 'cosine2'"):
        rsa_table(sim.features, {"r": sim.responses}, method="cosine2")
    with pytest.raises(ValueError, match="time window 'w'"):
        time_windows(np.zeros((5, 2, 4)), np.arange(4.0), {"w": (10.0, 11.0)})
    assert isinstance(rsa_table({"a": np.eye(4)}, {"b": np.eye(4)}), RSATable)

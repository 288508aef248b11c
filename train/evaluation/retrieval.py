"""``neurotrain evaluate --protocol retrieval``: brain <-> image retrieval on held-out images.

    neurotrain shard BIDS shards/paired --stimuli STIM --split-by stimulus --split 0.7 0.1 0.2
    neurotrain evaluate --config align_image --protocol retrieval --seeds 0 1 --average-repeats \\
        --candidates 50 --out eval/retrieval --model.image_weights=resnet18.safetensors

The shards must carry a stimulus split (``--split-by stimulus``): the config (an
``AlignmentModule`` with ``pair: image``) is fitted on the train split's images (validated on the
val split's) and scored on the test split's, which no training epoch showed (checked here: the
run stops when one test image is in a training epoch). For each training seed:

1. the fit (``OUT/runs/seed<S>``, resumed or skipped like every evaluation run);
2. every test epoch's brain embedding (the model's ``forward``: unit-norm, shared space) and
   each test image's embedding (image encoder + its projection), once per image;
3. scores over the ``N`` test images (``--candidates``, default all): rounds of ``N`` brain
   embeddings, one per image: the ``r``-th presentation of each image in round ``r`` (an image
   shown fewer times is cycled), or, with ``--average-repeats``, one round of each image's mean
   over its presentations (renormalised). In a round the similarity matrix ``S = brain @ image.T``
   [N, N] is read both ways: brain->image (row ``i``: is image ``i`` among the ``k`` most similar
   of the candidates) and image->brain (column ``i``). With ``--candidates n < N`` each query's
   candidates are its partner and ``n - 1`` others drawn at random (seeded). A tie counts against
   the partner. Chance is ``k / n`` exactly;
4. the shuffled-pairing control: the same embeddings scored after the image <-> brain pairing is
   permuted at random (``CONTROL_PERMUTATIONS`` permutations, seeded; mean and 2.5-97.5 %
   range). Its expected top-k is ``k / n`` for any embeddings, so it checks the scoring itself:
   a control above chance means a leak in the scoring, not learning;
5. with ``--trained-control``, the stronger control: the same config fitted with the same seed on
   shuffled pairs (``model.shuffle_pairing``: every training and validation batch's images
   permuted before the loss, ``OUT/runs/control_seed<S>``) and scored like the model. It sees the
   same epochs and images with the pairing broken, so it should stay near chance; above chance it
   would point at something other than the pairing (e.g. test images told apart by their epochs'
   position in the recording).

``OUT/results.json`` holds every seed's scores, the means over seeds, the chance levels, the
control, the test images, the check that they are held out, and the command; ``OUT/results.md``
the table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import Namespace

from neurotrain.datamodules.io.files import atomic_write_json, atomic_write_text
from neurotrain.train.run.fit_once import fit_once, say, seeded_run_config

PROTOCOL = "retrieval"
TOPK = (1, 5)
DIRECTIONS = ("brain_to_image", "image_to_brain")
CONTROL_PERMUTATIONS = 50


class RetrievalError(ValueError):
    """The retrieval evaluation cannot run as asked (config, shards, or options)."""


def add_retrieval_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``--protocol retrieval`` on the ``evaluate`` parser."""
    p.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="retrieval: candidates per query, N (default: all test images)",
    )
    p.add_argument(
        "--trained_control",
        "--trained-control",
        action="store_true",
        help="retrieval: also fit the config on shuffled brain-image pairs and score it (one more fit per seed)",
    )
    p.add_argument(
        "--average_repeats",
        "--average-repeats",
        action="store_true",
        help="retrieval: average each test image's repeated presentations before scoring",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """``neurotrain evaluate --protocol retrieval ...``: exit status 0, or 2 with the reason."""
    try:
        evaluate_retrieval(
            args.config,
            out=args.out,
            seeds=args.seeds,
            candidates=args.candidates,
            average_repeats=args.average_repeats,
            overrides=args.extra,
            trained_control=args.trained_control,
        )
    except RetrievalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def evaluate_retrieval(
    config: str | Path,
    out: str | Path = "evaluate",
    seeds: list[int] | None = None,
    candidates: int | None = None,
    average_repeats: bool = False,
    overrides: list[str] | None = None,
    trained_control: bool = False,
) -> dict[str, Any]:
    """Fit ``config`` once per seed on the train images and score retrieval on the test images;
    ``trained_control``: fit it on shuffled pairs too (``shuffle_pairing``) and score that."""
    out = Path(out)
    seeds = list(seeds or [0])
    cfg = _check_config(config, list(overrides or []))
    held_out = check_held_out(stage_datamodule(cfg))  # before any fit: the shards must split by image
    claim_folder(out, {"protocol": PROTOCOL, "config": str(config), "overrides": list(overrides or [])})
    records = []
    for seed in seeds:
        run_cfg = seeded_run_config(cfg, seed, PROTOCOL)
        say(f"retrieval: seed {seed}: fit on the train images")
        last = fit_once(out / "runs", f"seed{seed}", run_cfg)
        model, dm = load_fitted(run_cfg, last)
        emb = embed_stage(model, dm, "test")
        scores = retrieval_scores(emb, candidates, average_repeats, seed)
        scores["control"] = shuffled_control(emb, candidates, average_repeats, seed)
        if trained_control:
            say(f"retrieval: seed {seed}: the control, fit on shuffled pairs")
            control_cfg = seeded_run_config(
                cfg, seed, PROTOCOL, "control", **{"model.init_args.shuffle_pairing": True}
            )
            control_last = fit_once(out / "runs", f"control_seed{seed}", control_cfg)
            control_model, control_dm = load_fitted(control_cfg, control_last)
            control_emb = embed_stage(control_model, control_dm, "test")
            scores["trained_control"] = retrieval_scores(control_emb, candidates, average_repeats, seed)[
                "scores"
            ]
        records.append({"seed": seed, "run": str(out / "runs" / f"seed{seed}"), **held_out, **scores})
    results = {
        "protocol": PROTOCOL,
        "config": str(config),
        "command": shlex.join(sys.argv),
        "overrides": list(overrides or []),
        "seeds": seeds,
        "average_repeats": average_repeats,
        "candidates": records[0]["candidates"],
        "chance": records[0]["chance"],
        "mean": _mean_over_seeds(records),
        "per_seed": records,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown(results))
    print(markdown(results))
    return results


# ----------------------------------------------------------------------------- embeddings
class StageEmbeddings:
    """A stage's embeddings: ``brain`` [M, E] (one per epoch), ``trial_stimuli`` (M names),
    ``images`` [N, E] (one per distinct image) and their ``names`` (N, sorted)."""

    def __init__(self, brain: np.ndarray, trial_stimuli: list[str], images: np.ndarray, names: list[str]):
        self.brain, self.trial_stimuli, self.images, self.names = brain, trial_stimuli, images, names


@torch.no_grad()
def embed_stage(model: Any, dm: Any, stage: str = "test") -> StageEmbeddings:
    """Every epoch of ``stage`` through the signal side, every distinct image through the image
    side, in the model's shared space (unit norm)."""
    of = dm.epoch_stimuli(stage)
    model.eval()
    brain, trials, images = [], [], {}
    for batch in dm.eval_dataloader(stage):
        z_a = model(batch)  # [B, E]
        names = [of[sid] for sid in batch["sample_id"]]
        new = [j for j, n in enumerate(names) if n not in images]
        if new:
            pooled = model.pair_encoder({"image": batch["image"][new]}).pooled  # [b, Db]
            z_b = torch.nn.functional.normalize(model.alignment.proj_b(pooled), dim=-1)  # [b, E]
            for j, z in zip(new, z_b, strict=True):
                images.setdefault(names[j], z.double().numpy())
        brain.append(z_a.double().numpy())
        trials += names
    if not trials:
        raise RetrievalError(f"the {stage} split has no epoch with a stimulus image")
    order = sorted(images)
    return StageEmbeddings(np.concatenate(brain), trials, np.stack([images[n] for n in order]), order)


# ----------------------------------------------------------------------------- scores
def retrieval_rounds(emb: StageEmbeddings, average_repeats: bool) -> list[np.ndarray]:
    """Brain embeddings [N, E] aligned with ``emb.names``: one per round (see the module doc)."""
    index = {n: i for i, n in enumerate(emb.names)}
    by_image: list[list[int]] = [[] for _ in emb.names]
    for j, name in enumerate(emb.trial_stimuli):
        by_image[index[name]].append(j)
    if average_repeats:
        mean = np.stack([emb.brain[rows].mean(0) for rows in by_image])  # [N, E]
        return [mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)]
    n_rounds = max(len(rows) for rows in by_image)
    return [np.stack([emb.brain[rows[r % len(rows)]] for rows in by_image]) for r in range(n_rounds)]


def topk_hits(similarity: np.ndarray, partner: np.ndarray, candidates: int, rng: np.random.Generator):
    """[Q, len(TOPK)] bool: whether each query's partner is among its top k of ``candidates``.

    similarity [Q, N] (query rows), partner [Q] (the partner's column). With ``candidates < N``
    the partner competes with ``candidates - 1`` other columns drawn at random per query.
    """
    q, n = similarity.shape
    true = similarity[np.arange(q), partner]  # [Q]
    beaten = similarity >= true[:, None]  # [Q, N]: ties count against the partner
    beaten[np.arange(q), partner] = False
    if candidates < n:
        keep = np.zeros_like(beaten)
        for i in range(q):
            others = np.delete(np.arange(n), partner[i])
            keep[i, rng.choice(others, candidates - 1, replace=False)] = True
        beaten &= keep
    rank = beaten.sum(1)  # [Q]: candidates scoring at least the partner
    return np.stack([rank < k for k in TOPK], axis=1)


def score_rounds(
    rounds: list[np.ndarray],
    images: np.ndarray,
    candidates: int,
    seed: int,
    pairing: Callable[[int], np.ndarray] | None = None,
) -> dict[str, float]:
    """Top-k accuracy of both directions, averaged over rounds; ``pairing(r)`` gives round r's
    partner of each brain row (default the identity: row i <-> image i)."""
    rng = np.random.default_rng([seed, candidates])
    hits = {d: [] for d in DIRECTIONS}
    for r, brain in enumerate(rounds):
        partner = np.arange(len(brain)) if pairing is None else pairing(r)
        sim = brain @ images.T  # [N, N]
        hits["brain_to_image"].append(topk_hits(sim, partner, candidates, rng))
        inverse = np.argsort(partner)  # image j's partner brain row
        hits["image_to_brain"].append(topk_hits(sim.T, inverse, candidates, rng))
    return {
        f"top{k}_{d}": float(np.concatenate(hits[d])[:, i].mean())
        for d in DIRECTIONS
        for i, k in enumerate(TOPK)
    }


def retrieval_scores(
    emb: StageEmbeddings, candidates: int | None, average_repeats: bool, seed: int = 0
) -> dict[str, Any]:
    """Top-1/top-5 both ways among ``candidates`` test images (default all), with chance."""
    n = len(emb.names)
    n_c = _candidates(candidates, n)
    rounds = retrieval_rounds(emb, average_repeats)
    return {
        "images": n,
        "epochs": len(emb.trial_stimuli),
        "candidates": n_c,
        "rounds": len(rounds),
        "chance": {f"top{k}": min(k, n_c) / n_c for k in TOPK},
        "scores": score_rounds(rounds, emb.images, n_c, seed),
    }


def shuffled_control(
    emb: StageEmbeddings, candidates: int | None, average_repeats: bool, seed: int = 0
) -> dict[str, Any]:
    """The scores with the brain <-> image pairing permuted: mean and 2.5-97.5 % range."""
    n_c = _candidates(candidates, len(emb.names))
    rounds = retrieval_rounds(emb, average_repeats)
    rng = np.random.default_rng([seed, 7])
    draws = []
    for p in range(CONTROL_PERMUTATIONS):
        perms = [rng.permutation(len(emb.names)) for _ in rounds]
        draws.append(score_rounds(rounds, emb.images, n_c, seed + 1000 * (p + 1), lambda r, ps=perms: ps[r]))
    keys = list(draws[0])
    return {
        "permutations": CONTROL_PERMUTATIONS,
        "mean": {k: float(np.mean([d[k] for d in draws])) for k in keys},
        "range": {k: [float(np.percentile([d[k] for d in draws], q)) for q in (2.5, 97.5)] for k in keys},
    }


def _candidates(candidates: int | None, n: int) -> int:
    if n < 2:
        raise RetrievalError(f"retrieval needs at least 2 test images, the test split has {n}")
    if candidates is None:
        return n
    if not 2 <= candidates <= n:
        raise RetrievalError(f"--candidates {candidates}: between 2 and the {n} test images")
    return int(candidates)


# ----------------------------------------------------------------------------- results
def _mean_over_seeds(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = list(records[0]["scores"])
    out = {}
    for key in keys:
        vals = [r["scores"][key] for r in records]
        ctrl = [r["control"]["mean"][key] for r in records]
        out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "control": float(np.mean(ctrl))}
        if all("trained_control" in r for r in records):
            out[key]["trained_control"] = float(np.mean([r["trained_control"][key] for r in records]))
    return out


def markdown(results: dict[str, Any]) -> str:
    """The results as a Markdown table: method rows x top-k columns, both directions."""
    first = results["per_seed"][0]
    n_c = results["candidates"]
    chance = results["chance"]
    cols = [f"top{k}_{d}" for d in DIRECTIONS for k in TOPK]
    head = [
        "",
        *[
            c.replace("_", " ")
            .replace("brain to image", "brain→image")
            .replace("image to brain", "image→brain")
            for c in cols
        ],
    ]
    lines = [
        "# retrieval evaluation",
        "",
        f"{first['images']} held-out test images ({first['epochs']} epochs), never in a training epoch; "
        f"{n_c} candidates per query; "
        f"{'repeats averaged' if results['average_repeats'] else 'single presentations (rounds of one per image)'}; "
        f"seeds {', '.join(map(str, results['seeds']))}.",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * len(head)) + " |",
    ]
    mean = results["mean"]
    lines.append(
        "| model (mean ± std over seeds) | "
        + " | ".join(f"{mean[c]['mean']:.3f} ± {mean[c]['std']:.3f}" for c in cols)
        + " |"
    )
    lines.append(
        "| control: shuffled pairing | " + " | ".join(f"{mean[c]['control']:.3f}" for c in cols) + " |"
    )
    if all("trained_control" in v for v in mean.values()):
        lines.append(
            "| control: trained on shuffled pairs | "
            + " | ".join(f"{mean[c]['trained_control']:.3f}" for c in cols)
            + " |"
        )
    lines.append("| chance | " + " | ".join(f"{chance[c.split('_')[0]]:.3f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- set-up
def _check_config(config: str | Path, overrides: list[str]) -> Namespace:
    """The alignment config with the overrides; errors name what is wrong."""
    from neurotrain.models.modules import AlignmentModule
    from neurotrain.train.run.lightning_cli import load_config, model_class

    try:
        cfg = load_config(["--config", str(config), "--media_every_n_val=0", *overrides])
    except Exception as exc:
        raise RetrievalError(f"the config does not parse: {str(exc).strip().splitlines()[0]}") from exc
    model = model_class(cfg)
    if model is None or not issubclass(model, AlignmentModule) or cfg.get("model.init_args.pair") != "image":
        raise RetrievalError(
            "retrieval scores brain-image alignment: the config's model must be "
            f"AlignmentModule with pair: image (got {cfg.get('model.class_path') or 'none'})"
        )
    if cfg["data.mode"] != "epochs" or not cfg["data.images"]:
        raise RetrievalError(
            "retrieval pairs epochs with images: set data.mode: epochs and data.images: true"
        )
    return cfg


def claim_folder(out: Path, plan: dict[str, Any]) -> None:
    """``OUT/evaluate.json`` (as the other protocols): the fits a folder holds; a re-run with another config or other
    overrides is refused (its finished runs would be reused), other seeds or scoring options not."""
    path = out / "evaluate.json"
    if path.is_file():
        held = json.loads(path.read_text())
        if held != plan:
            raise RetrievalError(
                f"{out} holds a {held.get('protocol')} evaluation of {held.get('config')} with overrides "
                f"{held.get('overrides')}; use another --out for {plan['config']} {plan['overrides']}"
            )
        return
    atomic_write_json(path, plan)


def load_fitted(cfg: Namespace, last: Path) -> tuple[Any, Any]:
    """The fitted model of ``cfg`` and a fresh data module normalised as the fit was.

    ``last`` is read once, weights-only. The model is built from the config's constructor
    arguments, each replaced by the value the checkpoint saved: what a module resolved from the
    data when its fit began (subject layers' subjects and width, a readout's subjects, channel slots
    and input size) is in those, so the weights find every module they belong to."""
    from neurotrain.models.checkpoint_io import read_fitted
    from neurotrain.train.run.lightning_cli import model_class

    init = cfg["model.init_args"]
    init = init.as_dict() if isinstance(init, Namespace) else dict(init)
    state, normalization, saved = read_fitted(last)
    model = model_class(cfg)(**{k: saved.get(k, v) for k, v in init.items()})
    model.load_state_dict(state)
    return model, stage_datamodule(cfg, normalization)


def stage_datamodule(cfg: Namespace, normalization: dict[str, Any] | None = None) -> Any:
    """The config's data module (normalised as the fit was, when its table is given)."""
    from neurotrain.datamodules.loading.datamodule import ShardDataModule

    data = cfg["data"].as_dict() if isinstance(cfg["data"], Namespace) else dict(cfg["data"])
    if normalization:
        data["normalization"] = normalization
    dm = ShardDataModule(**data)
    dm.setup("test")
    return dm


def check_held_out(dm: Any, protocol: str = PROTOCOL) -> dict[str, Any]:
    """The test images and the proof that no training epoch shows one; refuses otherwise."""
    for path, manifest in zip(dm.datasets, dm.manifests, strict=True):
        if (manifest.get("splits") or {}).get("by") != "stimulus":
            raise RetrievalError(
                f"{path}: sharded with a subject split; {protocol} scores held-out images: "
                "re-shard with --split-by stimulus"
            )
    train = set(dm.epoch_stimuli("train").values())
    test = set(dm.epoch_stimuli("test").values())
    shared = sorted(train & test)
    if shared:
        raise RetrievalError(f"{len(shared)} test images are in training epochs (e.g. {shared[0]})")
    return {"test_images": sorted(test), "train_images": len(train), "test_images_in_training": 0}

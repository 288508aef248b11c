"""Moved: the classical baselines live in `neurotrain.train.evaluation.baselines`.

This module keeps the old import path ``neurotrain.train.baselines`` working.
"""

from neurotrain.train.evaluation.baselines import (  # noqa: F401
    BASELINES,
    TITLES,
    classification_scores,
    collect_epochs,
    cross_validate,
    fit_and_score,
    make_pipeline,
    score_on_loaders,
)

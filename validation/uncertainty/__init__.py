"""The reliability index: semantic-entropy uncertainty of sampled answers and its evaluation.

Modules: :mod:`~validation.uncertainty.estimators` (semantic, discrete and within-cluster entropy),
:mod:`~validation.uncertainty.clustering` (greedy bidirectional-equivalence clustering),
:mod:`~validation.uncertainty.equivalence` (exact, yes/no, sentence-embedding and NLI back-ends),
:mod:`~validation.uncertainty.calibration` (AUROC, prediction-rejection ratio, reliability levels).
Natural logarithms throughout.
"""

from validation.uncertainty.calibration import (
    LEVELS,
    ReliabilityThresholds,
    assign_level,
    auroc,
    calibrate_levels,
    level_error_rates,
    prediction_rejection_ratio,
    rejection_curve,
)
from validation.uncertainty.clustering import Equivalence, semantic_clusters
from validation.uncertainty.equivalence import (
    DEFAULT_EMBEDDING_THRESHOLD,
    EmbeddingEquivalence,
    ExactMatch,
    NLIEquivalence,
    YesNoEquivalence,
    answer_polarity,
)
from validation.uncertainty.estimators import (
    cluster_probabilities,
    discrete_semantic_entropy,
    normalised_sample_probabilities,
    sample_entropy,
    semantic_entropy,
    sequence_log_likelihood,
    within_cluster_entropy,
)

__all__ = [
    "DEFAULT_EMBEDDING_THRESHOLD",
    "LEVELS",
    "EmbeddingEquivalence",
    "Equivalence",
    "ExactMatch",
    "NLIEquivalence",
    "ReliabilityThresholds",
    "YesNoEquivalence",
    "answer_polarity",
    "assign_level",
    "auroc",
    "calibrate_levels",
    "cluster_probabilities",
    "discrete_semantic_entropy",
    "level_error_rates",
    "normalised_sample_probabilities",
    "prediction_rejection_ratio",
    "rejection_curve",
    "sample_entropy",
    "semantic_clusters",
    "semantic_entropy",
    "sequence_log_likelihood",
    "within_cluster_entropy",
]

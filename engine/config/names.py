"""Every name a recipe may use, as plain data, so a recipe validates without importing the engine (or torch).

The engine's registries (methods, analyses, datasets, models), the figures and the terminal app's views are
checked against these sets by tests/test_registries.py.
"""

from __future__ import annotations

PAPERS = ("freetickets", "suptickets", "earlybird", "randompruning", "modeconnectivity", "demo")
DATASETS = ("cifar10", "cifar100", "digits", "synthetic", "imagenet", "synthetic-imagenet")
NORMALIZATIONS = ("cifar10", "cifar100", "imagenet", "digits", "none")
METRICS = (
    "test_acc", "test_error", "best_test_acc", "train_loss", "test_nll",
    "test_acc5",  # top-5 of the last evaluation (recorded for 100 classes or more: CIFAR-100, ImageNet)
    "eb_epoch",  # Early-Bird: epochs trained when the ticket at the recipe's prune ratio was drawn (/earlybird)
    "ensemble_acc", "ensemble_error", "ensemble_nll", "member_acc_mean", "superposed_acc",
    "ticket_ensemble_acc",
    "curve_min_train_loss", "curve_max_train_loss", "curve_min_test_error", "curve_max_test_error",
    "curve_line_min_train_loss", "curve_line_max_train_loss", "curve_line_min_test_error", "curve_line_max_test_error",
    "curve_ends_min_train_loss", "curve_ends_max_train_loss", "curve_ends_min_test_error", "curve_ends_max_test_error",
    "bn_train_loss", "bn_test_error", "disagreement_mean",
    "ensemble_ece", "corruption_acc", "corruption_nll", "corruption_ece", "corruption_ece_pooled",
)
# the analyses over a finished run (engine/analyses), each writing one group of analysis.h5
ANALYSES = ("predict", "disagreement", "kd", "calibration", "ood", "mask_overlap", "tsne", "sparsity", "earlybird",
            "curve", "plane", "bn_eval", "corruption")
SPARSE_INITS = ("uniform", "uniform_plus", "ER", "ERK", "ERK_plus", "snip", "snip_masks", "grasp", "pruning",
                "prune_uniform", "prune_global", "dense")
# where a run mirrors its metrics.jsonl as it writes it (engine/loggers.py; `[run] loggers`, `repro run --logger`)
LOGGERS = ("tensorboard", "wandb", "mlflow")
DEFAULT_LOGGERS = ("tensorboard",)  # what a recipe without `[run] loggers` mirrors to

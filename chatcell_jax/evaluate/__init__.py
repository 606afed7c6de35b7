"""Evaluation: ChatCell's metric suite, honest baselines on the same cells, and a report.

    evaluate_predictions(data_dir, split, predictions, out_dir, run_dir=None, options=None) -> metrics
    read_predictions(path) -> records with `output`

`evaluate_predictions` needs no model: it scores records that already carry the model's `output`
(see docs/evaluation.md). `predict.predict_records` produces them from a model.
"""

from chatcell_jax.evaluate.pipeline import EvaluateOptions, evaluate_predictions, read_predictions

__all__ = ["EvaluateOptions", "evaluate_predictions", "read_predictions"]

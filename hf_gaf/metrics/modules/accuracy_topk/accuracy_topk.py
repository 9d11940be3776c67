"""Top-1 and top-k accuracy as an `evaluate` metric, loadable offline:

    evaluate.load(hf_gaf.metrics.metric_path("accuracy_topk"))

predictions: per example, class indices sorted by descending score (at least k of them when k > 1);
references: the true class index. compute(..., k=5) returns {"accuracy", "top5_accuracy"}.
"""

import datasets
import evaluate
import numpy as np


class AccuracyTopk(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, k=5):
        preds = np.asarray(predictions)
        refs = np.asarray(references)
        out = {"accuracy": float((preds[:, 0] == refs).mean())}
        if k > 1:
            if preds.shape[1] < k:
                raise ValueError(f"top-{k} accuracy needs {k} ranked predictions per example, got {preds.shape[1]}")
            out[f"top{k}_accuracy"] = float((preds[:, :k] == refs[:, None]).any(axis=1).mean())
        return out

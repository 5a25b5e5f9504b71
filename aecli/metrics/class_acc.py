"""class-acc (seed 004): per class, how often a classifier trained on the real data recognises the class a
conditional model was asked for (aecli.metrics.classifier).

Import-light (see aecli.metrics.registry): the classifier and torch are imported when it runs.
"""

from __future__ import annotations

from typing import Any

from aecli.errors import UsageError
from aecli.metrics.registry import CLASS, Metric, register_metric

# Means over classes; the per-class values are "<key>[<class name>]" (JSON/CSV only).
CLASS_KEYS = ("class_acc", "class_conf", "class_ceiling")


@register_metric
class ClassAccuracy(Metric):
    name = "class-acc"
    kind = CLASS
    columns = CLASS_KEYS
    paired = "needs a class-conditional checkpoint"
    help = ("class-conditional models, as in the QuickDraw conditional VAE, seed 004: an MLP classifier trained on "
            "the real labelled train split, cached in --cache, scores --class-samples draws per class; columns "
            "class_acc = share classified as the asked class, class_conf = mean softmax probability of the asked "
            "class, class_ceiling = the classifier's accuracy on real val images; each the mean over classes, per "
            "class as class_acc[NAME], class_conf[NAME], class_ceiling[NAME] in --json-out/--csv-out")
    definition = ("conditional models: an MLP classifier trained on the real train split classifies "
                  "--class-samples draws per class; class_acc = fraction classified as the asked class, "
                  "class_conf = mean softmax probability of the asked class, class_ceiling = the classifier's "
                  "accuracy on the real val split; each the mean over classes (per class: class_acc[NAME], ...)")

    def __init__(self, ev: Any) -> None:
        from aecli.metrics.classifier import ClassifierCache

        super().__init__(ev)
        self.classifiers = ClassifierCache(ev.cache_dir)

    @classmethod
    def report_columns(cls, rows: list[Any]) -> list[str]:
        """The means, then every per-class key any row has, in first-seen order."""
        return [*CLASS_KEYS, *(k for k in dict.fromkeys(k for r in rows for k in r.values) if "[" in k)]

    def report_info(self) -> dict[str, Any]:
        from aecli.metrics.classifier import ClassifierConfig

        for warning in self.classifiers.warnings:
            self.ev.warn(warning)
        return {"classifier_cache": {"dir": str(self.classifiers.directory), "trained": self.classifiers.trained,
                                     "hits": self.classifiers.hits, "classifier": ClassifierConfig().to_dict()}}

    def evaluate(self, row: Any, model: Any, spec: Any, source: str) -> None:
        reason = ("" if model.is_conditional else
                  f"{row.family} is not class-conditional (train it with --num-classes on labelled data)")
        if not reason and not model.has_prior:
            reason = f"{row.family} has no prior to sample from"
        if reason:
            self.na(row, reason)
            return
        train, val = self._labelled_splits(row, model, spec, source)
        acc, conf, ceiling = self._scores(model, spec, train, val)
        for key, per_class in zip(CLASS_KEYS, (acc, conf, ceiling)):
            present = [v for v in per_class if v is not None]
            row.values[key] = sum(present) / len(present)
            row.values.update({f"{key}[{name}]": v for name, v in zip(train.class_names, per_class)})
        row.notes[self.name] = (f"{self.ev.cfg.class_samples} draws per class; MLP classifier trained on "
                                f"{len(train)} train images, ceiling on {len(val)} val images")

    def _labelled_splits(self, row: Any, model: Any, spec: Any, source: str) -> tuple[Any, Any]:
        from aecli.metrics.classifier import check_labelled

        train = self.ev.dataset(self.ev.cfg.data, spec, row.name, split="train")
        val = self.ev.dataset(self.ev.cfg.data, spec, row.name, split="val")
        check_labelled(train, "train")
        check_labelled(val, "val")
        # Label k must mean the same class to the model and to the classifier.
        if len(train.class_names) != model.config.num_classes or spec.class_names not in ([], train.class_names):
            raise UsageError(f"{row.name} was trained on classes {spec.class_names or model.config.num_classes} but "
                             f"{source} has {train.class_names}; pass --data with the labelled data it was "
                             "trained on")
        return train, val

    def _scores(self, model: Any, spec: Any, train: Any, val: Any) -> tuple[list[Any], list[Any], list[Any]]:
        """Per class: share of draws classified as asked, mean probability of the asked class, real accuracy."""
        import torch

        from aecli.metrics import classifier

        ev = self.ev
        clf = self.classifiers.get_or_train(train, spec, classifier.ClassifierConfig(), ev.device)

        def sample(k: int, b: int, gen: torch.Generator) -> torch.Tensor:
            labels = torch.full((b,), k, dtype=torch.long, device=ev.device)
            with torch.no_grad():
                return model.sample(b, labels=labels, generator=gen)

        acc, conf = classifier.sample_scores(clf, sample, spec, model.config.num_classes, ev.cfg.class_samples,
                                             ev.cfg.batch_size, ev.cfg.seed)
        return acc, conf, classifier.real_accuracy(clf, val, spec.value_range, ev.device)

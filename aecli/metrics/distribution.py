"""Distribution metrics: an image set's Inception features against the evaluation set's (FID, IS, KID
through the --fid-backend of aecli.metrics.fidelity). The evaluator extracts the features once per set
and hands them to every metric that compares that set.

Import-light (see aecli.metrics.registry): the formulas are imported when a score is computed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aecli.metrics.registry import DISTRIBUTION, Metric, register_metric
from aecli.weights import INCEPTION

Features = dict[str, Any]  # "2048" (pool3) and, from torch-fidelity, "logits_unbiased": (N, D) tensors


class DistributionMetric(Metric):
    kind: ClassVar[str] = DISTRIBUTION
    weights: ClassVar[tuple[str, ...]] = (INCEPTION,)
    of: ClassVar[str] = "samples"

    def score(self, row: Any, feats: Features, ref: Features | None, backend: Any) -> None:
        """Write this metric's values and note (naming the backend's protocol) into ``row``."""
        raise NotImplementedError

    def too_few(self, row: Any, feats: Features, ref: Features | None) -> bool:
        """n/a (and True) unless both sides have the 2 images a covariance needs."""
        if len(feats["2048"]) < 2 or ref is None or len(ref["2048"]) < 2:
            self.na(row, "needs at least 2 images on each side")
            return True
        return False


class _FrechetDistance(DistributionMetric):
    def score(self, row: Any, feats: Features, ref: Features | None, backend: Any) -> None:
        if self.too_few(row, feats, ref):
            return
        assert ref is not None
        row.values[self.name] = backend.fid(feats["2048"], ref["2048"])
        row.notes[self.name] = f"protocol {backend.tag()}"


@register_metric
class RFID(_FrechetDistance):
    name = "rfid"
    of = "reconstructions"
    paired = "use fid: the predictions are the reconstructions"
    help = "FID of the reconstructions against their inputs"
    definition = "FID of the reconstructions against their inputs"


@register_metric
class FID(_FrechetDistance):
    name = "fid"
    help = "generative families, --samples prior draws against the evaluation set"
    definition = "FID of --samples prior draws against the evaluation set"


@register_metric
class InceptionScore(DistributionMetric):
    name = "is"
    columns = ("is", "is_std")
    help = "Inception Score of --samples prior draws"
    definition = "Inception Score of --samples prior draws (10 splits)"

    def score(self, row: Any, feats: Features, ref: Features | None, backend: Any) -> None:
        from aecli.metrics.fidelity import inception_score

        if not backend.has_inception_score:
            self.na(row, f"{backend.name} has no Inception Score; use --fid-backend torch-fidelity")
            return
        row.values["is"], row.values["is_std"] = inception_score(feats["logits_unbiased"])
        row.notes["is"] = f"protocol {backend.tag()}"


@register_metric
class KID(DistributionMetric):
    name = "kid"
    columns = ("kid", "kid_std")
    help = "KID of --samples prior draws against the evaluation set"
    definition = "KID of --samples prior draws against the evaluation set (subset size min(1000, N))"

    def score(self, row: Any, feats: Features, ref: Features | None, backend: Any) -> None:
        if self.too_few(row, feats, ref):
            return
        assert ref is not None
        row.values["kid"], row.values["kid_std"], subset = backend.kid(feats["2048"], ref["2048"])
        row.notes["kid"] = f"protocol {backend.tag()}, subset size {subset}, 100 subsets"

"""What a model expects of its input images; stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from aecli.data.identity import check_recorded_source, source_key
from aecli.errors import UsageError


@dataclass
class DataSpec:
    image_size: int
    channels: int
    value_range: tuple[float, float] = (-1.0, 1.0)  # pixel values the model sees, [lo, hi]
    class_names: list[str] = field(default_factory=list)  # empty when unlabeled
    source: str = ""  # where the training data came from (path or dataset name), as given
    # ``source`` resolved at training time (absolute, symlinks followed; "" for a named set): the
    # identity commands compare other spellings with, and the default data from any working folder.
    source_path: str = ""
    # How training held out its validation images, so `--split val` elsewhere means the same images.
    val_count: int | None = None
    val_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["value_range"] = list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if "value_range" in kwargs:
            kwargs["value_range"] = tuple(float(v) for v in kwargs["value_range"])
        return cls(**kwargs)

    def training_key(self) -> str | None:
        """aecli.data.identity.source_key of the training data."""
        try:
            return "path:" + self.source_path if self.source_path else source_key(self.source)
        except UsageError:  # a recorded source no command would open (shapes:0) is no data's identity
            return None

    def is_training_source(self, source: Any) -> bool:
        """Whether ``source`` names the training data, however it is spelled (see aecli.data.identity)."""
        key = source_key(source)
        return key is not None and key == self.training_key()

    def default_source(self, checkpoint: Any) -> str:
        """The training data as a command's default ``--data``, checked like untrusted input."""
        return check_recorded_source(self.source_path or self.source, checkpoint)

    def split_options(self, source: Any) -> dict[str, Any]:
        """open_source() split options for ``source``: the training run's own rule when it is the
        training data (compared by resolved identity), the defaults otherwise (see aecli.data.open_for)."""
        if self.is_training_source(source):
            return {"val_count": self.val_count, "val_fraction": self.val_fraction}
        return {}

    def to_model_range(self, x01: "Any") -> "Any":
        """Map images in [0, 1] to the model's range."""
        lo, hi = self.value_range
        return x01 * (hi - lo) + lo

    def to_unit_range(self, x: "Any") -> "Any":
        """Map model-range images back to [0, 1] (clamped), e.g. for PNGs and metrics."""
        lo, hi = self.value_range
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

"""The epoch's running loss sums, kept on the device without a host sync every step.

Each step's components are queued as one stacked tensor; ``flush`` (once per log line, save or epoch
end) checks them for non-finite values and adds them to the sums. The sums are saved with the resume
state, so a run resumed mid-epoch logs exactly the means an uninterrupted run logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aecli.errors import TrainingError
from aecli.training import distributed


class RunningLosses:
    def __init__(self, device: torch.device, run_dir: Path, saved: dict[str, Any] | None = None) -> None:
        """``saved``: what :meth:`state` returned when the resume state was written."""
        self.device = device
        self.run_dir = run_dir
        saved = saved or {}
        self.sums: dict[str, torch.Tensor] = {
            k: torch.tensor(v, device=device) for k, v in saved.get("epoch_sums", {}).items()}
        self.batches: int = saved.get("epoch_batches", 0)
        self._pending: list[tuple[int, tuple[str, ...], torch.Tensor]] = []

    def track(self, step: int, comps: dict[str, torch.Tensor]) -> None:
        """Queue step ``step``'s loss components."""
        names = tuple(sorted(comps))
        self._pending.append((step, names, torch.stack([comps[n].float() for n in names])))
        self.batches += 1

    def flush(self) -> None:
        """Fold queued step losses into the sums after checking they are finite."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        groups: dict[tuple[str, ...], list[tuple[int, torch.Tensor]]] = {}
        for step, names, vec in pending:
            groups.setdefault(names, []).append((step, vec))
        first_bad: tuple[int, list[str]] | None = None
        for names, items in groups.items():
            stacked = torch.stack([v for _, v in items])
            finite = torch.isfinite(stacked)
            rows = finite.all(1).cpu()
            if not bool(rows.all()):
                i = int((~rows).nonzero()[0])
                which = [n for n, ok in zip(names, finite[i].cpu().tolist()) if not ok]
                if first_bad is None or items[i][0] < first_bad[0]:
                    first_bad = (items[i][0], which)
            # Added one step at a time, in step order: the sums then do not depend on where flushes
            # fall, so a run interrupted anywhere logs bit-identical epoch means.
            acc = torch.stack([self.sums.get(n, torch.zeros((), device=self.device)) for n in names])
            for row in stacked:
                acc = acc + row
            self.sums.update(zip(names, acc.unbind(0)))
        if first_bad is not None:
            # 1-based, like the step counts in the logs
            raise TrainingError(f"non-finite loss at step {first_bad[0] + 1} in {', '.join(first_bad[1])}; the last "
                                f"good checkpoint in {self.run_dir} is kept. Lower --lr, add --grad-clip, or use "
                                "--precision fp32")

    def means(self) -> dict[str, float]:
        """This rank's epoch means (one host sync per component)."""
        self.flush()
        return {k: float(v) / max(1, self.batches) for k, v in self.sums.items()}

    def reduced_means(self) -> dict[str, float]:
        """The epoch means averaged over ranks (one all-reduce for all of them)."""
        self.flush()
        names = sorted(self.sums)
        if not names:
            return {}
        stacked = distributed.all_reduce_mean(torch.stack([self.sums[k] for k in names]) / max(1, self.batches))
        return dict(zip(names, stacked.tolist()))

    def reset(self) -> None:
        self.sums, self.batches = {}, 0

    def state(self) -> dict[str, Any]:
        """For the resume state (flushed first)."""
        self.flush()
        return {"epoch_sums": {k: float(v) for k, v in self.sums.items()}, "epoch_batches": self.batches}

"""BatchLoader: batches gathered straight from the uint8 store by index, already on the device.

No per-image Python or PIL work per step and no host synchronisation: one ``index_select`` per batch.
On CUDA a store under ``GPU_RESIDENT_BYTES`` is copied to the GPU once and indexed there; a larger one
is gathered on the host by a helper thread, pinned, and copied with ``non_blocking=True`` while the
model works on the previous batch. Float conversion happens on the device (``to_model_input``).

The order of an epoch depends only on (seed, epoch), so a resumed run replays it exactly
(``set_epoch`` + ``iter_from``), and with DDP every rank computes the same permutation and takes a
disjoint strided slice of it, padded by wrapping around (or truncated with ``drop_last``) so that
all ranks run the same number of steps.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

import numpy as np
import torch

from aecli.data.imageset import ImageSet

GPU_RESIDENT_BYTES = 2 * 1024**3
_PREFETCH = 2  # batches gathered ahead on the host (CUDA, store not resident)


def to_model_input(x_uint8: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """uint8 images → float32 in ``value_range`` (e.g. (-1, 1) for Tanh models), on x's device."""
    lo, hi = float(value_range[0]), float(value_range[1])
    return x_uint8.to(torch.float32).mul_((hi - lo) / 255.0).add_(lo)


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for (seed, epoch): neighbouring seeds give unrelated orders."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch & 0xFFFFFFFF]).generate_state(1, np.uint64)[0]
               & 0x7FFFFFFFFFFFFFFF)


class BatchLoader:
    def __init__(self, data: ImageSet, batch_size: int, *, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, device: Any = "cpu", rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.data, self.batch_size, self.shuffle, self.seed = data, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.device = torch.device(device)
        self.epoch = 0
        n = len(data)
        self.per_rank = n // world_size if drop_last else -(-n // world_size)
        self.resident = self.device.type == "cuda" and data.nbytes < GPU_RESIDENT_BYTES
        if self.resident:  # one copy, then every batch is a GPU gather
            self._images = data.tensor().to(self.device)
            self._labels = data.labels.to(self.device)
        else:
            self._labels = data.labels

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's item indices for the current epoch, in batch order (CPU int64)."""
        n = len(self.data)
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self.per_rank * self.world_size
        if total > n:  # pad by wrapping around, as DistributedSampler does
            order = order.repeat(-(-total // n))
        order = order[:total]
        mine = order[self.rank :: self.world_size]
        return mine[: len(self) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.iter_from(0)

    def iter_from(self, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from ``start_batch`` on (the earlier ones are not gathered at all)."""
        idx = self.indices()
        bounds = [(b * self.batch_size, min((b + 1) * self.batch_size, len(idx)))
                  for b in range(max(0, start_batch), len(self))]
        if self.resident:
            idx = idx.to(self.device)
            for a, b in bounds:
                sel = idx[a:b]
                yield self._images.index_select(0, sel), self._labels.index_select(0, sel)
        elif self.device.type == "cuda":
            for x, y in _prefetched(self._host_batches(idx, bounds, pin=True)):
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        else:
            for x, y in self._host_batches(idx, bounds, pin=False):
                yield (x, y) if self.device.type == "cpu" else (x.to(self.device), y.to(self.device))

    def _host_batches(self, idx: torch.Tensor, bounds: list[tuple[int, int]],
                      pin: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for a, b in bounds:
            sel = idx[a:b]
            x, y = self.data.take(sel), self._labels.index_select(0, sel)
            yield (x.pin_memory(), y.pin_memory()) if pin else (x, y)


def _prefetched(batches: Iterator[Any], depth: int = _PREFETCH) -> Iterator[Any]:
    """Run ``batches`` on a helper thread, ``depth`` items ahead (index_select and pinning release the
    GIL, so the gather overlaps the training step)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in batches:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)
            return
        q.put(done)

    thread = threading.Thread(target=work, daemon=True, name="aecli-prefetch")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)

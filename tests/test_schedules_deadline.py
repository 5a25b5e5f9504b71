"""--max-time: the cosine schedule re-plans its length so that it ends at the deadline, from recorded state."""

from __future__ import annotations

import math

from aecli.training.schedules import REPLAN_EVERY, LRSchedule


def _run(schedule: LRSchedule, start: int, stop: int, seconds_per_step: float, t0: float = 0.0) -> None:
    for step in range(start, stop):
        schedule.observe(step, now=t0 + (step - start) * seconds_per_step)


def test_cosine_ends_at_the_deadline() -> None:
    # Planned 1,000 steps, but at 1 s per step only 100 fit before the deadline at t = 100 s.
    s = LRSchedule("cosine", 0.1, total_steps=1000, steps_per_epoch=10, deadline=100.0)
    _run(s, 0, REPLAN_EVERY + 1, 1.0)
    assert s.total_steps == 100  # step 10 at t = 10 s: 90 s left at 1 s per step
    assert s.lr(99) == 0.1 * 0.5 * (1 + math.cos(math.pi * 99 / 100))
    assert s.lr(100) == 0.0


def test_the_plan_caps_the_estimate_and_no_deadline_changes_nothing() -> None:
    s = LRSchedule("cosine", 0.1, total_steps=50, steps_per_epoch=10, deadline=1e6)
    _run(s, 0, 40, 1.0)
    assert s.total_steps == 50
    plain = LRSchedule("cosine", 0.1, total_steps=50, steps_per_epoch=10)
    _run(plain, 0, 40, 1.0)
    assert plain.total_steps == 50 and plain.state()["deadline_total_steps"] is None


def test_a_resumed_run_continues_the_recorded_estimate() -> None:
    first = LRSchedule("cosine", 0.1, total_steps=1000, steps_per_epoch=10, warmup_steps=5, deadline=100.0)
    _run(first, 0, 35, 1.0)
    state = first.state()
    assert state["deadline_total_steps"] == first.total_steps == 100
    # A new process (another deadline, not yet measured) uses the recorded total until it has its own rate.
    again = LRSchedule("cosine", 0.1, total_steps=1000, steps_per_epoch=10, warmup_steps=5, deadline=5000.0)
    again.load_state(state)
    _run(again, 35, 35 + REPLAN_EVERY, 2.0, t0=4000.0)
    assert [again.lr(s) for s in range(35, 45)] == [first.lr(s) for s in range(35, 45)]
    again.observe(50, now=4000.0 + 15 * 2.0)  # 15 steps in 30 s, 970 s left: 485 more steps
    assert again.total_steps == 50 + 485

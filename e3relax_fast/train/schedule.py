"""Learning rate as a pure function of the step: a linear warm-up, then a cosine or linear decay to
``final_lr`` at the end of a step budget (``optim.schedule``, e3relax_fast/train/config.py).

A run holds one *cycle* at a time, ``[start, end)`` in optimiser steps, saved in its checkpoint's
counters. A resumed run recomputes the rate from the step, so it continues exactly. A finished budget is
extended by resuming with a larger ``run.max_steps``: a new cycle starts at the current step, warms up
again from the trained weights and optimiser state and decays to the new end (a warm restart;
docs/training.md, "Extending a finished run").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetSchedule:
    """``kind`` ("cosine" or "linear"), peak ``lr``, ``warmup_steps``, ``final_lr``; a cycle ``[start, end)``."""

    kind: str
    lr: float
    warmup_steps: int
    final_lr: float
    start: int
    end: int

    def lr_at(self, step: int) -> float:
        """The rate of the optimiser step that follows ``step`` completed steps (clamped to the cycle)."""
        into = max(0, step - self.start)
        if into < self.warmup_steps:
            return self.lr * (into + 1) / self.warmup_steps
        decay_steps = max(1, self.end - self.start - self.warmup_steps)
        progress = min(1.0, (into - self.warmup_steps) / decay_steps)
        if self.kind == "cosine":
            share = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            share = 1.0 - progress
        return self.final_lr + (self.lr - self.final_lr) * share


def next_cycle(cycle: tuple[int, int], step: int, max_steps: int) -> tuple[int, int]:
    """The cycle a run resumed at ``step`` with budget ``max_steps`` follows.

    The same budget keeps the cycle. A larger budget after the cycle ended starts a new one at ``step``
    (re-warm). Changing the budget of an unfinished cycle would jump the rate, so it is refused.
    """
    start, end = cycle
    if max_steps == end:
        return cycle
    if step >= end and max_steps > step:
        return (step, max_steps)
    raise ValueError(f"this run's learning-rate schedule decays to its final rate at step {end} (now at step "
                     f"{step}): resume with run.max_steps={end} to finish it; once it has finished, resume with a "
                     "larger run.max_steps to warm up again and decay to the new budget")

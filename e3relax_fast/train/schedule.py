"""Learning rate as a pure function of the step: a linear warm-up, then a cosine or linear decay to
``final_lr`` at the end of a step budget (``optim.schedule``, e3relax_fast/train/config.py).

A run holds one *cycle* at a time, ``[start, end)`` in optimiser steps, saved in its checkpoint's
counters. A resumed run recomputes the rate from the step, so it continues exactly. A finished budget is
extended by resuming with a larger ``run.max_steps``: a new cycle starts at the current step, warms up
again from the trained weights and optimiser state and decays to the new end (a warm restart;
docs/training.md, "Extending a finished run"). The budget of an unfinished cycle is changed by
re-planning its decay: the cycle's start moves so that the current step keeps its share of the decay
and its rate, and the decay reaches ``final_lr`` at the new end ("Changing the budget of a run").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetSchedule:
    """``kind`` ("cosine" or "linear"), peak ``lr``, ``warmup_steps``, ``final_lr``; a cycle ``[start, end)``
    (``start`` fractional after a re-planned budget, :func:`replanned_start`)."""

    kind: str
    lr: float
    warmup_steps: int
    final_lr: float
    start: float
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


def next_cycle(cycle: tuple[float, int], step: int, max_steps: int, warmup_steps: int) -> tuple[float, int]:
    """The cycle a run resumed at ``step`` with budget ``max_steps`` follows.

    The same budget keeps the cycle, as does a budget already reached (the run stops at once). A larger
    budget after the cycle ended starts a new one at ``step`` (re-warm). A new budget for an unfinished
    cycle re-plans it (:func:`replanned_start`): the rate goes on from where it is, with no jump.
    """
    start, end = cycle
    if max_steps == end or max_steps <= step:
        return cycle
    if step >= end:
        return (step, max_steps)
    return (replanned_start(start, step, end, max_steps, warmup_steps), max_steps)


def replanned_start(start: float, step: int, end: int, new_end: int, warmup_steps: int) -> float:
    """The start of a cycle ending at ``new_end`` whose decay at ``step`` has gone as far, in its share
    of the decay, as the cycle ``[start, end)``'s: the rate at ``step`` is unchanged and it falls faster
    or slower from there. The start is fractional (a virtual step; only differences of steps are used).
    In the warm-up the start stays (the warm-up does not depend on the end)."""
    decay_begins = start + warmup_steps
    if step <= decay_begins:
        return start
    progress = (step - decay_begins) / max(1, end - decay_begins)
    # (step - b) / (new_end - b) = progress, solved for the new beginning b of the decay
    new_decay_begins = (step - progress * new_end) / (1.0 - progress)
    return new_decay_begins - warmup_steps

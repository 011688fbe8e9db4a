"""Reconnect delays: exponential from a minimum to a cap, with jitter so that many bridges
(or many PBX connections) restarting together do not knock on the PBX in step."""

from __future__ import annotations


def backoff_delay(failures: int, minimum: float, maximum: float, rand: float) -> float:
    """Delay before the next attempt after `failures` failed ones (0 = first retry).

    The step doubles from `minimum` up to `maximum`; the delay is a random point in the upper
    half of the step (`rand` in [0, 1)), so it never exceeds the cap.
    """
    step = min(maximum, minimum * 2.0 ** min(failures, 60))
    return step * (0.5 + 0.5 * rand)

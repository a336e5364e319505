"""Client policy shared by both engines: backoff and jitter, the retry budget, throttling.

One definition of each rule, so the DES kernel and the fluid engine cannot drift apart:

* `backoff_delay` is the sleep before a retry, given one uniform draw; the kernel calls it
  per retry, and `backoff_means` is its expectation for each try count, which the fluid
  engine uses (its retries are masses, not draws).
* `p_reject` is client-side adaptive throttling (Google SRE book, "Handling Overload"):
  P = max(0, (requests - K * accepts) / (requests + one)), over a window of THROTTLE_SLOTS
  slots; `one` is one real request in the caller's units, so the rule means the same at any
  scale.
* The retry budget is a token bucket of at most RETRY_BUDGET_BURST real tokens: a retry
  costs one real token per real request, a success earns `retry_budget`.

The scalar functions are compiled with the kernel (`kernel_jit.compiled`) and stay plain
Python where numba is absent or `OUTAGE_SIM_JIT=0`.
"""

from __future__ import annotations

import math

import numpy as np

from sim.engine.kernel_jit import compiled
from sim.model.scenario import Backoff

RETRY_BUDGET_BURST = 10.0  # real tokens: the bucket's size and its content at the start
THROTTLE_SLOTS = 10  # the throttle's window is this many slots of throttle_window / 10
JITTER_NONE, JITTER_FULL, JITTER_EQUAL, JITTER_DECORRELATED = range(4)
JITTER_CODES = {
    "none": JITTER_NONE,
    "full": JITTER_FULL,
    "equal": JITTER_EQUAL,
    "decorrelated": JITTER_DECORRELATED,
}
DECORRELATED_SAMPLES = 1 << 18  # stratified sample behind the decorrelated backoff means


@compiled
def backoff_delay(jitter, base_s, cap_s, multiplier, tries, previous_s, u):
    """Sleep (seconds) before retry number `tries + 1`, with `u` uniform in [0, 1).

    `previous_s` is the last sleep (0 before the first retry). Decorrelated jitter (AWS
    Architecture Blog, "Exponential Backoff And Jitter"): sleep = min(cap, U(base, 3 * sleep))
    with sleep starting at base, so the first retry already lies in [base, 3 * base].
    """
    if jitter == JITTER_DECORRELATED:
        high = 3.0 * max(base_s, previous_s)
        return min(cap_s, base_s + u * (high - base_s))
    # math.pow of floats: the same libm call compiled and in Python (integer powers differ).
    delay = min(cap_s, base_s * math.pow(multiplier, float(tries)))
    if jitter == JITTER_FULL:
        return u * delay
    if jitter == JITTER_EQUAL:
        return delay / 2.0 + u * delay / 2.0
    return delay


@compiled
def p_reject(requests, accepts, k, one):
    """The throttle's probability of rejecting the next request locally."""
    return max(0.0, (requests - k * accepts) / (requests + one))


def backoff_means(spec: Backoff | None, retries: int) -> np.ndarray:
    """The mean of `backoff_delay` for each try count 0 .. retries - 1 (seconds).

    none: min(cap, base * multiplier^k); full: half of it (uniform below it); equal: three
    quarters (half fixed, half uniform); decorrelated: the mean of the AWS definition, whose
    first delay is uniform in [base, 3 * base] (mean 2 * base when the cap is above 3 * base).
    """
    if spec is None or retries == 0:
        return np.zeros(retries)
    if spec.jitter == "decorrelated":
        return _decorrelated_means(spec.base, spec.cap, retries)
    tops = np.minimum(spec.cap, spec.base * spec.multiplier ** np.arange(retries, dtype=float))
    return tops * {"full": 0.5, "equal": 0.75}.get(spec.jitter, 1.0)


def _capped_uniform_mean(low: float, high: np.ndarray, cap: float) -> np.ndarray:
    """E[min(cap, U(low, high))] for each `high` >= `low`, in closed form."""
    high = np.asarray(high, dtype=float)
    width = high - low
    top = np.clip(cap, low, high)  # where [low, high] stops being below the cap
    with np.errstate(invalid="ignore", divide="ignore"):
        inside = ((top**2 - low**2) / 2 + top * (high - top)) / width
    return np.where(width > 0, inside, np.minimum(cap, high))


def _decorrelated_means(base: float, cap: float, retries: int) -> np.ndarray:
    """Mean delays of decorrelated jitter: sleep = min(cap, U(base, 3 * sleep)), sleep0 = base.

    Each mean is the closed-form E[min(cap, U(base, 3s))] averaged over a sample of the
    previous sleep s; the sample is carried forward with stratified uniforms in a fixed random
    order (the same numbers every run; error about 1e-4 of the mean).
    """
    if cap <= base:
        return np.full(retries, float(cap))
    order = np.random.default_rng(0)
    n = DECORRELATED_SAMPLES
    sleep = np.full(n, float(base))
    means = []
    for _ in range(retries):
        high = np.maximum(base, 3 * sleep)
        means.append(float(_capped_uniform_mean(base, high, cap).mean()))
        u = (order.permutation(n) + 0.5) / n
        sleep = np.minimum(cap, base + u * (high - base))
    return np.asarray(means)

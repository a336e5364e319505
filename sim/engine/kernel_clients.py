"""Client policy in the kernel: backoff and jitter, the retry budget, adaptive throttling.

The rules themselves (the backoff formula, P_reject, the bucket's size) live in
`sim/engine/clients.py`, shared with the fluid engine; here is the kernel's state around them.

A client is a caller's policy towards one station (today: the end user's towards the service).
Its parameters and state are a row of `cl_f`; every quantity that a real client counts (budget
tokens, the throttle's requests and accepts) is kept in real units, so at `scale` s one
simulated request counts as s real ones and the policy means the same at any scale.
The budget and throttle functions assume the client has them (`CL_HAS_BUDGET`,
`CL_HAS_THROTTLE`); the caller checks, so a client without them pays one test, not a call.
"""

from __future__ import annotations

from sim.engine import clients
from sim.engine.clients import JITTER_NONE, THROTTLE_SLOTS
from sim.engine.kernel_jit import compiled
from sim.engine.kernel_state import (
    CL_BASE_S,
    CL_BUDGET_BURST,
    CL_BUDGET_COST,
    CL_BUDGET_EARN,
    CL_CAP_S,
    CL_JITTER,
    CL_MULTIPLIER,
    CL_SCALE,
    CL_SLOT,
    CL_SLOT_S,
    CL_THROTTLE_K,
    CL_TOKENS,
    R_JITTER,
    R_THROTTLE,
)
from sim.engine.kernel_store import draw


@compiled
def backoff_delay(k, c, tries, previous_s):
    """Sleep before retry number `tries + 1` by `clients.backoff_delay` (the rule both engines
    share), with a draw from the jitter stream when the jitter kind needs one."""
    jitter = int(k.cl_f[c, CL_JITTER])
    u = draw(k.rand, k.rand_pos, R_JITTER) if jitter != JITTER_NONE else 0.0
    return clients.backoff_delay(
        jitter,
        k.cl_f[c, CL_BASE_S],
        k.cl_f[c, CL_CAP_S],
        k.cl_f[c, CL_MULTIPLIER],
        tries,
        previous_s,
        u,
    )


@compiled
def budget_allows(k, c):
    """Whether the retry budget has a token for one more retry."""
    # A retry passes while the bucket holds one real token, as a real client's would; at
    # scale > 1 a simulated retry costs `scale` tokens, so the bucket may go into debt by up to
    # scale - 1 tokens, which later successes repay (the long-run retry rate stays exact).
    return k.cl_f[c, CL_TOKENS] >= 1.0


@compiled
def budget_spend(k, c):
    k.cl_f[c, CL_TOKENS] -= k.cl_f[c, CL_BUDGET_COST]


@compiled
def budget_earn(k, c):
    tokens = k.cl_f[c, CL_TOKENS] + k.cl_f[c, CL_BUDGET_EARN]
    k.cl_f[c, CL_TOKENS] = min(k.cl_f[c, CL_BUDGET_BURST], tokens)


@compiled
def throttle_roll(k, c, now):
    """Move the client's sliding window to `now`, emptying the slots it passed; the slot index."""
    slot = int(now / k.cl_f[c, CL_SLOT_S])
    current = int(k.cl_f[c, CL_SLOT])
    if slot != current:
        for s in range(current + 1, min(slot, current + THROTTLE_SLOTS) + 1):
            k.th_req[c, s % THROTTLE_SLOTS] = 0.0
            k.th_acc[c, s % THROTTLE_SLOTS] = 0.0
        k.cl_f[c, CL_SLOT] = slot
    return slot % THROTTLE_SLOTS


@compiled
def throttled(k, c, now):
    """Adaptive throttling (Google SRE book, "Handling Overload"): the client rejects locally
    with P = max(0, (requests − K·accepts) / (requests + 1)) over its sliding window."""
    index = throttle_roll(k, c, now)
    scale = k.cl_f[c, CL_SCALE]
    requests = k.th_req[c].sum() * scale
    accepts = k.th_acc[c].sum() * scale
    k.th_req[c, index] += 1.0
    # Counts are real requests, so `one` real request is 1.0.
    p = clients.p_reject(requests, accepts, k.cl_f[c, CL_THROTTLE_K], 1.0)
    return p > 0.0 and draw(k.rand, k.rand_pos, R_THROTTLE) < p


@compiled
def throttle_accept(k, c, now):
    """A success: one accept in the throttle's window."""
    k.th_acc[c, throttle_roll(k, c, now)] += 1.0

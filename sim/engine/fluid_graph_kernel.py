"""The fluid engine's service-graph step: requests as masses flowing through tiers, compiled.

A slot of `dt` seconds at a time (`advance_slots`), over arrays laid out by `FluidGraphState`:

* a row per call of each route (the DES kernel's client rows): the caller's policy towards
  one tier (timeout, retries, mean backoff delays, retry budget), the row of the call its
  tier makes next on the route, and whether its tier holds its server through that call;
* a station per tier: a pool (servers, its backlog of queued work in server-seconds and the
  mass waiting) or a provider (a token bucket and a latency, no queue);
* per row, rings of delayed masses by slot: successes, error answers, timeouts and retries
  due, one column per try count, each with its moment (mass × first-send time), so a
  request's fate is counted in the bin of its mean first send and its latency is known.

The model of one attempt arriving at a pool (fluid FIFO): it starts after the wait
W = backlog / servers (spread as a normal law around that mean by the randomness of the work
queued ahead, `wait_sd`), holds a server for its own work (the tier's time, slowed by faults)
and, in a sync route, for its call below; its caller's outcome is decided when it arrives,
from the state of the tiers below as last computed (`summarise`): the call below succeeds
(with its own retries) with probability P_ok after a mean D_ok, or fails after D_fail. The
attempt succeeds if its own work and that call end within its client's timeout, answers an
error if the call fails in time, and otherwise times out; its work stays queued when its
client leaves (unless `drop_expired`, which drops work whose client left before it starts).
A provider admits what its token bucket holds and refuses the rest at once (`limited`).

Approximations, by design (the docstring of `fluid_graph.py` lists them with the engine's):
below capacity nothing waits (no Erlang C delay); each outcome's time is a mean (own work,
call durations, backoff delays), its probability from the service time's quantiles; a
caller reads the tiers below from the end of the previous slot; a tier's queue is one FIFO
whatever route a mass belongs to; delays longer than the rings fall due at the rings' end.

Over ~400 lines: one compiled step whose handlers (admission, outcomes, service, the
summaries callers read, pooled latency records) share one state and make no sense apart.
"""

from __future__ import annotations

import math
from collections import namedtuple

from sim.analysis.metrics import HIST_BUCKETS, HIST_EDGES, HIST_MIN_S
from sim.engine.kernel_jit import compiled, compiled_inline
from sim.engine.kernel_state import (
    AR_BUSY,
    AR_CAPACITY,
    AR_QUEUE,
    AR_SERVERS,
    C_ATTEMPTS,
    C_DROPPED,
    C_FRESH,
    C_FRESH_FAILED,
    C_FRESH_OK,
    C_LIMITED,
    C_REJECTED,
    C_RETRIES,
    C_SUCCEEDED,
    C_TIMED_OUT,
    ROF_LATENCY_SUM,
    SN_BUSY,
    SN_QUEUE,
    SN_SERVERS,
)
from sim.engine.kernel_store import latency_bucket

# -- rows (a caller's policy towards one tier, on one route) -------------------------------
(
    RW_STATION,
    RW_TIMEOUT_S,
    RW_RETRIES,
    RW_CHILD,
    RW_SYNC,
    RW_END_USER,
    RW_ROUTE,
    RW_HAS_BUDGET,
    RW_EARN,
    RW_BURST,
    RW_TOKENS,
) = range(11)
N_RW = 11
# What a caller reads of a row's call (with its retries), from the end of the last slot.
SM_P_OK, SM_D_OK, SM_D_FAIL, SM_D_ALL, SM_REFUSED = range(5)
N_SM = 5
# -- stations -------------------------------------------------------------------------------
(
    SP_PROVIDER,
    SP_SERVERS,
    SP_MEAN_S,
    SP_SLOWDOWN,
    SP_ERROR_RATE,
    SP_QUEUE_LIMIT,
    SP_DROP_EXPIRED,
    SP_RATE,
    SP_BURST,
    SP_TOKENS,
    SP_BACKLOG_S,
    SP_QUEUE,
    SP_BUSY,
    SP_STARTED,
    SP_WAITED,
    SP_WAIT_SUM,
    SP_BUSY_SECONDS,
    SP_IN_FLIGHT,
    SP_CARRY,
    SP_ADMIT,
    SP_SCV,
) = range(21)
N_SP = 21
# SP_CARRY: attempts holding a server past the slot they started in; SP_ADMIT: the share of
# this slot's attempts the station admits (`room`); SP_SCV: the squared coefficient of
# variation of the tier's service time over the run's scale (`wait_sd`).
# -- delayed masses -------------------------------------------------------------------------
EV_OK, EV_ERROR, EV_TIMEOUT, EV_RETRY = range(4)
N_EVK = 4
# -- scalars --------------------------------------------------------------------------------
GI_SLOT, GI_RING, GI_BIN, GI_SLOTS_PER_BIN, GI_N_BINS, GI_CLIENT_LO, GI_SERVER_LO = range(7)
N_GI = 7
GF_DT, GF_BIN_S = range(2)
N_GF = 2
# Pooled latency records (`note_latency`): mass, mass x start, limit, slowdown, bin.
PD_MASS, PD_BASE, PD_LIMIT, PD_SLOW, PD_BIN = range(5)
N_PD = 5
POOL_REL = 0.02  # a third of a histogram bucket (ratio 1.059)
# A call below never holds its caller longer than this (no servers and no timeout below).
LONGEST_S = 1e9
# Gauss-Hermite nodes and weights (probabilists', weights summing to 1) for the mean of a
# function of a normal wait (`timely`): exact for polynomials up to degree 13.
WAIT_NODES = (-3.75043972, -2.36675941, -1.15440539, 0.0, 1.15440539, 2.36675941, 3.75043972)
WAIT_WEIGHTS = (0.00054827, 0.03075712, 0.24012318, 0.45714286, 0.24012318, 0.03075712, 0.00054827)

FluidGraphState = namedtuple(
    "FluidGraphState",
    [
        "gi",  # int64 scalars (GI_*)
        "gf",  # float64 scalars (GF_*)
        "rw",  # rows x N_RW
        "delay",  # rows x tries: mean backoff before try k + 1
        "order",  # rows, callers before callees
        "sm",  # rows x N_SM
        "sp",  # stations x N_SP
        "quantile",  # stations x quantiles: service times (seconds, unslowed), ascending
        "cdf",  # quantiles: P(S <= quantile j)
        "weight",  # quantiles: each quantile's probability
        "fresh_cum",  # routes x (slots + 1): expected fresh requests to each slot edge
        "ring",  # rows x ring x N_EVK x tries x 2 (mass, moment)
        "calls",  # rows x ring x 2: calls arriving from the caller above (mass, moment)
        "queued",  # rows: attempts waiting in their tier's queue
        "releases",  # stations x ring: servers freed in each slot by long holds
        "offered",  # rows x tries x 2: a slot's attempts (scratch)
        "counts",  # rows x N_C x bins
        "areas",  # stations x N_AR x bins
        "snaps",  # stations x N_SN x bins
        "client_hist",  # bins x HIST_BUCKETS (fresh bin of the end user's request)
        "client_sum",  # bins x 2: latency sum, largest latency
        "server_hist",  # bins x HIST_BUCKETS (the entry tier, by the bin work starts in)
        "server_sum",  # bins x 2
        "ro_hist",  # routes x HIST_BUCKETS
        "ro_f",  # routes x N_ROF
        "pending",  # rows x (tries + 1) x N_PD: pooled latency records (the last: server)
    ],
)


@compiled_inline
def service_cdf(f, s, x):
    """P(S <= x) for station s's (unslowed) service time: between two quantiles its tail
    P(S > x) is interpolated log-linearly (exact for an exponential tail), as the
    single-pool fluid engine does."""
    q = f.quantile[s]
    n = q.shape[0]
    if x < q[0]:
        return f.cdf[0] * max(x, 0.0) / q[0] if q[0] > 0 else f.cdf[0]
    if x >= q[n - 1]:
        return 1.0
    low, high = 0, n - 1
    while high - low > 1:
        mid = (low + high) // 2
        if q[mid] <= x:
            low = mid
        else:
            high = mid
    span = q[high] - q[low]
    if span <= 0:
        return f.cdf[high]
    tail_low, tail_high = 1.0 - f.cdf[low], 1.0 - f.cdf[high]
    if tail_low <= 0 or tail_high <= 0:
        return f.cdf[low] + (f.cdf[high] - f.cdf[low]) * (x - q[low]) / span
    ratio = (x - q[low]) / span
    return 1.0 - math.exp(math.log(tail_low) + ratio * (math.log(tail_high) - math.log(tail_low)))


@compiled_inline
def wait_sd(f, s):
    """The spread of the wait behind station s's queue: the n attempts ahead leave after
    their summed work over the c servers, whose standard deviation is sqrt(n x SCV) x the
    mean work / c. Counted in real attempts and servers (n and c simulated, times the
    scale: SP_SCV holds SCV / scale), so the answer is the real system's at any scale. It
    matters where the mean wait is within a few of those of the timeout (a small pool
    behind a long queue): the attempts that happen to wait less still succeed."""
    sp = f.sp[s]
    if sp[SP_PROVIDER] != 0 or sp[SP_SERVERS] <= 0 or sp[SP_QUEUE] <= 0:
        return 0.0
    return math.sqrt(sp[SP_QUEUE] * sp[SP_SCV]) * sp[SP_MEAN_S] * sp[SP_SLOWDOWN] / sp[SP_SERVERS]


@compiled_inline
def timely(f, s, limit_s, wait, sd, slow):
    """P(wait + S <= limit_s) for station s's service time S (slowed by `slow`) behind a
    wait of mean `wait` and standard deviation `sd` (normal, never below zero)."""
    if sd <= 1e-9 * max(1.0, wait):
        return service_cdf(f, s, (limit_s - wait) / slow)
    total = 0.0
    for i in range(len(WAIT_NODES)):
        w = max(0.0, wait + WAIT_NODES[i] * sd)
        total += WAIT_WEIGHTS[i] * service_cdf(f, s, (limit_s - w) / slow)
    return total


@compiled_inline
def in_time(f, s, timeout, wait, slow, p_child, d_ok, d_fail):
    """An attempt at station s behind `wait` (mean; `wait_sd` spreads it), with a finite
    timeout: P(its work and a successful call below end in time), P(they end in time with
    the call failed), the call below succeeding with probability `p_child`."""
    sd = wait_sd(f, s)
    p_ok = p_child * timely(f, s, timeout - d_ok, wait, sd, slow)
    p_err = 0.0
    if p_child < 1.0:
        p_err = (1.0 - p_child) * timely(f, s, timeout - d_fail, wait, sd, slow)
    return p_ok, p_err


@compiled_inline
def ring_slot(f, now_slot, t_s):
    """The ring row of the slot `t_s` falls in: never this slot, never past the ring."""
    slot = int(math.floor(t_s / f.gf[GF_DT]))
    ring = f.gi[GI_RING]
    slot = min(max(slot, now_slot + 1), now_slot + ring - 1)
    return slot % ring


@compiled_inline
def fate_bin(f, mass, moment):
    """The bin of a mass's mean first-send time."""
    b = int(moment / mass / f.gf[GF_BIN_S]) if mass > 0 else 0
    return min(max(b, 0), f.gi[GI_N_BINS] - 1)


@compiled_inline
def summarise(f, c):
    """Row c's call as its caller sees it, from its tier's state now and the rows below:
    the share refused at once, P(success after its retries), the mean duration of a
    successful call, of a failed one, and of any (what a sync caller holds its server for)."""
    s = int(f.rw[c, RW_STATION])
    sp = f.sp[s]
    timeout = f.rw[c, RW_TIMEOUT_S]
    slow = sp[SP_SLOWDOWN]
    mean_s = sp[SP_MEAN_S] * slow
    wait = 0.0
    if sp[SP_PROVIDER] == 0:
        wait = sp[SP_BACKLOG_S] / sp[SP_SERVERS] if sp[SP_SERVERS] > 0 else math.inf
    child = int(f.rw[c, RW_CHILD])
    p_child, d_ok, d_fail = 1.0, 0.0, 0.0
    if child >= 0:
        p_child, d_ok, d_fail = f.sm[child, SM_P_OK], f.sm[child, SM_D_OK], f.sm[child, SM_D_FAIL]
    refused = 1.0 - (1.0 - f.sm[c, SM_REFUSED]) * (1.0 - sp[SP_ERROR_RATE])
    if math.isinf(wait):
        p_ok, p_err = 0.0, 0.0
    elif math.isinf(timeout):
        p_ok, p_err = p_child, 1.0 - p_child
    else:
        p_ok, p_err = in_time(f, s, timeout, wait, slow, p_child, d_ok, d_fail)
    ok = (1.0 - refused) * p_ok
    err = (1.0 - refused) * p_err
    late = max(0.0, 1.0 - refused - ok - err)
    fail = 1.0 - ok
    # A failed try's mean duration: refused at once, an error after the work and the call,
    # or the whole timeout.
    d_try_fail = 0.0
    if fail > 0:
        d_try_fail = err * (wait + mean_s + d_fail)
        if late > 0:
            d_try_fail += late * (timeout if not math.isinf(timeout) else wait + mean_s + d_fail)
        d_try_fail /= fail
    d_try_ok = wait + mean_s + d_ok
    n = int(f.rw[c, RW_RETRIES])
    reach, backoff, p_total, ok_time = 1.0, 0.0, 0.0, 0.0
    for k in range(n + 1):
        p_total += reach * ok
        ok_time += reach * ok * (k * d_try_fail + backoff + d_try_ok)
        reach *= fail
        if k < n:
            backoff += f.delay[c, k]
    f.sm[c, SM_P_OK] = p_total
    f.sm[c, SM_D_OK] = min(ok_time / p_total if p_total > 0 else d_try_ok, LONGEST_S)
    f.sm[c, SM_D_FAIL] = min((n + 1) * d_try_fail + backoff, LONGEST_S)
    f.sm[c, SM_D_ALL] = p_total * f.sm[c, SM_D_OK] + (1.0 - p_total) * f.sm[c, SM_D_FAIL]


@compiled_inline
def fail_tries(f, c, k, mass, moment, t_s, slot, b):
    """Try class k of row c failed at `t_s`: retried after its mean backoff delay where the
    client has tries (and budget) left, otherwise the call fails for good."""
    if mass <= 0:
        return
    n = int(f.rw[c, RW_RETRIES])
    retry = mass if k < n else 0.0
    if retry > 0 and f.rw[c, RW_HAS_BUDGET] != 0.0:
        retry = min(retry, f.rw[c, RW_TOKENS])
        f.rw[c, RW_TOKENS] -= retry
    if retry > 0:
        j = ring_slot(f, slot, t_s + f.delay[c, k])
        share = retry / mass
        f.ring[c, j, EV_RETRY, k + 1, 0] += retry
        f.ring[c, j, EV_RETRY, k + 1, 1] += moment * share
    gone = mass - retry
    if gone > 0 and f.rw[c, RW_END_USER] != 0.0:
        f.counts[c, C_FRESH_FAILED, fate_bin(f, mass, moment)] += gone
        lo = fate_bin(f, mass, moment)
        if lo < f.gi[GI_CLIENT_LO]:
            f.gi[GI_CLIENT_LO] = lo


@compiled_inline
def note_latency(f, c, k, mass, base_s, limit_s, slow, fresh_bin, server):
    """Latencies of `mass` attempts of try class k that start their work at `base_s` after
    their client's first send and succeed within `limit_s` of work, for the end user's
    request (`server` False) or the entry tier's server (True). Records of one row and class
    whose start and limit are within POOL_REL of each other, in one bin at one slowdown, are
    pooled at their mean before they are spread over the service quantiles (`spread`): a
    quiet bin costs one spread per row, not one per slot."""
    p = f.pending[c, k if not server else f.pending.shape[1] - 1]
    if p[PD_MASS] > 0:
        mean = p[PD_BASE] / p[PD_MASS]
        same = p[PD_BIN] == fresh_bin and p[PD_SLOW] == slow
        same = same and abs(base_s - mean) <= POOL_REL * max(mean, HIST_MIN_S)
        if math.isinf(limit_s) or math.isinf(p[PD_LIMIT]):
            same = same and limit_s == p[PD_LIMIT]
        else:
            same = same and abs(limit_s - p[PD_LIMIT]) <= POOL_REL * max(limit_s, HIST_MIN_S)
        if same:
            p[PD_MASS] += mass
            p[PD_BASE] += mass * base_s
            return
        flush_pending(f, c, p, server)
    p[PD_MASS], p[PD_BASE], p[PD_LIMIT] = mass, mass * base_s, limit_s
    p[PD_SLOW], p[PD_BIN] = slow, fresh_bin


@compiled
def flush_pending(f, c, p, server):
    """Spread one pooled record over the quantiles and empty it."""
    if p[PD_MASS] > 0:
        mass = p[PD_MASS]
        spread(f, c, mass, p[PD_BASE] / mass, p[PD_LIMIT], p[PD_SLOW], int(p[PD_BIN]), server)
    p[PD_MASS] = 0.0


@compiled
def flush_all(f):
    """Spread every pooled record (before the driver reads the histograms)."""
    last = f.pending.shape[1] - 1
    for c in range(f.pending.shape[0]):
        for k in range(f.pending.shape[1]):
            flush_pending(f, c, f.pending[c, k], k == last)


@compiled
def spread(f, c, mass, base_s, limit_s, slow, fresh_bin, server):
    """One record per service quantile of row c's tier below `limit_s`."""
    s = int(f.rw[c, RW_STATION])
    q, w = f.quantile[s], f.weight
    r = int(f.rw[c, RW_ROUTE])
    bucket = latency_bucket(base_s + q[0] * slow)
    for j in range(q.shape[0]):
        x = q[j] * slow
        if x > limit_s:
            break
        latency = base_s + x
        weight = mass * w[j]
        # The quantiles ascend: walk on from the last bucket rather than search again.
        while bucket < HIST_BUCKETS - 1 and latency >= HIST_EDGES[bucket + 1]:
            bucket += 1
        if server:
            f.server_hist[fresh_bin, bucket] += weight
            f.server_sum[fresh_bin, 0] += weight * latency
            f.server_sum[fresh_bin, 1] = max(f.server_sum[fresh_bin, 1], latency)
        else:
            f.client_hist[fresh_bin, bucket] += weight
            f.client_sum[fresh_bin, 0] += weight * latency
            f.client_sum[fresh_bin, 1] = max(f.client_sum[fresh_bin, 1], latency)
            f.ro_hist[r, bucket] += weight
            f.ro_f[r, ROF_LATENCY_SUM] += weight * latency


@compiled_inline
def room(f, s):
    """The share of this slot's attempts at station s (past its error rate) that it admits,
    the same for every route that calls it: a provider, what its bucket holds; a pool, what
    its servers' time left in the slot can start (a slot per attempt that holds a server
    longer) and what then fits in its queue."""
    sp = f.sp[s]
    offered, work = 0.0, 0.0
    dt = f.gf[GF_DT]
    for c in range(f.rw.shape[0]):
        if int(f.rw[c, RW_STATION]) != s:
            continue
        mass = 0.0
        for k in range(f.offered.shape[1]):
            mass += f.offered[c, k, 0]
        mass *= 1.0 - sp[SP_ERROR_RATE]
        offered += mass
        work += mass * min(holding_s(f, c), dt)
    share = 1.0
    if offered <= 0:
        share = 1.0 if sp[SP_PROVIDER] == 0 or sp[SP_TOKENS] > 0 else 0.0
    elif sp[SP_PROVIDER] != 0:
        take = min(offered, sp[SP_TOKENS])
        sp[SP_TOKENS] -= take
        share = take / offered
    else:
        # `serve` starts the same share of every queued and new attempt: admit the largest
        # share whose queue after that still fits the limit (bisection: it grows with it).
        free = max(0.0, sp[SP_SERVERS] - sp[SP_CARRY]) * dt
        queued, queued_work = 0.0, 0.0
        for c in range(f.rw.shape[0]):
            if int(f.rw[c, RW_STATION]) == s and f.queued[c] > 0:
                queued += f.queued[c]
                queued_work += f.queued[c] * min(holding_s(f, c), dt)
        low, high = 0.0, 1.0
        for _ in range(30):
            share = high if _ == 0 else (low + high) / 2
            wanted = queued_work + share * work
            started = min(1.0, free / wanted) if wanted > 0 else 1.0
            if (1.0 - started) * (queued + share * offered) <= sp[SP_QUEUE_LIMIT] * (1 + 1e-12):
                low = share
                if _ == 0:
                    break
            else:
                high = share
        share = low
    sp[SP_ADMIT] = share


@compiled_inline
def admit(f, c, slot, t_s, b):
    """Row c's attempts of this slot (in `offered`) reach its tier: refused at once (error,
    full queue, rate limit) or admitted, their outcomes scheduled."""
    s = int(f.rw[c, RW_STATION])
    sp = f.sp[s]
    tries = f.offered.shape[1]
    total = 0.0
    for k in range(tries):
        total += f.offered[c, k, 0]
    if total <= 0:
        return
    f.counts[c, C_ATTEMPTS, b] += total
    # Refusals: the tier's error rate, then its bucket or its full queue (`room`).
    error = sp[SP_ERROR_RATE]
    admitted = total * (1.0 - error) * sp[SP_ADMIT]
    limited = full = 0.0
    if sp[SP_PROVIDER] != 0:
        limited = total * (1.0 - error) - admitted
    else:
        full = total * (1.0 - error) - admitted
    refused = total - admitted
    f.sm[c, SM_REFUSED] = 1.0 - sp[SP_ADMIT]
    f.counts[c, C_REJECTED, b] += total * error + full
    f.counts[c, C_LIMITED, b] += limited
    keep = admitted / total
    for k in range(tries):
        mass, moment = f.offered[c, k, 0], f.offered[c, k, 1]
        if mass <= 0:
            continue
        if refused > 0:
            fail_tries(f, c, k, mass * (1.0 - keep), moment * (1.0 - keep), t_s, slot, b)
        f.offered[c, k, 0], f.offered[c, k, 1] = mass * keep, moment * keep
    if admitted > 0:
        schedule(f, c, s, slot, t_s, b, admitted)


@compiled
def drop_late(f, c, slot, t_s, b, mass_dropped, share):
    """`share` of row c's offered attempts are dropped unstarted: their clients time out."""
    f.counts[c, C_DROPPED, b] += mass_dropped
    timeout = f.rw[c, RW_TIMEOUT_S]
    j = ring_slot(f, slot, t_s + timeout)
    for k in range(f.offered.shape[1]):
        mass, moment = f.offered[c, k, 0], f.offered[c, k, 1]
        if mass <= 0:
            continue
        f.ring[c, j, EV_TIMEOUT, k, 0] += mass * share
        f.ring[c, j, EV_TIMEOUT, k, 1] += moment * share
        f.offered[c, k, 0], f.offered[c, k, 1] = mass * (1.0 - share), moment * (1.0 - share)


@compiled_inline
def schedule(f, c, s, slot, t_s, b, admitted):
    """Admitted attempts of row c: their wait, work, call below and outcomes."""
    sp = f.sp[s]
    tries = f.offered.shape[1]
    slow = sp[SP_SLOWDOWN]
    own_s = sp[SP_MEAN_S] * slow
    timeout = f.rw[c, RW_TIMEOUT_S]
    provider = sp[SP_PROVIDER] != 0
    wait = 0.0
    if not provider:
        servers = sp[SP_SERVERS]
        wait = sp[SP_BACKLOG_S] / servers if servers > 0 else math.inf
    child = int(f.rw[c, RW_CHILD])
    p_child, d_ok, d_fail, d_all = 1.0, 0.0, 0.0, 0.0
    if child >= 0:
        p_child, d_ok = f.sm[child, SM_P_OK], f.sm[child, SM_D_OK]
        d_fail, d_all = f.sm[child, SM_D_FAIL], f.sm[child, SM_D_ALL]
    finite = not math.isinf(timeout)
    if sp[SP_DROP_EXPIRED] != 0 and finite and not provider and not math.isinf(wait):
        # What would start only after its client left is dropped unstarted: the mass beyond
        # the work the queue can take before its wait reaches the timeout, so in overload
        # exactly the excess is dropped (and what is kept waits up to a slot less).
        hold = holding_s(f, c)
        room_s = timeout * servers - sp[SP_BACKLOG_S]
        keep = min(1.0, max(0.0, room_s / hold) / admitted) if hold > 0 else 1.0
        if keep < 1.0:
            drop_late(f, c, slot, t_s, b, admitted * (1.0 - keep), 1.0 - keep)
            admitted *= keep
            if admitted <= 0:
                return
    if math.isinf(wait):
        p_ok = p_err = 0.0
    elif finite:
        p_ok, p_err = in_time(f, s, timeout, wait, slow, p_child, d_ok, d_fail)
    else:
        p_ok, p_err = p_child, 1.0 - p_child
    p_late = max(0.0, 1.0 - p_ok - p_err)
    j_ok = ring_slot(f, slot, t_s + wait + own_s + d_ok)
    j_err = ring_slot(f, slot, t_s + wait + own_s + d_fail)
    j_late = ring_slot(f, slot, t_s + timeout) if finite else j_ok
    end_user = f.rw[c, RW_END_USER] != 0.0
    for k in range(tries):
        mass, moment = f.offered[c, k, 0], f.offered[c, k, 1]
        if mass <= 0:
            continue
        f.offered[c, k, 0] = f.offered[c, k, 1] = 0.0
        if p_ok > 0:
            f.ring[c, j_ok, EV_OK, k, 0] += mass * p_ok
            f.ring[c, j_ok, EV_OK, k, 1] += moment * p_ok
            if end_user:
                first = fate_bin(f, mass, moment)
                before = t_s - moment / mass
                limit = timeout - wait - d_ok  # inf without a timeout
                start = before + wait + d_ok
                note_latency(f, c, k, mass * p_child, start, limit, slow, first, False)
                if first < f.gi[GI_CLIENT_LO]:
                    f.gi[GI_CLIENT_LO] = first
        if p_err > 0:
            f.ring[c, j_err, EV_ERROR, k, 0] += mass * p_err
            f.ring[c, j_err, EV_ERROR, k, 1] += moment * p_err
        if p_late > 0:
            # Without a timeout the mass can only be late with no servers: it waits for good.
            if finite:
                f.ring[c, j_late, EV_TIMEOUT, k, 0] += mass * p_late
                f.ring[c, j_late, EV_TIMEOUT, k, 1] += moment * p_late
    if provider:
        sp[SP_IN_FLIGHT] += admitted * own_s
        if child >= 0:
            j = ring_slot(f, slot, t_s + own_s)
            f.calls[child, j, 0] += admitted
            f.calls[child, j, 1] += admitted * (t_s + own_s)
        return
    # The work joins its tier's queue; `serve` starts it (and makes its call below).
    f.queued[c] += admitted
    sp[SP_QUEUE] += admitted
    sp[SP_STARTED] += admitted
    if wait > 0 and not math.isinf(wait):
        sp[SP_WAITED] += admitted
        sp[SP_WAIT_SUM] += admitted * wait
    if s == 0 and not math.isinf(wait):
        at = min(int((t_s + wait) / f.gf[GF_BIN_S]), f.gi[GI_N_BINS] - 1)
        call_s = d_all if child >= 0 and f.rw[c, RW_SYNC] != 0.0 else 0.0
        note_latency(f, c, 0, admitted, wait + call_s, math.inf, slow, at, True)
        if at < f.gi[GI_SERVER_LO]:
            f.gi[GI_SERVER_LO] = at


@compiled_inline
def holding_s(f, c):
    """How long row c's attempt holds a server of its tier: its own work, slowed by faults,
    and in a sync route its call below (that call's mean duration as it stands now)."""
    s = int(f.rw[c, RW_STATION])
    hold = f.sp[s, SP_MEAN_S] * f.sp[s, SP_SLOWDOWN]
    child = int(f.rw[c, RW_CHILD])
    if child >= 0 and f.rw[c, RW_SYNC] != 0.0:
        hold += f.sm[child, SM_D_ALL]
    return hold


@compiled_inline
def serve(f, s, slot, t_s):
    """Pool s starts queued attempts with its free server time in this slot, every row's
    queue in the same proportion (one FIFO); an attempt holds its server for
    `holding_s` as it stands when it starts, and makes its call below when its own work is
    done. Returns the servers busy in the slot; leaves the queued work (server-seconds) for
    the next arrivals' wait."""
    sp = f.sp[s]
    dt = f.gf[GF_DT]
    carried = sp[SP_CARRY]
    available = max(0.0, sp[SP_SERVERS] - carried) * dt
    n_rows = f.rw.shape[0]
    wanted = 0.0
    for c in range(n_rows):
        if int(f.rw[c, RW_STATION]) == s and f.queued[c] > 0:
            wanted += f.queued[c] * min(holding_s(f, c), dt)
    share = min(1.0, available / wanted) if wanted > 0 else 0.0
    used, backlog = 0.0, 0.0
    own_s = sp[SP_MEAN_S] * sp[SP_SLOWDOWN]
    for c in range(n_rows):
        if int(f.rw[c, RW_STATION]) != s or f.queued[c] <= 0:
            continue
        hold = holding_s(f, c)
        start = f.queued[c] * share
        f.queued[c] -= start
        if f.queued[c] < 1e-12:
            f.queued[c] = 0.0
        backlog += f.queued[c] * hold
        used += start * min(hold, dt)
        if hold > dt:
            # Held for hold / dt slots on average, this one included: freed after n of them
            # and, for the fraction `part` of the mass, one more (rounding the hold to whole
            # slots held a 1 s hold in 0.4 s slots for 1.2 s: a sixth less capacity).
            sp[SP_CARRY] += start
            n = min(int(hold / dt), f.gi[GI_RING] - 2)
            part = min(1.0, hold / dt - n)
            f.releases[s, (slot + n) % f.gi[GI_RING]] += start * (1.0 - part)
            f.releases[s, (slot + n + 1) % f.gi[GI_RING]] += start * part
        child = int(f.rw[c, RW_CHILD])
        if child >= 0 and start > 0:
            j = ring_slot(f, slot, t_s + own_s)
            f.calls[child, j, 0] += start
            f.calls[child, j, 1] += start * (t_s + own_s)
    sp[SP_QUEUE] = 0.0
    for c in range(n_rows):
        if int(f.rw[c, RW_STATION]) == s:
            sp[SP_QUEUE] += f.queued[c]
    sp[SP_BACKLOG_S] = backlog
    return min(sp[SP_SERVERS], carried + used / dt)


@compiled_inline
def due(f, c, slot, t_s, b):
    """What falls due for row c in this slot: successes, error answers, timeouts (which may
    be retried) and the retries whose backoff ends, which join this slot's attempts."""
    j = slot % f.gi[GI_RING]
    tries = f.offered.shape[1]
    end_user = f.rw[c, RW_END_USER] != 0.0
    for k in range(tries):
        ev = f.ring[c, j]
        mass, moment = ev[EV_OK, k, 0], ev[EV_OK, k, 1]
        if mass > 0:
            f.counts[c, C_SUCCEEDED, b] += mass
            if end_user:
                f.counts[c, C_FRESH_OK, fate_bin(f, mass, moment)] += mass
                lo = fate_bin(f, mass, moment)
                if lo < f.gi[GI_CLIENT_LO]:
                    f.gi[GI_CLIENT_LO] = lo
            if f.rw[c, RW_HAS_BUDGET] != 0.0:
                earned = f.rw[c, RW_TOKENS] + f.rw[c, RW_EARN] * mass
                f.rw[c, RW_TOKENS] = min(f.rw[c, RW_BURST], earned)
        mass, moment = ev[EV_ERROR, k, 0], ev[EV_ERROR, k, 1]
        if mass > 0:
            f.counts[c, C_REJECTED, b] += mass
            fail_tries(f, c, k, mass, moment, t_s, slot, b)
        mass, moment = ev[EV_TIMEOUT, k, 0], ev[EV_TIMEOUT, k, 1]
        if mass > 0:
            f.counts[c, C_TIMED_OUT, b] += mass
            fail_tries(f, c, k, mass, moment, t_s, slot, b)
        mass, moment = ev[EV_RETRY, k, 0], ev[EV_RETRY, k, 1]
        if mass > 0:
            f.counts[c, C_RETRIES, b] += mass
            f.offered[c, k, 0] += mass
            f.offered[c, k, 1] += moment
        for kind in range(N_EVK):
            ev[kind, k, 0] = 0.0
            ev[kind, k, 1] = 0.0


@compiled
def advance_slots(f, end_slot):
    """Step slots from `gi[GI_SLOT]` to `end_slot` (exclusive), closing each bin's areas as
    its last slot ends; snapshots are taken at each bin's end."""
    dt = f.gf[GF_DT]
    ring = f.gi[GI_RING]
    n_rows = f.rw.shape[0]
    n_st = f.sp.shape[0]
    for slot in range(f.gi[GI_SLOT], end_slot):
        t0 = slot * dt
        t_s = t0 + dt / 2
        b = min(slot // f.gi[GI_SLOTS_PER_BIN], f.gi[GI_N_BINS] - 1)
        j = slot % ring
        for s in range(n_st):
            sp = f.sp[s]
            if sp[SP_PROVIDER] != 0:
                sp[SP_TOKENS] = min(sp[SP_BURST], sp[SP_TOKENS] + sp[SP_RATE] * dt)
            else:
                sp[SP_CARRY] = max(0.0, sp[SP_CARRY] - f.releases[s, j])
            f.releases[s, j] = 0.0
        for i in range(n_rows):
            c = f.order[i]
            due(f, c, slot, t_s, b)
            if f.rw[c, RW_END_USER] != 0.0:
                r = int(f.rw[c, RW_ROUTE])
                fresh = f.fresh_cum[r, slot + 1] - f.fresh_cum[r, slot]
                f.counts[c, C_FRESH, b] += fresh
                f.offered[c, 0, 0] += fresh
                f.offered[c, 0, 1] += fresh * t_s
            else:
                f.offered[c, 0, 0] += f.calls[c, j, 0]
                f.offered[c, 0, 1] += f.calls[c, j, 1]
            f.calls[c, j, 0] = f.calls[c, j, 1] = 0.0
        for s in range(n_st):
            room(f, s)
        for i in range(n_rows):
            admit(f, f.order[i], slot, t_s, b)
        for s in range(n_st):
            sp = f.sp[s]
            if sp[SP_PROVIDER] != 0:
                # Calls in flight (Little): the provider's latency times its admitted rate.
                busy = sp[SP_IN_FLIGHT] / dt
                sp[SP_IN_FLIGHT] = 0.0
                servers = 0.0
            else:
                servers = sp[SP_SERVERS]
                busy = serve(f, s, slot, t_s)
            sp[SP_BUSY] = busy
            sp[SP_BUSY_SECONDS] += busy * dt
            f.areas[s, AR_BUSY, b] += busy * dt
            f.areas[s, AR_QUEUE, b] += sp[SP_QUEUE] * dt
            f.areas[s, AR_SERVERS, b] += servers * dt
            f.areas[s, AR_CAPACITY, b] += servers / sp[SP_SLOWDOWN] * dt
            if (slot + 1) % f.gi[GI_SLOTS_PER_BIN] == 0 or slot + 1 == end_slot:
                f.snaps[s, SN_QUEUE, b] = sp[SP_QUEUE]
                f.snaps[s, SN_BUSY, b] = busy
                f.snaps[s, SN_SERVERS, b] = servers
        summarise_all(f)
        if (slot + 1) % f.gi[GI_SLOTS_PER_BIN] == 0:
            flush_all(f)
    flush_all(f)
    f.gi[GI_SLOT] = max(f.gi[GI_SLOT], end_slot)


@compiled_inline
def summarise_all(f):
    """`summarise` every row that has a caller (an end user's row has none to read it),
    callees before their callers (the order reversed)."""
    for i in range(f.order.shape[0] - 1, -1, -1):
        if f.rw[f.order[i], RW_END_USER] == 0.0:
            summarise(f, f.order[i])

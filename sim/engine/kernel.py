"""The request kernel: arrivals, stations (a pool and its queue) and clients, as compiled code.

`advance(k, until_s)` runs the request path of a `KernelState` up to `until_s` one *step* at a
time: a step is one event (an arrival, a completion, a client's timeout, a retry waking up) or
one start of a queued attempt on a free server. A step uses at most `STEP_MAX` of each resource
(random numbers of each stream, attempt rows, heap, queue and lane places, latency records),
so before any runs out `advance` returns `NEEDS_SERVICE` and the Python driver refills the
random blocks and arrival times or grows an array, then calls again: nothing is lost or drawn
twice. Events at equal times run in a fixed order (heap events by sequence number, then
timeouts, then arrivals), so a seed fixes the run, compiled or not.

Each event kind has its own function (`on_arrival`, `on_complete`, `on_timeout`, `on_retry`,
`start_queued`); `send` is what an attempt meets when it reaches a station.
"""

from __future__ import annotations

import math

from sim.engine.kernel_clients import (
    backoff_delay,
    budget_allows,
    budget_earn,
    budget_spend,
    throttle_accept,
    throttled,
)
from sim.engine.kernel_jit import compiled, compiled_inline
from sim.engine.kernel_state import (
    A_BACKOFF_S,
    A_CLIENT,
    A_DEADLINE_T,
    A_FIRST_T,
    A_FRESH_BIN,
    A_SENT_T,
    A_STATE,
    A_TRIES,
    C_ATTEMPTS,
    C_DROPPED,
    C_FRESH,
    C_FRESH_FAILED,
    C_FRESH_OK,
    C_REJECTED,
    C_RETRIES,
    C_SUCCEEDED,
    C_THROTTLED,
    C_TIMED_OUT,
    CL_BASE_S,
    CL_HAS_BUDGET,
    CL_HAS_THROTTLE,
    CL_RETRIES,
    CL_STATION,
    CL_TIMEOUT_S,
    EV_COMPLETE,
    EV_RETRY,
    GONE,
    LAT_CLIENT,
    LAT_SERVER,
    LIVE,
    R_ARRIVAL,
    R_ERRORS,
    R_SERVICE,
    SF_NEXT_ARRIVAL,
    SF_NEXT_EDGE,
    SF_NOW,
    SF_UNIT,
    SI_BIN,
    SI_CELL,
    SI_EVENTS,
    SI_FREE_N,
    SI_HEAP_N,
    SI_LAT_CLIENT_N,
    SI_LAT_SERVER_N,
    SI_TIMEOUTS,
    ST_BUSY,
    ST_DROP_EXPIRED,
    ST_QLEN,
    ST_SERVERS,
    ST_STARTED,
    ST_WAITED,
    STEP_MAX,
    STF_ERROR_RATE,
    STF_QUEUE_LIMIT,
    STF_SLOWDOWN,
    STF_SOJOURN_S,
    STF_WAIT_SUM,
    WAITING,
)
from sim.engine.kernel_store import (
    arrival_after,
    close_bins,
    count_fate,
    draw,
    free_attempt,
    heap_pop,
    heap_push,
    lane_drop_head,
    lane_next_deadline,
    lane_push,
    new_attempt,
    queue_push,
    queue_take,
    record_latency,
    touch,
)

REACHED, NEEDS_SERVICE = 0, 1
SOURCE_HEAP, SOURCE_LANE, SOURCE_ARRIVAL = range(3)


# -- an attempt reaches its station --------------------------------------------------------
@compiled_inline
def send(k, a, now):
    """Attempt `a` leaves its client: throttled, failed fast, started, queued or rejected."""
    c = k.att_i[a, A_CLIENT]
    s = int(k.cl_f[c, CL_STATION])
    b = k.si[SI_BIN]
    if k.cl_f[c, CL_HAS_THROTTLE] != 0.0 and throttled(k, c, now):
        k.counts[s, C_THROTTLED, b] += 1
        count_fate(k.counts, k.si, s, C_FRESH_FAILED, k.att_i[a, A_FRESH_BIN])
        free_attempt(k.att_i, k.si, a)
        return
    k.counts[s, C_ATTEMPTS, b] += 1
    error_rate = k.st_f[s, STF_ERROR_RATE]
    if error_rate > 0.0 and draw(k.rand, k.rand_pos, R_ERRORS) < error_rate:
        reject(k, s, a, now)
        return
    k.att_i[a, A_STATE] = LIVE
    k.att_f[a, A_SENT_T] = now
    k.att_f[a, A_DEADLINE_T] = now + k.cl_f[c, CL_TIMEOUT_S]
    if k.st_i[s, ST_BUSY] < k.st_i[s, ST_SERVERS]:
        touch(k.st_i, k.st_f, s, now)
        k.st_i[s, ST_STARTED] += 1
        start(k, s, a, now)
    elif k.st_i[s, ST_QLEN] >= k.st_f[s, STF_QUEUE_LIMIT]:
        reject(k, s, a, now)
        return
    else:
        touch(k.st_i, k.st_f, s, now)
        queue_push(k.queue, k.st_i, s, a)
    if k.cl_f[c, CL_TIMEOUT_S] != math.inf:
        lane_push(k, c, a)


@compiled_inline
def reject(k, s, a, now):
    """The station refuses attempt `a` at once (error, full queue, shed): the client may retry."""
    k.counts[s, C_REJECTED, k.si[SI_BIN]] += 1
    retry_or_fail(k, a, now)
    free_attempt(k.att_i, k.si, a)


@compiled_inline
def start(k, s, a, now):
    """A server takes attempt `a`; its completion goes on the heap."""
    k.st_i[s, ST_BUSY] += 1
    service_s = draw(k.rand, k.rand_pos, R_SERVICE + s) * k.st_f[s, STF_SLOWDOWN]
    heap_push(k.heap_t, k.heap_i, k.si, now + service_s, EV_COMPLETE, a)


@compiled_inline
def retry_or_fail(k, a, now):
    """Attempt `a` failed its client: schedule a retry after backoff, or fail the request."""
    c = k.att_i[a, A_CLIENT]
    tries = k.att_i[a, A_TRIES]
    has_budget = k.cl_f[c, CL_HAS_BUDGET] != 0.0
    if tries >= k.cl_f[c, CL_RETRIES] or (has_budget and not budget_allows(k, c)):
        s = int(k.cl_f[c, CL_STATION])
        count_fate(k.counts, k.si, s, C_FRESH_FAILED, k.att_i[a, A_FRESH_BIN])
        return
    if has_budget:
        budget_spend(k, c)
    delay_s = backoff_delay(k, c, tries, k.att_f[a, A_BACKOFF_S])
    first_t, fresh_bin = k.att_f[a, A_FIRST_T], k.att_i[a, A_FRESH_BIN]
    retry = new_attempt(k.att_f, k.att_i, k.si, c, first_t, tries + 1, delay_s, fresh_bin)
    k.att_i[retry, A_STATE] = WAITING
    heap_push(k.heap_t, k.heap_i, k.si, now + delay_s, EV_RETRY, retry)


# -- events --------------------------------------------------------------------------------
@compiled
def next_arrival(k):
    """Draw the next fresh arrival's time into SF_NEXT_ARRIVAL (inf once the demand is spent)."""
    u = k.sf[SF_UNIT] + draw(k.rand, k.rand_pos, R_ARRIVAL)
    t, cell = arrival_after(k.grid_t, k.grid_low, k.grid_slope, k.grid_mass, k.si[SI_CELL], u)
    k.sf[SF_UNIT] = u
    k.si[SI_CELL] = cell
    # In order even where rounding in a cell's root would step back by an ulp.
    k.sf[SF_NEXT_ARRIVAL] = max(t, k.sf[SF_NEXT_ARRIVAL])


@compiled_inline
def on_arrival(k, c, now):
    """A fresh request: counted in the current bin, sent as its first attempt."""
    s = int(k.cl_f[c, CL_STATION])
    b = k.si[SI_BIN]
    k.counts[s, C_FRESH, b] += 1
    a = new_attempt(k.att_f, k.att_i, k.si, c, now, 0, k.cl_f[c, CL_BASE_S], b)
    send(k, a, now)


@compiled_inline
def on_retry(k, a, now):
    """A retry wakes from its backoff sleep and is sent."""
    c = k.att_i[a, A_CLIENT]
    k.counts[int(k.cl_f[c, CL_STATION]), C_RETRIES, k.si[SI_BIN]] += 1
    send(k, a, now)


@compiled_inline
def on_complete(k, a, now):
    """A server finishes attempt `a`: a success if its client still waits; the server frees."""
    c = k.att_i[a, A_CLIENT]
    s = int(k.cl_f[c, CL_STATION])
    b = k.si[SI_BIN]
    touch(k.st_i, k.st_f, s, now)
    lat = k.lat_code, k.lat_sum, k.lat_max, k.si
    record_latency(*lat, LAT_SERVER, now - k.att_f[a, A_SENT_T], b)
    if k.att_i[a, A_STATE] == LIVE:
        fresh_bin = k.att_i[a, A_FRESH_BIN]
        k.counts[s, C_SUCCEEDED, b] += 1
        count_fate(k.counts, k.si, s, C_FRESH_OK, fresh_bin)
        record_latency(*lat, LAT_CLIENT, now - k.att_f[a, A_FIRST_T], fresh_bin)
        if k.cl_f[c, CL_HAS_BUDGET] != 0.0:
            budget_earn(k, c)
        if k.cl_f[c, CL_HAS_THROTTLE] != 0.0:
            throttle_accept(k, c, now)
    k.st_i[s, ST_BUSY] -= 1
    free_attempt(k.att_i, k.si, a)


@compiled_inline
def on_timeout(k, c, now):
    """Client c's oldest live attempt times out; the work stays where it is (GONE)."""
    a = k.lane_id[c, k.lane_head[c]]
    lane_drop_head(k.lane_head, k.lane_len, k.lane_id.shape[1], c)
    k.att_i[a, A_STATE] = GONE
    k.si[SI_TIMEOUTS] += 1
    k.counts[int(k.cl_f[c, CL_STATION]), C_TIMED_OUT, k.si[SI_BIN]] += 1
    retry_or_fail(k, a, now)


@compiled_inline
def start_queued(k, s, now):
    """A free server at station s takes the next queued attempt, or skips or sheds it."""
    touch(k.st_i, k.st_f, s, now)
    a = queue_take(k.queue, k.st_i, k.st_f, s)
    b = k.si[SI_BIN]
    if k.att_i[a, A_STATE] == GONE and k.st_i[s, ST_DROP_EXPIRED] == 1:
        k.counts[s, C_DROPPED, b] += 1
        free_attempt(k.att_i, k.si, a)
        return
    wait_s = now - k.att_f[a, A_SENT_T]
    if wait_s > k.st_f[s, STF_SOJOURN_S]:
        if k.att_i[a, A_STATE] == LIVE:
            reject(k, s, a, now)
        else:
            k.counts[s, C_DROPPED, b] += 1
            free_attempt(k.att_i, k.si, a)
        return
    k.st_i[s, ST_STARTED] += 1
    if wait_s > 0.0:
        k.st_i[s, ST_WAITED] += 1
        k.st_f[s, STF_WAIT_SUM] += wait_s
    start(k, s, a, now)


# -- the loop ------------------------------------------------------------------------------
@compiled
def safe_steps(k):
    """How many steps can run before some block or array might run out."""
    room = k.si[SI_FREE_N]
    room = min(room, len(k.heap_t) - k.si[SI_HEAP_N])
    for s in range(len(k.st_i)):
        room = min(room, k.queue.shape[1] - k.st_i[s, ST_QLEN])
    for c in range(len(k.lane_len)):
        room = min(room, k.lane_id.shape[1] - k.lane_len[c])
    room = min(room, k.lat_code.shape[1] - max(k.si[SI_LAT_CLIENT_N], k.si[SI_LAT_SERVER_N]))
    for stream in range(len(k.rand_n)):
        room = min(room, k.rand_n[stream] - k.rand_pos[stream])
    return room // STEP_MAX


@compiled
def station_to_serve(st_i):
    """A station with a free server and a queue, or -1."""
    for s in range(len(st_i)):
        if st_i[s, ST_QLEN] > 0 and st_i[s, ST_BUSY] < st_i[s, ST_SERVERS]:
            return s
    return -1


@compiled_inline
def next_event(k):
    """(time, source, index) of the next event: the heap, a client's lane, or an arrival."""
    t, source, index = math.inf, SOURCE_HEAP, 0
    if k.si[SI_HEAP_N] > 0:
        t = k.heap_t[0]
    for c in range(len(k.cl_f)):
        deadline = lane_next_deadline(
            k.lane_id, k.lane_serial, k.lane_t, k.lane_head, k.lane_len, k.att_i, c
        )
        if deadline < t:
            t, source, index = deadline, SOURCE_LANE, c
    if k.sf[SF_NEXT_ARRIVAL] < t:
        t, source = k.sf[SF_NEXT_ARRIVAL], SOURCE_ARRIVAL
    return t, source, index


@compiled
def advance(k, until_s):
    """Run steps until the next event lies after `until_s` (REACHED) or the driver must refill
    or grow something (NEEDS_SERVICE); either way the state is whole and can resume."""
    steps = safe_steps(k)
    while True:
        if steps <= 0:
            steps = safe_steps(k)
            if steps <= 0:
                return NEEDS_SERVICE
        steps -= 1
        now = k.sf[SF_NOW]
        s = station_to_serve(k.st_i)
        if s >= 0:
            start_queued(k, s, now)
            continue
        t, source, index = next_event(k)
        if t > until_s:
            close_bins(k, until_s)
            k.sf[SF_NOW] = until_s
            return REACHED
        if t >= k.sf[SF_NEXT_EDGE]:
            close_bins(k, t)
        k.sf[SF_NOW] = t
        k.si[SI_EVENTS] += 1
        if source == SOURCE_ARRIVAL:
            on_arrival(k, 0, t)
            next_arrival(k)
        elif source == SOURCE_LANE:
            on_timeout(k, index, t)
        else:
            kind, a = heap_pop(k.heap_t, k.heap_i, k.si)
            if kind == EV_COMPLETE:
                on_complete(k, a, t)
            else:
                on_retry(k, a, t)

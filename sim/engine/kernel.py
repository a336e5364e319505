"""The request kernel: arrivals, stations (a pool and its queue, or a provider) and clients, as
compiled code.

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

A service graph is stations (tiers) and clients (the calls of each route: the end user's
towards the entry tier, then each tier's towards the next). When a server finishes an
attempt's own work and its route calls on, a child attempt goes to the next tier through that
call's client, with the caller's attempt as its parent: in sync mode the caller's server is
held until the call is answered, in async mode it is freed at once. `answer` walks back up:
a success answers the caller in turn; a call that fails for good (after its client's
retries) is the caller's error answer, which the caller's client may retry. An attempt whose
client has left (timed out) answers nobody, but still holds its server until its call comes
back: the abandoned work a slow dependency costs its callers. A provider has no queue: its
token bucket admits a call or refuses it at once (`C_LIMITED`).
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
    A_HOLDING,
    A_PARENT,
    A_SENT_T,
    A_STATE,
    A_TRIES,
    C_ATTEMPTS,
    C_DROPPED,
    C_FRESH,
    C_FRESH_FAILED,
    C_FRESH_OK,
    C_LIMITED,
    C_REJECTED,
    C_RETRIES,
    C_SUCCEEDED,
    C_THROTTLED,
    C_TIMED_OUT,
    CL_ASYNC,
    CL_BASE_S,
    CL_END_USER,
    CL_HAS_BUDGET,
    CL_HAS_THROTTLE,
    CL_NEXT,
    CL_RETRIES,
    CL_ROUTE,
    CL_STATION,
    CL_TIMEOUT_S,
    ENTRY_STATION,
    EV_COMPLETE,
    EV_RETRY,
    GONE,
    LAT_CLIENT,
    LAT_SERVER,
    LIVE,
    R_ARRIVAL,
    R_ERRORS,
    R_SERVICE,
    RO_CELL,
    RO_CLIENT,
    ROF_LATENCY_SUM,
    ROF_NEXT,
    ROF_UNIT,
    SF_NEXT_EDGE,
    SF_NOW,
    SI_BIN,
    SI_EVENTS,
    SI_FREE_N,
    SI_HEAP_N,
    SI_LAT_CLIENT_N,
    SI_LAT_SERVER_N,
    SI_ROUTE_LATENCY,
    SI_TIMEOUTS,
    ST_BUSY,
    ST_DROP_EXPIRED,
    ST_PROVIDER,
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
    UNFILLED,
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
    latency_bucket,
    new_attempt,
    provider_admits,
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
    """Attempt `a` leaves its client: throttled, failed fast, started, queued or rejected (at a
    provider: admitted by its rate limit and started, or limited)."""
    c = k.att_i[a, A_CLIENT]
    s = int(k.cl_f[c, CL_STATION])
    b = k.si[SI_BIN]
    if k.cl_f[c, CL_HAS_THROTTLE] != 0.0 and throttled(k, c, now):
        # Refused by the client itself: no retry, the call fails at once.
        k.counts[c, C_THROTTLED, b] += 1
        if k.cl_f[c, CL_END_USER] != 0.0:
            count_fate(k.counts, k.si, c, C_FRESH_FAILED, k.att_i[a, A_FRESH_BIN])
        parent = k.att_i[a, A_PARENT]
        free_attempt(k.att_i, k.si, a)
        if parent >= 0:
            answer(k, parent, False, now)
        return
    k.counts[c, C_ATTEMPTS, b] += 1
    # One place refuses (each inlined copy of `reject` costs compile time).
    refused = -1
    error_rate = k.st_f[s, STF_ERROR_RATE]
    if error_rate > 0.0 and draw(k.rand, k.rand_pos, R_ERRORS) < error_rate:
        refused = C_REJECTED
    elif k.st_i[s, ST_PROVIDER] == 1 and not provider_admits(k.st_f, s, now):
        refused = C_LIMITED
    elif k.st_i[s, ST_BUSY] >= k.st_i[s, ST_SERVERS] and (
        k.st_i[s, ST_QLEN] >= k.st_f[s, STF_QUEUE_LIMIT]
    ):
        refused = C_REJECTED
    if refused >= 0:
        reject(k, c, a, now, refused)
        return
    k.att_i[a, A_STATE] = LIVE
    k.att_f[a, A_SENT_T] = now
    k.att_f[a, A_DEADLINE_T] = now + k.cl_f[c, CL_TIMEOUT_S]
    touch(k.st_i, k.st_f, s, now)
    if k.st_i[s, ST_BUSY] < k.st_i[s, ST_SERVERS]:
        k.st_i[s, ST_STARTED] += 1
        start(k, s, a, now)
    else:
        queue_push(k.queue, k.st_i, s, a)
    if k.cl_f[c, CL_TIMEOUT_S] != math.inf:
        lane_push(k, c, a)


@compiled_inline
def reject(k, c, a, now, counter):
    """Client c's attempt `a` is refused at once (error, full queue, shed, a provider's rate
    limit): counted under `counter`; the client may retry."""
    k.counts[c, counter, k.si[SI_BIN]] += 1
    fail_call(k, a, now)


@compiled_inline
def fail_call(k, a, now):
    """Attempt `a` (not in service, not in a queue) has failed its client: a retry, or the
    call's final failure, which fails the caller's attempt in turn; `a` is freed."""
    parent = k.att_i[a, A_PARENT]
    final = not retry_or_fail(k, a, now)
    free_attempt(k.att_i, k.si, a)
    if final and parent >= 0:
        answer(k, parent, False, now)


@compiled_inline
def start(k, s, a, now):
    """A server takes attempt `a`; its completion goes on the heap."""
    k.st_i[s, ST_BUSY] += 1
    k.att_i[a, A_HOLDING] = 1
    service_s = draw(k.rand, k.rand_pos, R_SERVICE + s) * k.st_f[s, STF_SLOWDOWN]
    heap_push(k.heap_t, k.heap_i, k.si, now + service_s, EV_COMPLETE, a)


@compiled_inline
def release(k, a, now):
    """Attempt `a` gives back the server it holds, if it holds one. At the entry tier that
    ends its time in system (the service's server latency, abandoned work included): its own
    work, and in a sync route the wait on its calls."""
    if k.att_i[a, A_HOLDING] == 1:
        s = int(k.cl_f[k.att_i[a, A_CLIENT], CL_STATION])
        if s == ENTRY_STATION:
            lat = k.lat_code, k.lat_sum, k.lat_max, k.si
            record_latency(*lat, LAT_SERVER, now - k.att_f[a, A_SENT_T], k.si[SI_BIN])
        touch(k.st_i, k.st_f, s, now)
        k.st_i[s, ST_BUSY] -= 1
        k.att_i[a, A_HOLDING] = 0


@compiled_inline
def retry_or_fail(k, a, now):
    """Attempt `a` failed its client: schedule a retry after backoff (True), or fail the call
    (False; an end user's request is counted failed)."""
    c = k.att_i[a, A_CLIENT]
    tries = k.att_i[a, A_TRIES]
    has_budget = k.cl_f[c, CL_HAS_BUDGET] != 0.0
    if tries >= k.cl_f[c, CL_RETRIES] or (has_budget and not budget_allows(k, c)):
        if k.cl_f[c, CL_END_USER] != 0.0:
            count_fate(k.counts, k.si, c, C_FRESH_FAILED, k.att_i[a, A_FRESH_BIN])
        return False
    if has_budget:
        budget_spend(k, c)
    delay_s = backoff_delay(k, c, tries, k.att_f[a, A_BACKOFF_S])
    first_t, fresh_bin = k.att_f[a, A_FIRST_T], k.att_i[a, A_FRESH_BIN]
    parent = k.att_i[a, A_PARENT]
    retry = new_attempt(k.att_f, k.att_i, k.si, c, first_t, tries + 1, delay_s, fresh_bin, parent)
    k.att_i[retry, A_STATE] = WAITING
    heap_push(k.heap_t, k.heap_i, k.si, now + delay_s, EV_RETRY, retry)
    return True


@compiled_inline
def answer(k, a, ok, now):
    """Attempt `a` has its answer: its own work and its calls succeeded (ok), or a call failed
    for good. It releases its server; if its client still waits, a success is counted (and
    answers the caller in turn) or the failure is the station's error answer, which the
    client may retry. Walks up the chain of callers, one level at a time."""
    while a >= 0:
        c = k.att_i[a, A_CLIENT]
        release(k, a, now)
        parent = k.att_i[a, A_PARENT]
        if k.att_i[a, A_STATE] != LIVE:  # its client left (timed out): nobody to answer
            free_attempt(k.att_i, k.si, a)
            return
        b = k.si[SI_BIN]
        if not ok:
            k.counts[c, C_REJECTED, b] += 1
            final = not retry_or_fail(k, a, now)
            free_attempt(k.att_i, k.si, a)
            if not final:
                return
            a = parent
            continue
        k.counts[c, C_SUCCEEDED, b] += 1
        if k.cl_f[c, CL_END_USER] != 0.0:
            fresh_bin = k.att_i[a, A_FRESH_BIN]
            count_fate(k.counts, k.si, c, C_FRESH_OK, fresh_bin)
            lat = k.lat_code, k.lat_sum, k.lat_max, k.si
            latency_s = now - k.att_f[a, A_FIRST_T]
            record_latency(*lat, LAT_CLIENT, latency_s, fresh_bin)
            if k.si[SI_ROUTE_LATENCY] != 0:
                r = int(k.cl_f[c, CL_ROUTE])
                k.ro_hist[r, latency_bucket(latency_s)] += 1
                k.ro_f[r, ROF_LATENCY_SUM] += latency_s
        if k.cl_f[c, CL_HAS_BUDGET] != 0.0:
            budget_earn(k, c)
        if k.cl_f[c, CL_HAS_THROTTLE] != 0.0:
            throttle_accept(k, c, now)
        free_attempt(k.att_i, k.si, a)
        a = parent


# -- events --------------------------------------------------------------------------------
@compiled_inline
def next_arrival(k, r):
    """Draw route r's next fresh arrival time into ROF_NEXT (inf once its demand is spent)."""
    u = k.ro_f[r, ROF_UNIT] + draw(k.rand, k.rand_pos, R_ARRIVAL)
    grid = k.grid_t, k.grid_low, k.grid_slope, k.grid_mass
    t, cell = arrival_after(*grid, r, k.ro_i[r, RO_CELL], u)
    k.ro_f[r, ROF_UNIT] = u
    k.ro_i[r, RO_CELL] = cell
    # In order even where rounding in a cell's root would step back by an ulp.
    k.ro_f[r, ROF_NEXT] = max(t, k.ro_f[r, ROF_NEXT])


# The handlers of arrivals, retries and completions return the attempt to send next (or -1):
# the loop sends it, so `send` is inlined in one place only.
@compiled_inline
def on_arrival(k, r, now):
    """A fresh request of route r: counted in the current bin; its first attempt."""
    c = k.ro_i[r, RO_CLIENT]
    b = k.si[SI_BIN]
    k.counts[c, C_FRESH, b] += 1
    return new_attempt(k.att_f, k.att_i, k.si, c, now, 0, k.cl_f[c, CL_BASE_S], b, -1)


@compiled_inline
def on_retry(k, a, now):
    """A retry wakes from its backoff sleep."""
    c = k.att_i[a, A_CLIENT]
    k.counts[c, C_RETRIES, k.si[SI_BIN]] += 1
    return a


@compiled_inline
def on_complete(k, a, now):
    """A server finishes attempt `a`'s own work: the station's next call on the route (its
    server held for a sync call, freed for an async one), or its answer."""
    c = k.att_i[a, A_CLIENT]
    callee = int(k.cl_f[c, CL_NEXT])
    if callee < 0:
        answer(k, a, True, now)
        return -1
    if k.cl_f[c, CL_ASYNC] != 0.0:
        release(k, a, now)
    base_s, fresh_bin = k.cl_f[callee, CL_BASE_S], k.att_i[a, A_FRESH_BIN]
    return new_attempt(k.att_f, k.att_i, k.si, callee, now, 0, base_s, fresh_bin, a)


@compiled_inline
def on_timeout(k, c, now):
    """Client c's oldest live attempt times out; the work stays where it is (GONE), and a
    failed call fails its caller's attempt."""
    a = k.lane_id[c, k.lane_head[c]]
    lane_drop_head(k.lane_head, k.lane_len, k.lane_id.shape[1], c)
    k.att_i[a, A_STATE] = GONE
    k.si[SI_TIMEOUTS] += 1
    k.counts[c, C_TIMED_OUT, k.si[SI_BIN]] += 1
    parent = k.att_i[a, A_PARENT]
    if not retry_or_fail(k, a, now) and parent >= 0:
        answer(k, parent, False, now)


@compiled_inline
def start_queued(k, s, now):
    """A free server at station s takes the next queued attempt, or skips or sheds it."""
    touch(k.st_i, k.st_f, s, now)
    a = queue_take(k.queue, k.st_i, k.st_f, s)
    c = k.att_i[a, A_CLIENT]
    b = k.si[SI_BIN]
    if k.att_i[a, A_STATE] == GONE and k.st_i[s, ST_DROP_EXPIRED] == 1:
        k.counts[c, C_DROPPED, b] += 1
        free_attempt(k.att_i, k.si, a)
        return
    wait_s = now - k.att_f[a, A_SENT_T]
    if wait_s > k.st_f[s, STF_SOJOURN_S]:
        if k.att_i[a, A_STATE] == LIVE:
            reject(k, c, a, now, C_REJECTED)
        else:
            k.counts[c, C_DROPPED, b] += 1
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
        # A stream left unfilled counts as a block of its row's length: a draw from it by
        # mistake stays inside the array, and the driver sees it.
        n = k.rand_n[stream] if k.rand_n[stream] != UNFILLED else k.rand.shape[1]
        room = min(room, n - k.rand_pos[stream])
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
    for r in range(len(k.ro_f)):
        if k.ro_f[r, ROF_NEXT] < t:
            t, source, index = k.ro_f[r, ROF_NEXT], SOURCE_ARRIVAL, r
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
        outgoing = -1
        if source == SOURCE_ARRIVAL:
            outgoing = on_arrival(k, index, t)
            next_arrival(k, index)
        elif source == SOURCE_LANE:
            on_timeout(k, index, t)
        else:
            kind, a = heap_pop(k.heap_t, k.heap_i, k.si)
            if kind == EV_COMPLETE:
                outgoing = on_complete(k, a, t)
            else:
                outgoing = on_retry(k, a, t)
        if outgoing >= 0:
            send(k, outgoing, t)

"""The kernel's data structures as compiled functions: random blocks, time integrals and bins,
the attempt table and its free list, the event heap, ring-buffer queues and timeout lanes.

Every function works on a `KernelState` (arrays laid out in `kernel_state.py`) and plain
scalars, so numba compiles it (`@njit(cache=True)`); with `OUTAGE_SIM_JIT=0`, or without
numba, the very same code runs as ordinary Python: slower, identical results.
"""

from __future__ import annotations

import math
import os

from sim.engine.kernel_state import (
    A_BACKOFF_S,
    A_CLIENT,
    A_DEADLINE_T,
    A_FIRST_T,
    A_FRESH_BIN,
    A_NEXT,
    A_SERIAL,
    A_STATE,
    A_TRIES,
    AR_BUSY,
    AR_CAPACITY,
    AR_QUEUE,
    AR_SERVERS,
    FREE,
    H_ITEM,
    H_KIND,
    H_SEQ,
    LAT_CLIENT,
    LIVE,
    SF_BIN_S,
    SF_NEXT_EDGE,
    SI_BIN,
    SI_CLOSED,
    SI_DIRTY_LO,
    SI_FREE,
    SI_FREE_N,
    SI_HEAP_N,
    SI_LAT_CLIENT_N,
    SI_LAT_SERVER_N,
    SI_N_BINS,
    SI_SEQ,
    SI_SERIAL,
    SN_BUSY,
    SN_QUEUE,
    SN_SERVERS,
    ST_BUSY,
    ST_LIFO,
    ST_QHEAD,
    ST_QLEN,
    ST_SERVERS,
    STF_BUSY_ACC,
    STF_BUSY_CLOSED,
    STF_CAPACITY_ACC,
    STF_LAST_T,
    STF_LIFO_OVER,
    STF_QUEUE_ACC,
    STF_SERVER_ACC,
    STF_SLOWDOWN,
)

try:
    import numba
except ImportError:  # numba is optional: the same code then runs as plain Python
    numba = None

JIT = numba is not None and os.environ.get("OUTAGE_SIM_JIT", "1") != "0"
CACHE = os.environ.get("OUTAGE_SIM_JIT_CACHE", "1") != "0"


def compiled(function):
    """`function` compiled by numba (cached on disk), or unchanged when the JIT is off.

    Inlined where it is called: a compiled call that is not inlined costs about 150 ns (the
    state's arrays are reference-counted on the way in and out), several times the work of
    most of these functions.
    """
    return numba.njit(cache=CACHE, _nrt=False)(function) if JIT else function


# -- small pieces --------------------------------------------------------------------------
@compiled
def draw(k, stream):
    """The next number of a random stream's block."""
    pos = k.rand_pos[stream]
    k.rand_pos[stream] = pos + 1
    return k.rand[stream, pos]


@compiled
def touch(k, s, now):
    """Bring station s's time integrals up to `now` (before any change of its state)."""
    dt = now - k.st_f[s, STF_LAST_T]
    if dt > 0.0:
        busy, servers = k.st_i[s, ST_BUSY], k.st_i[s, ST_SERVERS]
        k.st_f[s, STF_BUSY_ACC] += busy * dt
        k.st_f[s, STF_QUEUE_ACC] += k.st_i[s, ST_QLEN] * dt
        k.st_f[s, STF_SERVER_ACC] += servers * dt
        k.st_f[s, STF_CAPACITY_ACC] += servers / k.st_f[s, STF_SLOWDOWN] * dt
        k.st_f[s, STF_LAST_T] = now


@compiled
def close_bins(k, now):
    """Close every bin that ended at or before `now`, snapshotting each station at its end."""
    while now >= k.sf[SF_NEXT_EDGE] and k.si[SI_CLOSED] < k.si[SI_N_BINS]:
        close_bin(k, k.sf[SF_NEXT_EDGE])
        k.sf[SF_NEXT_EDGE] += k.sf[SF_BIN_S]


@compiled
def close_bin(k, edge):
    """Close the current bin at time `edge` (the run's end for a last, partial bin)."""
    b = k.si[SI_BIN]
    for s in range(len(k.st_i)):
        touch(k, s, edge)
        busy_area = k.st_f[s, STF_BUSY_ACC]
        k.areas[s, AR_BUSY, b] = busy_area
        k.areas[s, AR_QUEUE, b] = k.st_f[s, STF_QUEUE_ACC]
        k.areas[s, AR_SERVERS, b] = k.st_f[s, STF_SERVER_ACC]
        k.areas[s, AR_CAPACITY, b] = k.st_f[s, STF_CAPACITY_ACC]
        k.st_f[s, STF_BUSY_CLOSED] += busy_area
        k.st_f[s, STF_BUSY_ACC] = 0.0
        k.st_f[s, STF_QUEUE_ACC] = 0.0
        k.st_f[s, STF_SERVER_ACC] = 0.0
        k.st_f[s, STF_CAPACITY_ACC] = 0.0
        k.snaps[s, SN_QUEUE, b] = k.st_i[s, ST_QLEN]
        k.snaps[s, SN_BUSY, b] = k.st_i[s, ST_BUSY]
        k.snaps[s, SN_SERVERS, b] = k.st_i[s, ST_SERVERS]
    k.si[SI_CLOSED] = b + 1
    k.si[SI_BIN] = min(b + 1, k.si[SI_N_BINS] - 1)


@compiled
def count_fate(k, s, counter, fresh_bin):
    """Count a request's final fate in its first-arrival bin (which may be closed already)."""
    k.counts[s, counter, fresh_bin] += 1
    if fresh_bin < k.si[SI_DIRTY_LO]:
        k.si[SI_DIRTY_LO] = fresh_bin


@compiled
def record_latency(k, row, value_s, b):
    n_index = SI_LAT_CLIENT_N if row == LAT_CLIENT else SI_LAT_SERVER_N
    n = k.si[n_index]
    k.lat_v[row, n] = value_s
    k.lat_b[row, n] = b
    k.si[n_index] = n + 1


# -- the attempt table ---------------------------------------------------------------------
@compiled
def new_attempt(k, client, first_t, tries, backoff_s, fresh_bin):
    """A row of the attempt table, from the free list."""
    a = k.si[SI_FREE]
    k.si[SI_FREE] = k.att_i[a, A_NEXT]
    k.si[SI_FREE_N] -= 1
    k.si[SI_SERIAL] += 1
    k.att_i[a, A_SERIAL] = k.si[SI_SERIAL]
    k.att_i[a, A_CLIENT] = client
    k.att_i[a, A_TRIES] = tries
    k.att_i[a, A_FRESH_BIN] = fresh_bin
    k.att_f[a, A_FIRST_T] = first_t
    k.att_f[a, A_BACKOFF_S] = backoff_s
    return a


@compiled
def free_attempt(k, a):
    k.att_i[a, A_STATE] = FREE
    k.att_i[a, A_NEXT] = k.si[SI_FREE]
    k.si[SI_FREE] = a
    k.si[SI_FREE_N] += 1


# -- the event heap (a binary heap ordered by time, then sequence number) ------------------
@compiled
def _before(k, i, j):
    ti, tj = k.heap_t[i], k.heap_t[j]
    return ti < tj or (ti == tj and k.heap_i[i, H_SEQ] < k.heap_i[j, H_SEQ])


@compiled
def _swap(k, i, j):
    k.heap_t[i], k.heap_t[j] = k.heap_t[j], k.heap_t[i]
    for f in range(3):
        k.heap_i[i, f], k.heap_i[j, f] = k.heap_i[j, f], k.heap_i[i, f]


@compiled
def heap_push(k, t, kind, item):
    i = k.si[SI_HEAP_N]
    k.si[SI_HEAP_N] = i + 1
    k.si[SI_SEQ] += 1
    k.heap_t[i] = t
    k.heap_i[i, H_SEQ] = k.si[SI_SEQ]
    k.heap_i[i, H_KIND] = kind
    k.heap_i[i, H_ITEM] = item
    while i > 0:
        parent = (i - 1) >> 1
        if not _before(k, i, parent):
            break
        _swap(k, i, parent)
        i = parent


@compiled
def heap_pop(k):
    """Remove the earliest event; return (kind, item)."""
    kind, item = k.heap_i[0, H_KIND], k.heap_i[0, H_ITEM]
    n = k.si[SI_HEAP_N] - 1
    k.si[SI_HEAP_N] = n
    if n > 0:
        k.heap_t[0] = k.heap_t[n]
        for f in range(3):
            k.heap_i[0, f] = k.heap_i[n, f]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and _before(k, child + 1, child):
                child += 1
            if not _before(k, child, i):
                break
            _swap(k, i, child)
            i = child
    return kind, item


# -- queues and timeout lanes (ring buffers) -----------------------------------------------
@compiled
def queue_push(k, s, a):
    cap = k.queue.shape[1]
    k.queue[s, (k.st_i[s, ST_QHEAD] + k.st_i[s, ST_QLEN]) % cap] = a
    k.st_i[s, ST_QLEN] += 1


@compiled
def queue_take(k, s):
    """The next attempt to serve: oldest (fifo), newest (lifo, or beyond `lifo_over`)."""
    cap, n = k.queue.shape[1], k.st_i[s, ST_QLEN]
    k.st_i[s, ST_QLEN] = n - 1
    if k.st_i[s, ST_LIFO] == 1 or n > k.st_f[s, STF_LIFO_OVER]:
        return k.queue[s, (k.st_i[s, ST_QHEAD] + n - 1) % cap]
    head = k.st_i[s, ST_QHEAD]
    k.st_i[s, ST_QHEAD] = (head + 1) % cap
    return k.queue[s, head]


@compiled
def lane_push(k, c, a):
    cap = k.lane_id.shape[1]
    i = (k.lane_head[c] + k.lane_len[c]) % cap
    k.lane_id[c, i] = a
    k.lane_serial[c, i] = k.att_i[a, A_SERIAL]
    k.lane_t[c, i] = k.att_f[a, A_DEADLINE_T]
    k.lane_len[c] += 1


@compiled
def lane_drop_head(k, c):
    k.lane_head[c] = (k.lane_head[c] + 1) % k.lane_id.shape[1]
    k.lane_len[c] -= 1


@compiled
def lane_next_deadline(k, c):
    """The deadline of the client's next live attempt (settled ones are dropped on the way)."""
    while k.lane_len[c] > 0:
        i = k.lane_head[c]
        a = k.lane_id[c, i]
        if k.att_i[a, A_SERIAL] == k.lane_serial[c, i] and k.att_i[a, A_STATE] == LIVE:
            return k.lane_t[c, i]
        lane_drop_head(k, c)
    return math.inf

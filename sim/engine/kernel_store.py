"""The kernel's data structures as compiled functions: random blocks, time integrals and bins,
the attempt table and its free list, the event heap, ring-buffer queues and timeout lanes.

These are the leaves of the request path, called many times an event, so each takes only the
arrays it touches (of a `KernelState`, laid out in `kernel_state.py`), not the whole state: a
compiled call passes every field of every array it is given, and the state has 26 arrays.
Bins are closed rarely and take the whole state. Also here, compiled for the Python driver's
hand-overs to the Recorder: latency records counted into per-bin histograms, and the
histograms' percentiles.
"""

from __future__ import annotations

import math

import numpy as np

from sim.analysis import metrics
from sim.analysis.metrics import HIST_BUCKETS, HIST_EDGES, HIST_MIN_S, HIST_PER_DECADE
from sim.engine.kernel_jit import JIT, compiled
from sim.engine.kernel_state import (
    A_BACKOFF_S,
    A_CLIENT,
    A_DEADLINE_T,
    A_FIRST_T,
    A_FRESH_BIN,
    A_HOLDING,
    A_NEXT,
    A_PARENT,
    A_SERIAL,
    A_STATE,
    A_TRIES,
    AR_BUSY,
    AR_CAPACITY,
    AR_QUEUE,
    AR_SERVERS,
    FREE,
    H_EVENT,
    H_SEQ,
    LAT_CLIENT,
    LIVE,
    N_EV,
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
    STF_BURST,
    STF_BUSY_ACC,
    STF_BUSY_CLOSED,
    STF_CAPACITY_ACC,
    STF_LAST_T,
    STF_LIFO_OVER,
    STF_QUEUE_ACC,
    STF_RATE,
    STF_SERVER_ACC,
    STF_SLOWDOWN,
    STF_TOKENS,
    STF_TOKENS_T,
)

LOG10_HIST_MIN = math.log10(HIST_MIN_S)
LOG10_2 = math.log10(2.0)


# -- small pieces --------------------------------------------------------------------------
@compiled
def draw(rand, rand_pos, stream):
    """The next number of a random stream's block."""
    pos = rand_pos[stream]
    rand_pos[stream] = pos + 1
    return rand[stream, pos]


@compiled
def arrival_after(grid_t, grid_low, grid_slope, grid_mass, r, cell, u):
    """(time, cell) of route r's arrival that is the image of point `u` of a unit-rate Poisson
    process under the inverse of its mean count (rows of `Demand.unit_grid`), searching cells
    from `cell` on; time inf past the demand's end. The mean count is quadratic in a cell, so
    its inverse is the root of low·x + slope·x² = y, written to stay exact as slope → 0."""
    n = grid_low.shape[1]
    while cell < n and u >= grid_mass[r, cell + 1]:
        cell += 1
    if cell >= n:
        return math.inf, cell
    y = u - grid_mass[r, cell]
    low, slope = grid_low[r, cell], grid_slope[r, cell]
    width = grid_t[cell + 1] - grid_t[cell]
    x = 0.0
    if y > 0.0:
        denominator = low + math.sqrt(max(low * low + 4.0 * slope * y, 0.0))
        x = 2.0 * y / denominator if denominator > 0.0 else width
    return grid_t[cell] + min(x, width), cell


@compiled
def provider_admits(st_f, s, now):
    """Whether provider s's token bucket (STF_RATE a second, at most STF_BURST) holds a token
    for one more call at `now`; if so the call takes it."""
    tokens = st_f[s, STF_TOKENS] + (now - st_f[s, STF_TOKENS_T]) * st_f[s, STF_RATE]
    tokens = min(tokens, st_f[s, STF_BURST])
    st_f[s, STF_TOKENS_T] = now
    if tokens >= 1.0:
        st_f[s, STF_TOKENS] = tokens - 1.0
        return True
    st_f[s, STF_TOKENS] = tokens
    return False


@compiled
def touch(st_i, st_f, s, now):
    """Bring station s's time integrals up to `now` (before any change of its state)."""
    dt = now - st_f[s, STF_LAST_T]
    if dt > 0.0:
        busy, servers = st_i[s, ST_BUSY], st_i[s, ST_SERVERS]
        st_f[s, STF_BUSY_ACC] += busy * dt
        st_f[s, STF_QUEUE_ACC] += st_i[s, ST_QLEN] * dt
        st_f[s, STF_SERVER_ACC] += servers * dt
        st_f[s, STF_CAPACITY_ACC] += servers / st_f[s, STF_SLOWDOWN] * dt
        st_f[s, STF_LAST_T] = now


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
    st_i, st_f = k.st_i, k.st_f
    for s in range(len(st_i)):
        touch(st_i, st_f, s, edge)
        busy_area = st_f[s, STF_BUSY_ACC]
        k.areas[s, AR_BUSY, b] = busy_area
        k.areas[s, AR_QUEUE, b] = st_f[s, STF_QUEUE_ACC]
        k.areas[s, AR_SERVERS, b] = st_f[s, STF_SERVER_ACC]
        k.areas[s, AR_CAPACITY, b] = st_f[s, STF_CAPACITY_ACC]
        st_f[s, STF_BUSY_CLOSED] += busy_area
        st_f[s, STF_BUSY_ACC] = 0.0
        st_f[s, STF_QUEUE_ACC] = 0.0
        st_f[s, STF_SERVER_ACC] = 0.0
        st_f[s, STF_CAPACITY_ACC] = 0.0
        k.snaps[s, SN_QUEUE, b] = st_i[s, ST_QLEN]
        k.snaps[s, SN_BUSY, b] = st_i[s, ST_BUSY]
        k.snaps[s, SN_SERVERS, b] = st_i[s, ST_SERVERS]
    k.si[SI_CLOSED] = b + 1
    k.si[SI_BIN] = min(b + 1, k.si[SI_N_BINS] - 1)


@compiled
def count_fate(counts, si, c, counter, fresh_bin):
    """Count a request's final fate for client c in its first-arrival bin (which may be
    closed already)."""
    counts[c, counter, fresh_bin] += 1
    if fresh_bin < si[SI_DIRTY_LO]:
        si[SI_DIRTY_LO] = fresh_bin


@compiled
def latency_bucket(value_s):
    """The bucket of the Recorder's HIST_EDGES a latency falls in (out-of-range ones in the end
    buckets), without a logarithm: a guess from the float's exponent and mantissa (a chord of
    log2 over [0.5, 1), never more than 1.1 buckets below the true one), then a walk on the
    edges themselves, so the bucket is exact."""
    if value_s <= HIST_MIN_S:
        return 0
    mantissa, exponent = math.frexp(value_s)
    log10_guess = (exponent + 2.0 * (mantissa - 1.0)) * LOG10_2
    index = int((log10_guess - LOG10_HIST_MIN) * HIST_PER_DECADE) - 1
    index = min(max(index, 0), HIST_BUCKETS - 1)
    while index < HIST_BUCKETS - 1 and value_s >= HIST_EDGES[index + 1]:
        index += 1
    while index > 0 and value_s < HIST_EDGES[index]:
        index -= 1
    return index


@compiled
def record_latency(lat_code, lat_sum, lat_max, si, row, value_s, b):
    """One latency of bin b: its code (bin and bucket), and the bin's sum and maximum."""
    n_index = SI_LAT_CLIENT_N if row == LAT_CLIENT else SI_LAT_SERVER_N
    n = si[n_index]
    lat_code[row, n] = b * HIST_BUCKETS + latency_bucket(value_s)
    lat_sum[row, b] += value_s
    if value_s > lat_max[row, b]:
        lat_max[row, b] = value_s
    si[n_index] = n + 1


@compiled
def mark_bins(codes, low_bin, marks):
    """marks[b - low_bin] = 1 for each bin b that latency records `codes` fall in."""
    for i in range(len(codes)):
        marks[codes[i] // HIST_BUCKETS - low_bin] = 1


@compiled
def count_codes(codes, low_bin, row_of, counts):
    """Count latency records into per-bin histogram rows: a record of bin b and bucket j adds
    one to counts[row_of[b - low_bin], j] (numpy's bincount, without its temporaries and
    without a row for every bin between the records')."""
    for i in range(len(codes)):
        b, j = divmod(codes[i], HIST_BUCKETS)
        counts[row_of[b - low_bin], j] += 1.0


def percentile_rows(counts: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """The Recorder's `metrics.percentile_rows`, compiled: one walk along each row (numpy's
    passes over the whole array took about six times as long on 256 rows), the same bytes.
    Without numba, numpy's passes themselves (the walk as plain Python is slower still)."""
    if not JIT:
        return metrics.percentile_rows(counts, quantiles)
    if list(quantiles) != sorted(quantiles):
        raise ValueError(f"quantiles must ascend, got {quantiles}")
    counts = np.ascontiguousarray(counts, dtype=np.float64)
    out = np.empty((len(counts), len(quantiles)))
    percentiles_into(counts, np.asarray(quantiles, dtype=np.float64), HIST_EDGES, out)
    return out


@compiled
def percentiles_into(counts, quantiles, edges, out):
    """`percentile_rows` into `out`: for each quantile q, the first bucket whose running count
    reaches q · total, and inside it a geometric interpolation between its edges."""
    n_buckets = counts.shape[1]
    for row in range(counts.shape[0]):
        total = 0.0
        for j in range(n_buckets):
            total += counts[row, j]
        j, before = 0, 0.0
        for i in range(len(quantiles)):
            rank = quantiles[i] * total
            # The first bucket whose running count reaches the rank (the last at most).
            while j < n_buckets - 1:
                running = before + counts[row, j]
                if running >= rank:
                    break
                before = running
                j += 1
            inside = (rank - before) / counts[row, j] if counts[row, j] > 0 else 0.5
            inside = min(max(inside, 0.0), 1.0)
            low = edges[j]
            out[row, i] = low * (edges[j + 1] / low) ** inside if total > 0 else math.nan


# -- the attempt table ---------------------------------------------------------------------
@compiled
def new_attempt(att_f, att_i, si, client, first_t, tries, backoff_s, fresh_bin, parent):
    """A row of the attempt table, from the free list; `parent` is the caller's attempt that
    waits for this call (-1 for an end user's request)."""
    a = si[SI_FREE]
    si[SI_FREE] = att_i[a, A_NEXT]
    si[SI_FREE_N] -= 1
    si[SI_SERIAL] += 1
    att_i[a, A_SERIAL] = si[SI_SERIAL]
    att_i[a, A_CLIENT] = client
    att_i[a, A_TRIES] = tries
    att_i[a, A_FRESH_BIN] = fresh_bin
    att_i[a, A_PARENT] = parent
    att_i[a, A_HOLDING] = 0
    att_f[a, A_FIRST_T] = first_t
    att_f[a, A_BACKOFF_S] = backoff_s
    return a


@compiled
def free_attempt(att_i, si, a):
    att_i[a, A_STATE] = FREE
    att_i[a, A_NEXT] = si[SI_FREE]
    si[SI_FREE] = a
    si[SI_FREE_N] += 1


# -- the event heap (a binary heap ordered by time, then sequence number) ------------------
# Both sifts move a hole rather than swapping: each level costs one copy, not two.
@compiled
def heap_push(heap_t, heap_i, si, t, kind, item):
    i = si[SI_HEAP_N]
    si[SI_HEAP_N] = i + 1
    seq = si[SI_SEQ] + 1
    si[SI_SEQ] = seq
    while i > 0:
        parent = (i - 1) >> 1
        tp = heap_t[parent]
        if t > tp or (t == tp and seq > heap_i[parent, H_SEQ]):
            break
        heap_t[i] = tp
        heap_i[i, H_SEQ] = heap_i[parent, H_SEQ]
        heap_i[i, H_EVENT] = heap_i[parent, H_EVENT]
        i = parent
    heap_t[i] = t
    heap_i[i, H_SEQ] = seq
    heap_i[i, H_EVENT] = kind + N_EV * item


@compiled
def heap_pop(heap_t, heap_i, si):
    """Remove the earliest event; return (kind, item)."""
    event = heap_i[0, H_EVENT]
    n = si[SI_HEAP_N] - 1
    si[SI_HEAP_N] = n
    if n > 0:
        t, seq, last = heap_t[n], heap_i[n, H_SEQ], heap_i[n, H_EVENT]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            tc = heap_t[child]
            if child + 1 < n:
                # Which child is earlier is a coin toss: selected without a branch (bitwise
                # tests, a select), since a mispredicted branch per level costs more.
                tr = heap_t[child + 1]
                right = (tr < tc) | ((tr == tc) & (heap_i[child + 1, H_SEQ] < heap_i[child, H_SEQ]))
                child += right
                tc = min(tc, tr)
            if t < tc or (t == tc and seq < heap_i[child, H_SEQ]):
                break
            heap_t[i] = tc
            heap_i[i, H_SEQ] = heap_i[child, H_SEQ]
            heap_i[i, H_EVENT] = heap_i[child, H_EVENT]
            i = child
        heap_t[i] = t
        heap_i[i, H_SEQ] = seq
        heap_i[i, H_EVENT] = last
    return event % N_EV, event // N_EV


# -- queues and timeout lanes (ring buffers) -----------------------------------------------
@compiled
def _wrap(i, cap):
    """i mod cap for 0 <= i < 2·cap (a ring's head plus at most its length): a compare, not an
    integer division, which the event loop would pay several times per request."""
    return i - cap if i >= cap else i


@compiled
def queue_push(queue, st_i, s, a):
    cap = queue.shape[1]
    queue[s, _wrap(st_i[s, ST_QHEAD] + st_i[s, ST_QLEN], cap)] = a
    st_i[s, ST_QLEN] += 1


@compiled
def queue_take(queue, st_i, st_f, s):
    """The next attempt to serve: oldest (fifo), newest (lifo, or beyond `lifo_over`)."""
    cap, n = queue.shape[1], st_i[s, ST_QLEN]
    st_i[s, ST_QLEN] = n - 1
    if st_i[s, ST_LIFO] == 1 or n > st_f[s, STF_LIFO_OVER]:
        return queue[s, _wrap(st_i[s, ST_QHEAD] + n - 1, cap)]
    head = st_i[s, ST_QHEAD]
    st_i[s, ST_QHEAD] = _wrap(head + 1, cap)
    return queue[s, head]


@compiled
def lane_push(k, c, a):
    """Attempt `a` joins client c's timeout lane (deadlines in send order)."""
    cap = k.lane_id.shape[1]
    i = _wrap(k.lane_head[c] + k.lane_len[c], cap)
    k.lane_id[c, i] = a
    k.lane_serial[c, i] = k.att_i[a, A_SERIAL]
    k.lane_t[c, i] = k.att_f[a, A_DEADLINE_T]
    k.lane_len[c] += 1


@compiled
def lane_drop_head(lane_head, lane_len, cap, c):
    lane_head[c] = _wrap(lane_head[c] + 1, cap)
    lane_len[c] -= 1


@compiled
def lane_next_deadline(lane_id, lane_serial, lane_t, lane_head, lane_len, att_i, c):
    """The deadline of client c's next live attempt (settled ones are dropped on the way)."""
    cap = lane_id.shape[1]
    while lane_len[c] > 0:
        i = lane_head[c]
        a = lane_id[c, i]
        if att_i[a, A_SERIAL] == lane_serial[c, i] and att_i[a, A_STATE] == LIVE:
            return lane_t[c, i]
        lane_drop_head(lane_head, lane_len, cap, c)
    return math.inf

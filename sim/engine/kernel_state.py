"""The request kernel's state: typed numpy arrays with named index constants, and their allocation.

The kernel (`kernel.py`) is compiled numba code over plain arrays, so its state is not an
object but a `KernelState` named tuple of arrays, laid out here:

* scalars: `si` (int64) and `sf` (float64), indexed by `SI_*` and `SF_*`;
* stations (a pool of servers with its queue; today's scenario is one station, the service
  graph adds more): `st_i`/`st_f` rows indexed by `ST_*`/`STF_*`, and one ring-buffer queue
  of attempt ids per station in `queue`;
* clients (a caller's policy towards one station: timeout, retries, backoff, budget,
  throttling): `cl_f` rows indexed by `CL_*`, the throttle windows `th_req`/`th_acc`, and one
  timeout lane per client (`lane_*`): deadlines in send order, because a client's timeouts are
  all equal;
* the attempt table `att_f`/`att_i` (`A_*`), with a free list threaded through `A_NEXT`;
* the event heap `heap_t`/`heap_i` (`H_*`): completions and retries, ties broken by sequence
  number;
* random blocks `rand` (one row per stream, `R_*`; the service stream of station s is row
  `R_SERVICE + s`);
* the fresh demand's grid `grid_t` (cell starts) and per route `grid_low`, `grid_slope`,
  `grid_mass` (`Demand.unit_grid`): arrivals are drawn in the kernel by inverting the mean
  count, from the `R_ARRIVAL` stream of standard exponentials;
* routes `ro_i`/`ro_f` (`RO_*`, `ROF_*`): each route's arrivals and its entry client, and in a
  service graph `ro_hist`, each route's client latencies on the Recorder's histogram edges;
* per-bin results: `counts` (`C_*`) per client (a call edge: a station's figures are the sum
  over the clients that call it, the service's over the end users' clients), `areas`
  (`AR_*`) and `snaps` (`SN_*`) per station;
* latency records `lat_code` (`LAT_CLIENT` and `LAT_SERVER` rows): each record is its bin and
  its bucket of the Recorder's histogram edges in one number, bin · HIST_BUCKETS + bucket, so
  the Python driver folds a whole buffer into per-bin histograms with one `bincount`; the sum
  and the largest value of each bin's records since the last fold are in `lat_sum`/`lat_max`.

Arrays only ever grow (the driver reallocates them when the kernel asks); their dtypes and
dimensions never change, so the compiled kernel is reused.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from sim.analysis.metrics import COUNTERS, HIST_BUCKETS
from sim.engine.clients import THROTTLE_SLOTS

# -- scalars -------------------------------------------------------------------------------
SI_BIN, SI_N_BINS, SI_CLOSED, SI_HEAP_N, SI_SEQ, SI_FREE, SI_FREE_N, SI_SERIAL = range(8)
SI_EVENTS, SI_DIRTY_LO, SI_LAT_CLIENT_N, SI_LAT_SERVER_N, SI_TIMEOUTS = range(8, 13)
SI_ROUTE_LATENCY = 13  # 1: keep each route's client latency histogram too (a service graph)
N_SI = 14
SF_NOW, SF_NEXT_EDGE, SF_BIN_S = range(3)
N_SF = 3

# -- routes (a request class: its fresh demand and its first call) -------------------------
# RO_CLIENT: the client row of the route's entry call (the end user's client); RO_CELL: the
# grid cell of its next arrival. ROF_UNIT: the last point of the unit-rate process whose
# image is the route's arrivals; ROF_NEXT: its next arrival's time (inf once spent).
RO_CLIENT, RO_CELL = range(2)
N_RO = 2
ROF_UNIT, ROF_NEXT, ROF_LATENCY_SUM = range(3)
N_ROF = 3

# -- stations ------------------------------------------------------------------------------
ENTRY_STATION = 0  # the entry tier of the first route: the service as its users see it
ST_SERVERS, ST_BUSY, ST_QHEAD, ST_QLEN, ST_LIFO, ST_DROP_EXPIRED, ST_STARTED, ST_WAITED = range(8)
ST_PROVIDER = 8  # 1: an external provider (no queue, no pool of ours, a token bucket)
N_ST = 9
(
    STF_QUEUE_LIMIT,
    STF_LIFO_OVER,
    STF_SOJOURN_S,
    STF_SLOWDOWN,
    STF_ERROR_RATE,
    STF_LAST_T,
    STF_BUSY_ACC,
    STF_QUEUE_ACC,
    STF_SERVER_ACC,
    STF_CAPACITY_ACC,
    STF_WAIT_SUM,
    STF_BUSY_CLOSED,
    STF_RATE,
    STF_BURST,
    STF_TOKENS,
    STF_TOKENS_T,
) = range(16)
N_STF = 16
# A station's counters by kind of station: a provider's "servers" are calls in flight.
UNBOUNDED_SERVERS = 2**62

# -- clients -------------------------------------------------------------------------------
(
    CL_STATION,
    CL_TIMEOUT_S,
    CL_RETRIES,
    CL_JITTER,
    CL_BASE_S,
    CL_CAP_S,
    CL_MULTIPLIER,
    CL_HAS_BUDGET,
    CL_BUDGET_EARN,
    CL_BUDGET_COST,
    CL_BUDGET_BURST,
    CL_TOKENS,
    CL_HAS_THROTTLE,
    CL_THROTTLE_K,
    CL_SLOT_S,
    CL_SLOT,
    CL_SCALE,
    CL_NEXT,
    CL_ASYNC,
    CL_END_USER,
    CL_ROUTE,
) = range(21)
N_CL = 21
# CL_NEXT: the client row of the call the station makes next on this route, -1 when it is
# the route's last; CL_ASYNC: 1 when that call is async (the caller's server is freed when
# its own work is done); CL_END_USER: 1 for a route's entry call (the end user's client).

# -- attempts ------------------------------------------------------------------------------
A_SENT_T, A_FIRST_T, A_DEADLINE_T, A_BACKOFF_S = range(4)
N_AF = 4
A_TRIES, A_STATE, A_FRESH_BIN, A_CLIENT, A_NEXT, A_SERIAL, A_PARENT, A_HOLDING = range(8)
N_AI = 8
# A_PARENT: the caller's attempt waiting for this call (-1 for an end user's); A_HOLDING: 1
# while the attempt holds a server of its station (its own work, then a sync call).
# LIVE: its client waits. GONE: its client timed out (a server may still do the work).
# WAITING: a retry in its backoff sleep. FREE: on the free list.
FREE, LIVE, GONE, WAITING = range(4)

# -- events --------------------------------------------------------------------------------
# An event is its time (`heap_t`) and two integers: a sequence number that breaks ties, and its
# kind and item packed as kind + N_EV · item, so moving an event in the heap moves three numbers.
H_SEQ, H_EVENT = range(2)
N_H = 2
EV_COMPLETE, EV_RETRY = range(2)
N_EV = 2

# -- random streams ------------------------------------------------------------------------
R_JITTER, R_ERRORS, R_THROTTLE, R_ARRIVAL, R_SERVICE = range(5)
# `rand_n` of a stream the run never draws from (no jitter, no errors, no throttling): it gets
# no block (the kernel's step count treats it as a full one, so a draw by mistake stays inside
# its row); the driver fills it once it may be drawn, and raises if it was drawn unfilled.
UNFILLED = -1

# -- per-bin results -----------------------------------------------------------------------
# The C_* rows are the Recorder's COUNTERS, in its order.
(
    C_FRESH,
    C_ATTEMPTS,
    C_RETRIES,
    C_SUCCEEDED,
    C_TIMED_OUT,
    C_REJECTED,
    C_DROPPED,
    C_THROTTLED,
    C_FRESH_OK,
    C_FRESH_FAILED,
) = range(len(COUNTERS))
# Beyond the Recorder's counters: calls a provider's rate limit refused.
C_LIMITED = len(COUNTERS)
N_C = len(COUNTERS) + 1
AR_BUSY, AR_QUEUE, AR_SERVERS, AR_CAPACITY = range(4)
N_AR = 4
SN_QUEUE, SN_BUSY, SN_SERVERS = range(3)
N_SN = 3
LAT_CLIENT, LAT_SERVER = range(2)

# What one kernel step (one event, or one start from a queue) may use at most of each array.
STEP_MAX = 4

# Initial sizes (they grow on demand).
ATTEMPTS0, HEAP0, QUEUE0, LANE0, LAT0, RAND0 = 4096, 4096, 4096, 4096, 2**18, 2**16

KernelState = namedtuple(
    "KernelState",
    [
        "si",
        "sf",
        "st_i",
        "st_f",
        "queue",
        "cl_f",
        "th_req",
        "th_acc",
        "lane_head",
        "lane_len",
        "lane_id",
        "lane_serial",
        "lane_t",
        "att_f",
        "att_i",
        "heap_t",
        "heap_i",
        "rand",
        "rand_pos",
        "rand_n",
        "ro_i",
        "ro_f",
        "ro_hist",
        "grid_t",
        "grid_low",
        "grid_slope",
        "grid_mass",
        "counts",
        "areas",
        "snaps",
        "lat_code",
        "lat_sum",
        "lat_max",
    ],
)


NO_DEMAND = (np.array([0.0, 1.0]), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 2)))


def new_state(
    n_stations: int,
    n_clients: int,
    n_bins: int,
    bin_s: float,
    grid: tuple[np.ndarray, ...] = NO_DEMAND,
) -> KernelState:
    """Empty state for `n_stations` stations and `n_clients` clients, with one route per row
    of the demand's `grid` (cell starts, then per route the rows of `Demand.unit_grid`; by
    default one route with no demand); the caller fills the stations', clients' and routes'
    parameters (a route's entry client is row 0 until then)."""
    n_routes = len(grid[1])
    si = np.zeros(N_SI, dtype=np.int64)
    sf = np.zeros(N_SF, dtype=np.float64)
    si[SI_N_BINS] = n_bins
    si[SI_FREE] = -1
    sf[SF_BIN_S] = bin_s
    sf[SF_NEXT_EDGE] = bin_s
    st_f = np.zeros((n_stations, N_STF))
    st_f[:, STF_QUEUE_LIMIT] = math.inf
    st_f[:, STF_LIFO_OVER] = math.inf
    st_f[:, STF_SOJOURN_S] = math.inf
    st_f[:, STF_SLOWDOWN] = 1.0
    state = KernelState(
        si=si,
        sf=sf,
        st_i=np.zeros((n_stations, N_ST), dtype=np.int64),
        st_f=st_f,
        queue=np.zeros((n_stations, QUEUE0), dtype=np.int64),
        cl_f=_clients(n_clients),
        th_req=np.zeros((n_clients, THROTTLE_SLOTS)),
        th_acc=np.zeros((n_clients, THROTTLE_SLOTS)),
        lane_head=np.zeros(n_clients, dtype=np.int64),
        lane_len=np.zeros(n_clients, dtype=np.int64),
        lane_id=np.zeros((n_clients, LANE0), dtype=np.int64),
        lane_serial=np.zeros((n_clients, LANE0), dtype=np.int64),
        lane_t=np.zeros((n_clients, LANE0)),
        att_f=np.zeros((0, N_AF)),
        att_i=np.zeros((0, N_AI), dtype=np.int64),
        heap_t=np.zeros(HEAP0),
        heap_i=np.zeros((HEAP0, N_H), dtype=np.int64),
        rand=np.zeros((R_SERVICE + n_stations, RAND0)),
        rand_pos=np.zeros(R_SERVICE + n_stations, dtype=np.int64),
        rand_n=np.zeros(R_SERVICE + n_stations, dtype=np.int64),
        ro_i=np.zeros((n_routes, N_RO), dtype=np.int64),
        ro_f=np.zeros((n_routes, N_ROF)),
        ro_hist=np.zeros((n_routes, HIST_BUCKETS), dtype=np.int64),
        grid_t=grid[0],
        grid_low=grid[1],
        grid_slope=grid[2],
        grid_mass=grid[3],
        counts=np.zeros((n_clients, N_C, n_bins), dtype=np.int64),
        areas=np.zeros((n_stations, N_AR, n_bins)),
        snaps=np.zeros((n_stations, N_SN, n_bins), dtype=np.int64),
        lat_code=np.zeros((2, LAT0), dtype=np.int64),
        lat_sum=np.zeros((2, n_bins)),
        lat_max=np.full((2, n_bins), -math.inf),
    )
    return grow_attempts(state, ATTEMPTS0)


def _clients(n_clients: int) -> np.ndarray:
    cl_f = np.zeros((n_clients, N_CL))
    cl_f[:, CL_NEXT] = -1.0
    return cl_f


def grow_attempts(state: KernelState, extra: int) -> KernelState:
    """`extra` more rows in the attempt table, threaded onto the free list."""
    old = len(state.att_i)
    att_f = np.zeros((old + extra, N_AF))
    att_i = np.zeros((old + extra, N_AI), dtype=np.int64)
    att_f[:old], att_i[:old] = state.att_f, state.att_i
    rows = np.arange(old, old + extra)
    att_i[rows, A_STATE] = FREE
    att_i[rows[:-1], A_NEXT] = rows[1:]
    att_i[rows[-1], A_NEXT] = state.si[SI_FREE]
    state.si[SI_FREE] = old
    state.si[SI_FREE_N] += extra
    return state._replace(att_f=att_f, att_i=att_i)


def grow_heap(state: KernelState) -> KernelState:
    """Twice the heap's room."""
    n = len(state.heap_t)
    heap_t, heap_i = np.zeros(2 * n), np.zeros((2 * n, N_H), dtype=np.int64)
    heap_t[:n], heap_i[:n] = state.heap_t, state.heap_i
    return state._replace(heap_t=heap_t, heap_i=heap_i)


def _unrolled(ring: np.ndarray, heads: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row of a ring buffer copied into twice the room, starting at index 0."""
    rows, cap = ring.shape
    out = np.zeros((rows, 2 * cap), dtype=ring.dtype)
    for r in range(rows):
        index = (heads[r] + np.arange(lengths[r])) % cap
        out[r, : lengths[r]] = ring[r, index]
    return out


def grow_queues(state: KernelState) -> KernelState:
    """Twice the room in every station's queue (heads reset to 0)."""
    heads, lengths = state.st_i[:, ST_QHEAD].copy(), state.st_i[:, ST_QLEN]
    queue = _unrolled(state.queue, heads, lengths)
    state.st_i[:, ST_QHEAD] = 0
    return state._replace(queue=queue)


def grow_lanes(state: KernelState) -> KernelState:
    """Twice the room in every client's timeout lane (heads reset to 0)."""
    heads, lengths = state.lane_head.copy(), state.lane_len
    grown = {
        name: _unrolled(getattr(state, name), heads, lengths)
        for name in ("lane_id", "lane_serial", "lane_t")
    }
    state.lane_head[:] = 0
    return state._replace(**grown)


def queue_room(state: KernelState) -> int:
    """Free places in the fullest station queue."""
    return len(state.queue[0]) - int(state.st_i[:, ST_QLEN].max())


def lane_room(state: KernelState) -> int:
    """Free places in the fullest timeout lane."""
    return len(state.lane_id[0]) - int(state.lane_len.max())

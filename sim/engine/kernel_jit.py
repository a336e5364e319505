"""How the kernel is compiled: numba's `njit`, its on-disk cache, and the plain-Python fallback.

`compiled(function)` compiles with numba when it is importable and `OUTAGE_SIM_JIT` is not
"0"; otherwise the function stays ordinary Python (same results, slower). Two choices:

* No reference counting (`_nrt=False`): kernel functions take the whole state, a tuple of
  arrays, and with numba's runtime on every call increfs and decrefs each array (measured: the
  compiled M/M/c kernel ran several times slower). They never allocate, so they need no runtime.
* A cache keyed on every module compiled code depends on: numba's own cache checks only the
  file a function is defined in, so editing an index constant in `kernel_state.py` would leave
  stale machine code in the cache of `kernel.py`. `_KernelCacheLocator` stamps each entry with a
  hash of all of `KERNEL_SOURCES` instead (set `OUTAGE_SIM_JIT_CACHE=0` to compile afresh every
  run).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

try:
    import numba
    from numba.core import caching
except ImportError:  # numba is optional: the same code then runs as plain Python
    numba = caching = None

JIT = numba is not None and os.environ.get("OUTAGE_SIM_JIT", "1") != "0"
CACHE = os.environ.get("OUTAGE_SIM_JIT_CACHE", "1") != "0"
SIM = Path(__file__).resolve().parent.parent
# Every file whose code or constants compiled functions use: the kernel's, this one (the
# compile options) and analysis/metrics.py (the histogram's edges).
KERNEL_SOURCES = tuple(
    SIM / name
    for name in (
        "engine/kernel_jit.py",
        "analysis/metrics.py",
        "engine/clients.py",
        "engine/kernel_state.py",
        "engine/kernel_store.py",
        "engine/kernel_clients.py",
        "engine/kernel.py",
        "engine/fluid_graph_kernel.py",
    )
)


@functools.cache
def kernel_stamp() -> str:
    """A hash of every kernel source file: what a cached compilation depends on."""
    digest = hashlib.sha256()
    for path in KERNEL_SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


if caching is not None and hasattr(caching, "InTreeCacheLocator"):

    class _KernelCacheLocator(caching.InTreeCacheLocator):
        """numba's in-tree cache, stamped with the whole kernel's sources."""

        def get_source_stamp(self):
            return kernel_stamp()

        @classmethod
        def from_function(cls, py_func, py_file):
            if Path(py_file).resolve() not in KERNEL_SOURCES:
                return None
            return super().from_function(py_func, py_file)

    if _KernelCacheLocator not in caching.CacheImpl._locator_classes:
        caching.CacheImpl._locator_classes.insert(0, _KernelCacheLocator)


def compiled(function):
    """`function` compiled by numba (cached on disk), or unchanged when the JIT is off."""
    return numba.njit(cache=CACHE, _nrt=False)(function) if JIT else function


def compiled_inline(function):
    """Like `compiled`, and inlined into its callers by numba (for an event handler called
    with the whole state: a call passes each of the state's arrays field by field)."""
    return numba.njit(cache=CACHE, _nrt=False, inline="always")(function) if JIT else function

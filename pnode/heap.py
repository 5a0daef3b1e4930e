"""Keeping freed graph memory in the process between training iterations (glibc only).

Stored stage graphs (:mod:`pnode.graphs`) are hundreds of megabytes of tensors made in
one forward pass and freed by its adjoint. glibc hands the freed top of its heap back to
the system once more than ``M_TRIM_THRESHOLD`` bytes (a few MB) are free there, and the
next iteration faults every page in again: measured at RK4-100 with 800 MB of graphs,
90-180 thousand page faults and 0.25-0.4 s of an iteration's 1.0-1.4 s. Backprop escapes
only by chance: its parameter gradients, allocated at the top of the heap, pin it.

:func:`retain` raises glibc's trim threshold to a little over the graph bytes just
measured (and fixes the mmap threshold at glibc's own ceiling, 32 MB, which setting
the trim threshold would otherwise freeze at whatever it had reached), so the memory the
next iteration needs stays with the process. It only ever raises the thresholds, acts
once per larger size, and leaves a process alone whose user set ``MALLOC_TRIM_THRESHOLD_``
or ``MALLOC_MMAP_THRESHOLD_`` or ``PNODE_KEEP_HEAP=0``. Other C libraries: nothing.
"""
import ctypes
import os

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_CEILING = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_SLACK = 64 * 2**20  # trajectory vectors and allocator slack freed along with the graphs

_state = {"libc": None, "trim": 0}


def _glibc(environ=os.environ):
    if _state["libc"] is None:
        libc = False
        mine = environ.get("PNODE_KEEP_HEAP", "1") == "0" or any(
            k in environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"))
        if not mine:
            try:
                lib = ctypes.CDLL(None)
                if hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "mallopt"):
                    lib.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                    libc = lib
            except OSError:  # pragma: no cover - no C library to ask
                pass
        _state["libc"] = libc
    return _state["libc"]


def retain(nbytes):
    """Keep up to ``nbytes`` (plus slack) of freed heap in the process; returns the trim
    threshold now in force (0 when pnode leaves the allocator alone)."""
    libc = _glibc()
    if not libc:
        return 0
    want = min(int(nbytes) + _SLACK, 2**31 - 1)  # mallopt takes an int
    if want > _state["trim"]:
        if _state["trim"] == 0:
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_CEILING)
        libc.mallopt(_M_TRIM_THRESHOLD, want)
        _state["trim"] = want
    return _state["trim"]

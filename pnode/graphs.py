"""Stored stage graphs (``Checkpoint("graphs", max_memory=...)``): the forward pass keeps the
autograd graph of each right-hand-side evaluation, so the adjoint's products at that point
are a plain backward through it instead of a re-evaluation of ``func``: backprop's
arithmetic, bounded by a byte budget.

A graph is found again by the stage's actual ``(s, U)`` values (never by call order); a
point without a stored graph is re-evaluated as without the store, so the gradient is the
same to round-off whatever the budget. Under a budget only the last steps' graphs are
built (the adjoint reaches them first). The adjoint frees each graph once it has moved a
whole step before it, as backprop frees its graph while it goes (and the heap memory
stays with the process for the next iteration: freed all at once at the end it was
handed back to the system and faulted in again, 0.3 s per RK4-100 iteration); the rest
are freed when the adjoint ends. The bytes
are those of the tensors autograd saved for the graph (parameters excluded), measured by a
saved-tensors hook on the first evaluation of a solve and every 16th after it.
"""
from collections import OrderedDict

import torch

from . import runtime


class GraphStore:
    """Graphs of recent forward evaluations, at most ``budget`` bytes (None: no limit).

    Attributes:
        peak_bytes: the most bytes held at once during the last solve.
        kept_steps: how many distinct step start times had a graph when the forward ended.
    """

    def __init__(self, budget=None):
        self.budget = budget
        self._items = OrderedDict()  # id -> (s, u64, linearization, bytes), oldest first
        self._by_s = {}  # s -> ids of the graphs at that time
        self._next = 0
        self.bytes = 0
        self.peak_bytes = 0
        self.kept_steps = 0
        self.recording = False

    def clear(self):
        """Drop every graph (a new forward pass, or the adjoint is done)."""
        self._items.clear()
        self._by_s.clear()
        self.bytes = 0

    def begin(self, ts, s_end, stages):
        """A forward solve of ``ts`` up to solver time ``s_end`` starts recording; a
        step takes ``stages`` evaluations."""
        self.clear()
        self.peak_bytes = 0
        self.recording = True
        self._ts, self._s_end, self._stages = ts, s_end, stages
        self._per_eval = None
        self._h_max = None
        self._since_measured, self._saved_bytes = 0, 0

    def wanted(self, s):
        """Whether a graph at solver time ``s`` would survive to the adjoint: under a
        budget only the last ones do, so earlier evaluations skip building a graph (the
        remaining evaluations are estimated from the current step size)."""
        if self.budget is None or self._per_eval is None:
            return True
        h = abs(self._ts.getTimeStep()) or 1.0
        remaining = ((self._s_end - s) / h + 1) * self._stages
        return remaining * self._per_eval <= self.budget

    def end(self, step_times):
        """The forward solve ended; ``step_times``: the accepted steps' boundaries."""
        self.recording = False
        starts = set(step_times[:-1])
        self.kept_steps = len({s for s, *_ in self._items.values() if s in starts})
        self._h_max = max((b - a for a, b in zip(step_times, step_times[1:])), default=None)
        runtime.retain_heap(self.peak_bytes)  # the next forward needs this memory again

    def record(self, lin, params):
        """Build ``lin``'s graph now, measuring what autograd saves; keep it within budget.

        The saved tensors are measured on the first evaluation of a solve and on every
        ``MEASURE_EVERY``-th after it; the others take the last measured size (the same
        ``func`` at the same shapes). A saved-tensors hook is a Python call per saved
        tensor, packing and unpacking: on every evaluation it cost 11 % of the CNF's
        forward and backward (69 saved tensors per evaluation)."""
        if self._since_measured % MEASURE_EVERY == 0:
            self._saved_bytes = _measured_build(lin, params)
        else:
            lin.build()
        self._since_measured += 1
        out = lin.output()
        nbytes = self._saved_bytes + (lin.u64.numel() * lin.u64.element_size() + out.numel() * out.element_size())
        self._per_eval = nbytes if self._per_eval is None else max(self._per_eval, nbytes)
        if self.budget is not None and nbytes > self.budget:
            return
        self._items[self._next] = (lin.s, lin.u64, lin, nbytes)
        self._by_s.setdefault(_key(lin.s), []).append(self._next)
        self._next += 1
        self.bytes += nbytes
        while self.budget is not None and self.bytes > self.budget:
            key, (s, _, _, b) = self._items.popitem(last=False)
            self._by_s[_key(s)].remove(key)
            self.bytes -= b
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def take(self, s, u64, t, exact_t):
        """The stored linearization at ``(s, u64)``, or None.

        PETSc's adjoint recomputes a stage's time from the step's end and, for a
        first-same-as-last stage, its state from the step's solution, so both may differ
        from the forward's in the last bits: times match within 1e-13 relative, states
        exactly or within 1e-13 of their largest entry (the product there differs by as
        little), nudged times ``t`` exactly when ``exact_t``. A graph stays until the
        adjoint has passed the step after it (a first-same-as-last stage is asked for by
        two steps), see :meth:`_drop_after`."""
        if not self.recording:
            self._drop_after(s)
        tol = 1e-13 * max(1.0, abs(s))
        here = [lin for s_, _, lin, _ in map(self._items.__getitem__, self._by_s.get(_key(s), ()))
                if abs(s_ - s) <= tol and (not exact_t or bool(lin.t == t))]
        # exact first: two stages at one time (RK4's 2nd and 3rd) would each pay for a
        # full-vector closeness test of the other
        for lin in here:
            if torch.equal(lin.u64, u64):
                return lin
        return next((lin for lin in here if _near(lin.u64, u64)), None)

    def _drop_after(self, s):
        """The adjoint asks at ``s``, inside the step it is reversing: no step before it
        reaches more than the longest step beyond ``s``, so later graphs are done with."""
        if self._h_max is None:
            return
        limit = s + self._h_max + 1e-12 * max(1.0, abs(s) + self._h_max)
        while self._items:
            key = next(reversed(self._items))
            s_, _, _, b = self._items[key]
            if s_ <= limit:
                return
            del self._items[key]
            self._by_s[_key(s_)].remove(key)
            self.bytes -= b


MEASURE_EVERY = 16  # evaluations per saved-tensor measurement (see GraphStore.record)


def _measured_build(lin, params):
    """Build ``lin``'s graph; returns the bytes of the tensors autograd saved for it
    (parameters excluded, each storage once)."""
    seen = {p.data_ptr() for p in params}
    size = [0]

    def pack(x):
        ptr = x.data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            size[0] += x.nbytes
        # not x itself: a saved output returned as is would hold its own grad_fn, a
        # reference cycle autograd never frees (the stored graphs only need values)
        return x.detach()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        lin.build()
    return size[0]


def _key(s):
    """The bucket of solver time ``s`` (10 significant digits; a time on a bucket's edge
    only costs a re-evaluation)."""
    return f"{s:.9e}"


def _near(a, b):
    """max |a - b| <= 1e-13 max |b| (one temporary; ``b``, just handed over, is in cache)."""
    if not a.numel():
        return True
    return bool(torch.sub(a, b).abs_().max() <= 1e-13 * float(b.abs().max()))

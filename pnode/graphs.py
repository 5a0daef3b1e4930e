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
import torch

from . import runtime


class GraphStore:
    """Graphs of recent forward evaluations, at most ``budget`` bytes (None: no limit).

    The graphs are kept in the order they were built. PETSc's adjoint asks for them in
    about the reverse order (a step's stages last to first, steps last to first), so a
    lookup scans back from where the previous one matched and usually stops at once;
    what it passes over (stages of rejected step attempts) is never asked for.

    Attributes:
        peak_bytes: the most bytes held at once during the last solve.
        kept_steps: how many distinct step start times had a graph when the forward ended.
    """

    def __init__(self, budget=None):
        self.budget = budget
        self._items = []  # (s, u64, linearization, bytes) in build order; None once freed
        self._first = 0  # index of the oldest graph still held
        self._cursor = 0  # the adjoint's lookups scan back from here
        self.bytes = 0
        self.peak_bytes = 0
        self.kept_steps = 0
        self.recording = False
        self._h_max = None

    def clear(self):
        """Drop every graph (a new forward pass, or the adjoint is done)."""
        self._items = []
        self._first = self._cursor = 0
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
        self.kept_steps = len({item[0] for item in self._items[self._first:] if item[0] in starts})
        self._h_max = max((b - a for a, b in zip(step_times, step_times[1:])), default=None)
        self._cursor = len(self._items) - 1
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
            out = lin.output()
            self._io_bytes = lin.u64.nbytes + out.nbytes
        else:
            lin.build()
        self._since_measured += 1
        nbytes = self._saved_bytes + self._io_bytes
        self._per_eval = nbytes if self._per_eval is None else max(self._per_eval, nbytes)
        if self.budget is not None and nbytes > self.budget:
            return
        self._items.append((lin.s, lin.u64, lin, nbytes))
        self.bytes += nbytes
        if self.budget is not None:
            items = self._items
            while self.bytes > self.budget:
                self.bytes -= items[self._first][3]
                items[self._first] = None
                self._first += 1
        if self.bytes > self.peak_bytes:
            self.peak_bytes = self.bytes

    def take(self, s, u64, t, exact_t):
        """The stored linearization at ``(s, u64)``, or None.

        PETSc's adjoint recomputes a stage's time from the step's end and, for a
        first-same-as-last stage, its state from the step's solution, so both may differ
        from the forward's in the last bits: times match within 1e-13 relative, states
        exactly or within 1e-13 of their largest entry (the product there differs by as
        little), nudged times ``t`` exactly when ``exact_t``. The scan goes back from the
        last match while the graphs can still be of the step holding ``s`` (built at most
        the longest step before it), and graphs a whole step past ``s`` are freed: the
        adjoint is done with them (a first-same-as-last stage is asked for by two steps)."""
        items, first = self._items, self._first
        if not items or self._h_max is None:
            return None
        tol = 1e-13 * max(1.0, abs(s))
        self._free_after(s)
        same_time = []
        k = min(self._cursor, len(items) - 1)
        floor = s - self._h_max - tol
        while k >= first:
            s_, u_, lin, _ = items[k]
            if abs(s_ - s) <= tol and (not exact_t or bool(lin.t == t)):
                if torch.equal(u_, u64):
                    self._cursor = k
                    return lin
                same_time.append(k)
            elif s_ < floor:
                break
            k -= 1
        # only then the closeness test: two stages at one time (RK4's 2nd and 3rd) would
        # each pay for a full-vector test of the other
        for k in same_time:
            if _near(items[k][1], u64):
                self._cursor = k
                return items[k][2]
        return None

    def _free_after(self, s):
        """Free the graphs built after the step that holds ``s`` ended: no step before it
        reaches further than the longest step."""
        items = self._items
        limit = s + self._h_max + 1e-12 * max(1.0, abs(s) + self._h_max)
        while len(items) > self._first and items[-1][0] > limit:
            self.bytes -= items.pop()[3]
        if self._cursor >= len(items):
            self._cursor = len(items) - 1


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


def _near(a, b):
    """max |a - b| <= 1e-13 max |b| (one temporary; ``b``, just handed over, is in cache)."""
    if not a.numel():
        return True
    return bool(torch.sub(a, b).abs_().max() <= 1e-13 * float(b.abs().max()))

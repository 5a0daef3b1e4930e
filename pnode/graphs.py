"""Stored stage graphs (``Checkpoint("graphs", max_memory=...)``): the forward pass keeps the
autograd graph of each right-hand-side evaluation, so the adjoint's products at that point
are a plain backward through it instead of a re-evaluation of ``func``: backprop's
arithmetic, bounded by a byte budget.

A graph is found again by the stage's actual ``(s, U)`` values (never by call order); a
point without a stored graph is re-evaluated as without the store, so the gradient is the
same to round-off whatever the budget. Under a budget only the last steps' graphs are
built (the adjoint reaches them first); all are freed when the adjoint ends. The bytes
are those of the tensors autograd saved for the graph (parameters excluded), measured by a
saved-tensors hook.
"""
from collections import OrderedDict

import torch


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

    def wanted(self, s):
        """Whether a graph at solver time ``s`` would survive to the adjoint: under a
        budget only the last ones do, so earlier evaluations skip building a graph (the
        remaining evaluations are estimated from the current step size)."""
        if self.budget is None or self._per_eval is None:
            return True
        h = abs(self._ts.getTimeStep()) or 1.0
        remaining = ((self._s_end - s) / h + 1) * self._stages
        return remaining * self._per_eval <= self.budget

    def end(self, step_starts):
        """The forward solve ended; ``step_starts``: the accepted steps' start times."""
        self.recording = False
        starts = set(step_starts)
        self.kept_steps = len({s for s, *_ in self._items.values() if s in starts})

    def record(self, lin, params):
        """Build ``lin``'s graph now, measuring what autograd saves; keep it within budget."""
        seen = {p.data_ptr() for p in params}  # parameters are not the graph's; count each tensor once
        size = [0]

        def pack(x):
            if x.data_ptr() not in seen:
                seen.add(x.data_ptr())
                size[0] += x.numel() * x.element_size()
            # not x itself: a saved output returned as is would hold its own grad_fn, a
            # reference cycle autograd never frees (the stored graphs only need values)
            return x.detach()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            lin.build()
        out = lin.output()
        nbytes = size[0] + (lin.u64.numel() * lin.u64.element_size() + out.numel() * out.element_size())
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
        little), nudged times ``t`` exactly when ``exact_t``. Graphs stay until the adjoint
        ends (a first-same-as-last stage is asked for by two steps)."""
        close = None
        for key in self._by_s.get(_key(s), ()):
            s_, u_, lin, _ = self._items[key]
            if abs(s_ - s) > 1e-13 * max(1.0, abs(s)) or (exact_t and not bool(lin.t == t)):
                continue
            if torch.equal(u_, u64):
                return lin
            if close is None and _near(u_, u64):
                close = lin
        return close


def _key(s):
    """The bucket of solver time ``s`` (10 significant digits; a time on a bucket's edge
    only costs a re-evaluation)."""
    return f"{s:.9e}"


def _near(a, b):
    scale = float(a.abs().max()) if a.numel() else 0.0
    return bool((a - b).abs().max() <= 1e-13 * scale) if a.numel() else True

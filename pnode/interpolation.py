"""Outputs between steps: an adaptive explicit solve steps freely and interpolates the
output times that fall inside its steps, as torchdiffeq does, instead of stopping at each.

Stopping at every output time makes the step count at least the number of outputs: on
torchdiffeq's latent ODE (100 output times) dopri5 took 99 steps where 8 were enough for
the tolerance. Stepping freely and interpolating takes the 8.

The interpolant on a step ``[t_n, t_{n+1}]`` holding an output time is the quintic Hermite
polynomial through three consecutive step boundaries ``j`` (values ``y_j`` and slopes
``f(t_j, y_j)``): ``j = n-1, n, n+1``, or ``0, 1, 2`` on the first step, or the cubic
through ``n, n+1`` when the solve took a single step. Its error is ``O(h^6)``, below the
local error of the 5th-order methods it serves. An output is therefore a fixed linear
combination ``sum_j a_j y_j + b_j f(t_j, y_j)`` of states the solver computed: torch
differentiates the combination and the slope evaluations (through ``func``, with a
graph), and PETSc's adjoint receives ``dL/dy_j`` at the boundaries exactly as it receives
a loss gradient at an output time it stopped on. The gradient is that of the returned
outputs, to round-off, as everywhere in pnode.

:class:`BoundaryCapture` keeps, during the solve, only the boundary states some output
needs (at most three per step that holds outputs); :class:`Stencil` is what the solve
hands back: the boundaries and the weights of each output.
"""
import torch

from . import profiling
from .dynamics import call_explained


def hermite_weights(nodes, x):
    """Weights ``(a, b)`` of the Hermite interpolant at ``x``: ``p(x) = sum_j a_j y_j + b_j y'_j``
    for the polynomial of degree ``2*len(nodes) - 1`` matching values ``y_j`` and slopes
    ``y'_j`` at the distinct ``nodes`` (floats, time units)."""
    a, b = [], []
    for j, xj in enumerate(nodes):
        lj, dlj = 1.0, 0.0
        for m, xm in enumerate(nodes):
            if m != j:
                lj *= (x - xm) / (xj - xm)
                dlj += 1.0 / (xj - xm)
        a.append((1.0 - 2.0 * (x - xj) * dlj) * lj * lj)
        b.append((x - xj) * lj * lj)
    return a, b


class BoundaryCapture:
    """Keeps the step-boundary states the interpolated outputs need, as the solve runs.

    Args:
        s: the output times in solver time (increasing; the first is the start, the
            last the end, which the solve lands on).
    """

    def __init__(self, s):
        self._inner = list(s[1:-1])  # outputs strictly inside the span
        self._next = 0  # the first inner output not yet inside a finished step
        self._ring = []  # (index, state) of the last three boundaries
        self._pending = None  # a boundary still to keep (the first step's right neighbour)
        self.kept = {}  # boundary index -> flat float64 state
        self.where = []  # per inner output: (m, exact): inside step m (ends at boundary m), or on m

    def start(self, u0):
        """The solve starts from ``u0`` (flat float64, boundary 0)."""
        self._ring = [(0, u0.clone())]
        self.kept = {0: self._ring[0][1]}

    def on_step(self, m, s_m, u):
        """Boundary ``m`` (solver time ``s_m``, state ``u``) was reached by an accepted step."""
        self._ring = (self._ring + [(m, u.clone())])[-3:]
        if self._pending == m:
            self.kept[m] = self._ring[-1][1]
            self._pending = None
        held = False
        while self._next < len(self._inner) and self._inner[self._next] <= s_m:
            self.where.append((m, self._inner[self._next] == s_m))
            self._next += 1
            held = True
        if held:
            for j, state in self._ring:
                self.kept[j] = state
            if m == 1:
                self._pending = 2

    def finish(self, step_times_user, outputs_user, u_end):
        """The :class:`Stencil` of a finished solve.

        Args:
            step_times_user: accepted step boundaries, user time (the solve's ``N + 1``).
            outputs_user: the output times, user time (the first and last land on
                boundaries ``0`` and ``N``).
            u_end: the final state (flat float64).

        Returns:
            ``(ys, stencil)``: the kept boundary states, one row each, and the
            :class:`Stencil` whose ``boundaries`` index them.
        """
        n = len(step_times_user) - 1
        self.kept[n] = u_end
        rows = []  # per output: [(boundary, a, b)]
        rows.append([(0, 1.0, 0.0)])
        for x, (m, exact) in zip(outputs_user[1:-1], self.where):
            if exact:
                rows.append([(m, 1.0, 0.0)])
                continue
            nodes = [m - 2, m - 1, m] if m >= 2 else [0, 1, 2] if n >= 2 else [0, 1]
            a, b = hermite_weights([float(step_times_user[j]) for j in nodes], x)
            rows.append(list(zip(nodes, a, b)))
        rows.append([(n, 1.0, 0.0)])
        boundaries = sorted({j for row in rows for j, _, _ in row})
        ys = torch.stack([self.kept[j] for j in boundaries])
        return ys, Stencil(boundaries, [float(step_times_user[j]) for j in boundaries], rows)


class Stencil:
    """How the outputs of an interpolating solve come from its boundary states.

    Attributes:
        boundaries: step indices of the boundary states the solve returned (increasing,
            from 0 to the last step): the adjoint's loss gradients join at these steps.
        times: their user times.
        rows: for each output, ``[(boundary step, a, b), ...]``: the output is
            ``sum a * y_j + b * f(t_j, y_j)``.
    """

    def __init__(self, boundaries, times, rows):
        self.boundaries, self.times, self.rows = boundaries, times, rows

    def outputs(self, ys, func, layout, params, stats=None):
        """The outputs, ``(len(rows), n)`` flat in the model's dtype, from ``ys``: the
        boundary states (one row per boundary, differentiable), slopes by ``func`` with
        autograd (each boundary evaluated once; counted in ``stats["rhs_evals"]``)."""
        with profiling.INTERP:
            return self._combine(ys, func, layout, params, stats)

    def _combine(self, ys, func, layout, params, stats):
        col = {j: i for i, j in enumerate(self.boundaries)}
        sloped = sorted({j for row in self.rows for j, _, b in row if b})
        scol = {j: i for i, j in enumerate(sloped)}
        a = [[0.0] * len(self.boundaries) for _ in self.rows]
        b = [[0.0] * len(sloped) for _ in self.rows]
        for k, row in enumerate(self.rows):
            for j, x, y in row:
                a[k][col[j]] += x
                if y:
                    b[k][scol[j]] += y
        like = dict(dtype=ys.dtype, device=ys.device)
        out = torch.tensor(a, **like) @ ys
        if sloped:
            f = torch.stack([self._slope(func, layout, params, self.times[col[j]], ys[col[j]]) for j in sloped])
            if stats is not None:
                stats["rhs_evals"] += len(sloped)
            out = out + torch.tensor(b, **like) @ f
        return out

    @staticmethod
    def _slope(func, layout, params, t, y):
        out = call_explained(func, torch.tensor(t, dtype=layout.dtype, device=layout.device), layout.unflatten(y),
                             params)
        return layout.flatten(out)

"""ODEBlock: an ``nn.Module`` that maps its input to the ODE state at ``t1``."""
import itertools

from torch import nn

from .solver import ODESolver
from .validate import check_end_time

_COUNTER = itertools.count()


class ODEBlock(nn.Module):
    """``y(t1)`` of ``dy/dt = func(t, y)``, ``y(0) = x``: a continuous-depth layer.

    Args:
        func: the vector field (an ``nn.Module``; registered as a submodule).
        t1: end time (the block integrates over ``[0, t1]``).
        recompute_forward: keep only the input during the forward pass and re-solve
            the block in backward before its adjoint (ANODE's O(L) + O(N_t) memory).
        **solver_kwargs: passed to :class:`pnode.ODESolver` (method, rtol, atol,
            options, checkpoint, petsc_options, prefix, comm). Without a prefix the
            blocks get ``block0_``, ``block1_``, ... in creation order.
    """

    def __init__(self, func, t1=1.0, recompute_forward=False, **solver_kwargs):
        super().__init__()
        self.func = func
        self.t1 = check_end_time(t1)
        self.recompute_forward = bool(recompute_forward)
        solver_kwargs.setdefault("prefix", f"block{next(_COUNTER)}_")
        self.solver = ODESolver(func, **solver_kwargs)

    @property
    def stats(self):
        """The solver's counters from the last forward/backward pass."""
        return self.solver.stats

    def forward(self, x):
        """``x``: state tensor ``(batch, ...)`` (or a tuple of them); returns the state at
        ``t1``, same shape (a tuple for a tuple)."""
        ys = self.solver(x, [0.0, self.t1], recompute_forward=self.recompute_forward)
        return tuple(y[-1] for y in ys) if isinstance(ys, tuple) else ys[-1]

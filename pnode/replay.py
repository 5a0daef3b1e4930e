"""Bounded-memory adjoints driven from Python: our own checkpoints, PETSc's adjoint steps.

PETSc's memory trajectory bounds its checkpoints (revolve) only for fixed steps whose
count it can predict; with adaptive steps it silently stores every step. So for
``Checkpoint("binomial")`` in those cases pnode keeps the checkpoints itself:

- forward (PETSc's ``TSSolve``, no trajectory): a post-step hook keeps at most ``K``
  states, evenly spaced; when full, every other one is dropped and the spacing doubles
  (an online scheme: the number of steps is unknown in advance);
- backward: between two kept states the steps are reversed recursively: re-take the
  steps from a kept state to the middle, keep that state too if a slot is free, reverse
  the second half, then the first. Each reverse step re-takes its forward step (to
  recompute the stages) with the recorded ``dt`` and then calls ``TSAdjointStep``.

The accepted step sizes are replayed exactly (and checked), so the gradient is that of
the computed forward solution, identical to store-all.
"""
import math

from .bridge import vec_view, vec_write
from .errors import SolverError


class OnlineCheckpoints:
    """At most ``slots`` states from the forward sweep, evenly spaced (stride doubling)."""

    def __init__(self, slots):
        self.slots = slots
        self.stride = 1
        self.states = {}
        self.peak = 0

    def offer(self, step, u64):
        """Called with each accepted step's state (step 0 included)."""
        if step % self.stride:
            return
        self.states[step] = u64.clone()
        if len(self.states) > self.slots:
            self.stride *= 2
            for k in [k for k in self.states if k % self.stride]:
                del self.states[k]
        self.peak = max(self.peak, len(self.states))


class Replay:
    """The backward sweep over a forward solve whose states ``checkpoints`` kept.

    Args:
        ts: the TS after its forward ``solve`` (cost gradients already set).
        u: the TS solution Vec.
        times: accepted step boundaries ``s_0..s_N`` (solver time).
        checkpoints: the :class:`OnlineCheckpoints` filled during the forward sweep.
        slots: the budget ``K`` (checkpoints held at once, never exceeded).
        at_step: callback ``at_step(n)`` after the adjoint reaches step ``n`` (adds the
            loss gradient of an output time there).
        run: the solver's PETSc driver wrapper (``run(what, fn)``), turning PETSc errors
            and callback exceptions into pnode's.
    """

    def __init__(self, ts, u, times, checkpoints, slots, at_step, run):
        self.ts, self.u, self.times = ts, u, times
        self.store = dict(checkpoints.states)
        self.slots = slots
        self.peak = checkpoints.peak
        self.at_step = at_step
        self.run = run
        self.recomputed = 0  # forward steps re-taken (ts.step() runs no post-step hook)

    def _restore(self, step):
        ts = self.ts
        vec_write(self.u, self.store[step])
        ts.setSolution(self.u)
        ts.setTime(self.times[step])
        ts.setStepNumber(step)
        ts.restartStep()  # FSAL methods must re-evaluate f at the restored state

    def _advance(self, a, b):
        ts = self.ts
        for k in range(a, b):
            ts.setTimeStep(self.times[k + 1] - self.times[k])
            self.run("recomputation step", ts.step)
            self.recomputed += 1
            # The step controller saw this very step accepted in the forward sweep, so it
            # accepts it again; anything else would silently change the discrete solution.
            if ts.getTime() != self.times[k + 1]:
                raise SolverError(f"recomputing step {k} reached t={ts.getTime()!r} instead of "
                                  f"{self.times[k + 1]!r}", reason="REPLAY_MISMATCH",
                                  time=ts.getTime(), steps=k)

    def _adjoint_step(self, n):
        ts = self.ts
        self._advance(n, n + 1)  # recompute the stages of step n
        ts.setTimeStep(-(self.times[n + 1] - self.times[n]))
        self.run("adjoint step", ts.adjointStep)
        self.at_step(n)

    def _keep(self, step):
        self.store[step] = vec_view(self.u, "r").clone()
        self.peak = max(self.peak, len(self.store))

    def _reverse(self, a, b, free):
        """Reverse steps b-1..a; state ``a`` is stored; ``free`` more may be stored."""
        if b - a == 1 or free == 0:
            for n in range(b - 1, a - 1, -1):
                self._restore(a)
                self._advance(a, n)
                self._adjoint_step(n)
            return
        m = (a + b + 1) // 2
        self._restore(a)
        self._advance(a, m)
        self._keep(m)
        self._reverse(m, b, free - 1)
        del self.store[m]
        self._reverse(a, m, free)

    def backward(self):
        """Run the whole backward sweep; returns the most states held at once."""
        kept = sorted(self.store)
        ends = kept[1:] + [len(self.times) - 1]
        for i in range(len(kept) - 1, -1, -1):
            a, b = kept[i], ends[i]
            if b > a:
                self._reverse(a, b, self.slots - len(self.store))
            del self.store[a]
        return self.peak


def fits_fixed_grid(times, dt):
    """Whether every output time lies on ``s_0 + k*dt`` (PETSc's revolve then sees the
    exact step count it plans for)."""
    s0 = times[0]
    for s in times[1:]:
        k = (s - s0) / dt
        if abs(k - round(k)) > 1e-9 * max(1.0, abs(k)):
            return False
    total = (times[-1] - s0) / dt
    return math.ceil(total) == round(total)

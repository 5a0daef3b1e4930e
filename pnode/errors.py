"""Exceptions raised by pnode."""


class SolverError(RuntimeError):
    """A PETSc time integration (forward or adjoint) failed.

    Attributes:
        reason: PETSc's converged reason, by name (e.g. ``"DIVERGED_STEP_REJECTED"``)
            or ``"NAN"`` when the state stopped being finite.
        time: the time reached when the solve stopped (in the units of ``t``).
        steps: the number of accepted steps taken before the failure.
    """

    def __init__(self, message, *, reason=None, time=None, steps=None):
        super().__init__(message)
        self.reason = reason
        self.time = time
        self.steps = steps

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


class CallbackTrap:
    """Keeps the first Python exception raised inside a PETSc callback.

    PETSc turns a callback's exception into an error code and unwinds through C; the
    driver then asks the trap for the original and re-raises it unchanged.
    """

    def __init__(self):
        self.exc = None

    def wrap(self, fn):
        """``fn`` with its exceptions recorded (and still raised, for PETSc to unwind)."""
        def wrapped(*args):
            try:
                return fn(*args)
            except BaseException as exc:
                if self.exc is None:
                    self.exc = exc
                raise
        return wrapped

    def pop(self):
        """The recorded exception (or None), clearing it."""
        exc, self.exc = self.exc, None
        return exc


def petsc_message(err):
    """The human part of a ``PETSc.Error``: its message without the C stack frames."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    text = [ln for ln in lines if ln and not (ln.startswith("[") and "() at " in ln)]
    code = getattr(err, "ierr", None)
    msg = text[-1] if text else "PETSc error"
    msg = msg.removeprefix("[0] ").strip()
    return f"{msg} (PETSc error {code})" if code is not None else msg

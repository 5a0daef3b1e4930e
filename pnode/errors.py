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

    With ``collective=True`` (more than one MPI rank) the exception is not raised into
    PETSc, which would leave the other ranks waiting in a collective: the callback's
    output Vec is filled with NaN instead, which every rank then sees through PETSc's
    global norms, and the driver raises on every rank once PETSc returns.
    """

    def __init__(self, collective=False):
        self.exc = None
        self.collective = collective

    def wrap(self, fn):
        """``fn`` with its exceptions recorded (raised for PETSc, or NaN-poisoned)."""
        def wrapped(*args):
            try:
                return fn(*args)
            except BaseException as exc:
                if self.exc is None:
                    self.exc = exc
                out = args[-1] if args else None
                if self.collective and hasattr(out, "set") and hasattr(out, "getLocalSize"):
                    out.set(float("nan"))
                    return None
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

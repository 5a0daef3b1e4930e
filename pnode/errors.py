"""Exceptions raised by pnode, and the one place where PETSc failures become them."""
import sys
import traceback

import torch
from petsc4py import PETSc

from .bridge import cached_views


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


class MaxStepsError(SolverError, AssertionError):
    """A forward solve reached ``options["max_num_steps"]`` before the last output time.

    Also an ``AssertionError`` whose message starts with ``"max_num_steps exceeded"``, as
    torchdiffeq's is: programs written for torchdiffeq that catch that assertion (to stop
    or restart a training run) catch this one too. ``reason`` is ``"MAX_STEPS"`` (or
    ``"NO_EVENT"`` when an event solve ran out of steps).
    """

    @classmethod
    def exceeded(cls, steps, max_num_steps, why, reason="MAX_STEPS", time=None):
        """The error for ``steps`` taken of ``max_num_steps`` allowed, in torchdiffeq's
        wording followed by ``why``."""
        return cls(f"max_num_steps exceeded ({steps}>={max_num_steps}): {why}", reason=reason, time=time,
                   steps=steps)


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

    def poisoned(self, fn):
        """``fn`` returning tensors, for Python-side evaluations between collectives (the
        initial-step heuristic): under MPI an exception is kept and a NaN tensor shaped
        like the last argument returned, so every rank reaches the next collective."""
        if not self.collective:
            return fn

        def wrapped(*args):
            try:
                return fn(*args)
            except BaseException as exc:
                self.keep(exc)
                return torch.full_like(args[-1], float("nan"))
        return wrapped

    def keep(self, exc):
        """Record ``exc`` (if it is the first) without raising it."""
        if self.exc is None:
            self.exc = exc

    def pop(self):
        """The recorded exception (or None), clearing it.

        Under MPI the locals of the frames between the callback and the raise (the
        callback's PETSc Vec and Mat arguments, the DLPack views ``func`` was given) are
        dropped first: a rank whose exception kept them alive would free those PETSc
        objects later than the other ranks, one by one through Python's garbage
        collector, instead of with the solver's objects on every rank alike. The
        traceback itself (files, lines, functions) is kept.
        """
        exc, self.exc = self.exc, None
        if exc is not None and self.collective:
            traceback.clear_frames(exc.__traceback__)
        return exc


def petsc_message(err):
    """The human part of a ``PETSc.Error``: its message without the C stack frames."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    text = [ln for ln in lines if ln and not (ln.startswith("[") and "() at " in ln)]
    code = getattr(err, "ierr", None)
    msg = text[-1] if text else "PETSc error"
    msg = msg.removeprefix("[0] ").strip()
    return f"{msg} (PETSc error {code})" if code is not None else msg


def reason_name(reason):
    """PETSc's name of a ``TS.ConvergedReason`` value (``"DIVERGED_STEP_REJECTED"``)."""
    for name in dir(PETSc.TS.ConvergedReason):
        if not name.startswith("_") and getattr(PETSc.TS.ConvergedReason, name) == reason:
            return name
    return str(reason)


class PetscCall:
    """Runs PETSc drivers (solve, adjoint solve, a step) and translates their failures.

    A callback's exception is re-raised unchanged; a PETSc error becomes a
    :class:`SolverError` with PETSc's message and the time and steps reached. Under MPI
    the outcome is agreed on by all ranks, so a failure on one rank is an error on every
    rank (the failing rank raises the original exception, the others ``OTHER_RANK``).

    Args:
        trap: the :class:`CallbackTrap` the callbacks report to.
        reducer: the :class:`~pnode.parallel.Reducer` of the solver's communicator.
        where: ``where() -> (time, steps)``: the user time and step count reached.
    """

    def __init__(self, trap, reducer, where):
        self.trap, self.reducer, self.where = trap, reducer, where

    def __call__(self, what, fn):
        """Run ``fn()`` (a PETSc driver, or Python code whose evaluations go through the
        trap) described as ``what`` in messages; returns what ``fn`` returns."""
        self.trap.pop()
        err = out = None
        try:
            with cached_views():
                out = fn()
        except PETSc.Error as e:
            err = e
        exc = self.trap.pop()
        # 2: a callback raised (the cause), 1: PETSc failed (perhaps only from the NaN
        # another rank's failed callback poisoned its output with), 0: fine
        worst = self.reducer.max(2 if exc is not None else 1 if err is not None else 0)
        if worst == 0:
            return out
        if exc is not None:
            raise exc.with_traceback(exc.__traceback__)
        time, steps = self.where()
        if err is None or worst == 2:
            raise SolverError(f"PETSc {what} failed on another rank at t={time:.6g}",
                              reason="OTHER_RANK", time=time, steps=steps)
        code = getattr(err, "ierr", None)
        msg = petsc_message(err)
        reason, hint = ("NAN" if code == 72 else f"PETSC_ERROR_{code}"), ""
        if "LINEAR_SOLVE" in msg:
            reason = "DIVERGED_NONLINEAR_SOLVE" if "NONLINEAR" in msg else "DIVERGED_LINEAR_SOLVE"
            hint = (". The Newton or Krylov solves did not converge: keep the default per-sample block "
                    "Jacobian (options['jacobian']='block'), use options['jacobian']='dense' for small systems, "
                    "give options['preconditioner'], or loosen -ksp_rtol/-snes_rtol")
        raise SolverError(f"PETSc {what} failed at t={time:.6g} after {steps} steps: {msg}{hint}",
                          reason=reason, time=time, steps=steps) from None


def user_stacklevel():
    """The ``stacklevel`` for ``warnings.warn`` called from the calling function that
    points at the user's line: the first frame outside pnode and torch."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in ("pnode", "torch"):
        frame, level = frame.f_back, level + 1
    return level

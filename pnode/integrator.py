"""The integrator behind an :class:`~pnode.ODESolver`: forward solves on PETSc and the
adjoint of each, with every failure leaving a clean state.

One forward call: the method (:mod:`pnode.methods`) and the command line decide the
form; a :class:`~pnode.workspace.Workspace` (TS, Vecs, wiring from :mod:`pnode.forms`)
is reused or built; the step control (:mod:`pnode.stepping`) and the checkpoint plan
(:mod:`pnode.checkpoint`) are resolved for this call; PETSc solves, stepping exactly onto
every output time (``TSSetEvaluationTimes`` with ``MATCHSTEP``), or for an adaptive
explicit solve onto the last only, the inner outputs interpolated from the step
boundaries kept (:mod:`pnode.interpolation`); :mod:`pnode.outputs` collects the states. The call's :class:`Record` is what its adjoint
(:func:`pnode.adjoint.sweep`) needs later. If anything raises, the workspace is
destroyed (the next call builds a fresh one), so no half-finished PETSc state is reused.
"""
from dataclasses import dataclass, field
from typing import Any, List

import torch
from petsc4py import PETSc

from . import checkpoint as _ckpt
from .sweep import sweep
from .bridge import PETSC_DTYPE, Clock, vec_view, vec_write
from .callbacks import Progress, StepHooks
from .dynamics import Dynamics
from .errors import CallbackTrap, MaxStepsError, PetscCall, SolverError, petsc_message
from .interpolation import BoundaryCapture
from .methods import adjoint_method_names, form_of, has_adjoint
from .outputs import collect
from .parallel import Reducer, Sizes
from .stats import Stats
from .stepping import StepControl, global_rms
from .timegrid import Nudge, hits
from .workspace import Workspace


@dataclass
class Record:
    """One forward call, as its adjoint needs it.

    Attributes:
        run: the integrator's call counter when it ran (a later call invalidates it).
        times, s, clock: the user's output times, the solver's, and the
            :class:`~pnode.bridge.Clock` between them.
        step_times: accepted step boundaries in solver time.
        segments: for each output time, the index of the step that reached it.
        plan: the checkpoint plan that kept what the adjoint needs.
        workspace: the PETSc objects it ran on.
        params: the tensors differentiated.
        call: the :class:`~pnode.errors.PetscCall` that runs its PETSc drivers.
    """

    run: int
    times: List[float]
    s: List[float]
    clock: Any
    workspace: Any
    params: list
    call: Any
    step_times: List[float] = field(default_factory=list)
    segments: List[int] = field(default_factory=list)
    plan: Any = field(default_factory=_ckpt.NoRecord)
    trivial: bool = False  # one output time or an empty state: no PETSc solve at all
    jumps: frozenset = frozenset()  # user times where func may jump (evaluations nudged)
    hooks: Any = None  # the func's step callbacks (pnode.callbacks.StepHooks), if any
    interpolate: bool = False  # asked to step freely and interpolate inner outputs (pnode.interpolation)
    capture: Any = None  # the BoundaryCapture while it does

    @property
    def u(self):
        """The TS solution Vec."""
        return self.workspace.u


class Integrator:
    """Forward solves and adjoints for one solver's settings (see :class:`pnode.ODESolver`).

    Attributes:
        stats: :class:`~pnode.stats.Stats` of the last call.
        step_times: accepted step boundaries of the last solve (user time, float64).
    """

    def __init__(self, func, method, settings, checkpoint, source, comm, rtol, atol):
        self.func, self.method, self.settings, self.checkpoint = func, method, settings, checkpoint
        self.source, self.comm, self.rtol, self.atol = source, comm, rtol, atol
        self.progress, self.callback = False, None  # set by ODESolver (progress bar, per-step callback)
        self.reducer = Reducer(comm)
        self.trap = CallbackTrap(collective=comm.getSize() > 1)
        self.stats = Stats()
        self.step_times = torch.zeros(0, dtype=torch.float64)
        self.stencil = None  # pnode.interpolation.Stencil of the last solve when it interpolated
        self.workspace = None
        self._plan = None
        self._run = 0
        self._active = None  # (Record, StepControl) while PETSc runs a forward solve
        self.unseen = ([], None)  # (tensors func uses that this call would not differentiate, probe's error)
        self.graphs = checkpoint.graph_store()

    # ------------------------------------------------------------------ forward
    def forward(self, layout, y0_flat, times, params, record, jumps=frozenset(), event=None, interpolate=False):
        """Integrate from ``y0_flat`` (flat, model dtype) over ``times`` (user floats),
        landing on each; ``jumps``: times where ``func`` may be discontinuous.

        With ``interpolate`` an adaptive explicit solve lands only on the last time and
        returns the states at the step boundaries its inner outputs are interpolated
        from instead (:mod:`pnode.interpolation`; :attr:`stencil` says how); any other
        solve lands on every time and :attr:`stencil` is None.

        With ``event`` (``event(s, u64) -> float``, solver time) the solve stops where it
        crosses zero (PETSc's TSEvent) instead: returns the event's user time and the
        state there (flat float64).

        Returns:
            ``(ys, rec)``: ``(len(times), n)`` float64 outputs and the :class:`Record`
            (holding what the adjoint needs when ``record`` is true).
        """
        try:
            return self._forward(layout, y0_flat, times, params, record, jumps, event, interpolate)
        except BaseException:
            self.discard()
            raise

    def _forward(self, layout, y0_flat, times, params, record, jumps, event, interpolate):
        self.stencil = None
        self._agree(layout, times, params, record)
        clock = Clock.of(times)
        s = [clock.solver(x) for x in times]
        self.release()
        self.stats = Stats()
        self._run += 1
        y0 = y0_flat.detach().to(PETSC_DTYPE)
        rec = Record(self._run, times, s, clock, None, params, None, step_times=[s[0]], jumps=jumps,
                     interpolate=interpolate)
        if len(s) == 1 or self.reducer.sum(layout.numel) == 0:  # nothing to integrate
            rec.trivial = True
            self.step_times = torch.tensor(times, dtype=torch.float64)
            return y0.reshape(1, -1).expand(len(s), -1).clone(), rec
        ts_type = self.source.get("ts_type") or self.method.ts_type
        steps = StepControl(self.method, self.settings.steps, self.source, self.rtol, self.atol,
                            open_end=event is not None, ts_type=ts_type)
        # fixed steps land on every output time: only adaptive ones interpolate
        interp = interpolate and not steps.fixed and event is None and form_of(ts_type) == "rhs" and len(s) > 2
        # PETSc's evaluation times cannot change count on a TS (it crashes): part of the key;
        # a solve landing on its last time only has none (0, see _configure)
        ws, dyn, dyn_ex = self._workspace(layout, params, clock, _evaluation_count(2 if interp else len(s)),
                                          form_of(ts_type))
        vec_write(ws.u, y0)
        rec.workspace = ws
        rec.call = PetscCall(self.trap, self.reducer, lambda: (clock.user(ws.ts.getTime()), ws.ts.getStepNumber()))
        rec.plan = self._plan = _ckpt.plan(self.checkpoint, record, steps, s, self.source, ws.sizes.N, ws.sizes.n,
                                           self.method.stages, y0,
                                           store=self.graphs if ws.wiring.form == "rhs" else None)
        progress, store = self._attach(rec, ws, (dyn, dyn_ex), layout, steps, event)
        self._configure(ws, s, steps, rec.plan, ts_type, layout.dtype, record, interp)
        if interp:
            rec.capture = BoundaryCapture(s)
            rec.capture.start(y0)
        rhs = (lambda s_, u: dyn.rhs(s_, u) + dyn_ex.rhs(s_, u)) if dyn_ex is not None else dyn.rhs
        rms = global_rms(self.reducer, ws.sizes.N)
        dt = rec.call("initial step", lambda: steps.first_step(s, y0, self.trap.poisoned(rhs), rms))
        ws.ts.setTimeStep(dt)
        if event is not None:
            self._watch(ws.ts, event, steps)
        self._active = (rec, steps)
        if store is not None:
            store.begin(ws.ts, s[-1], self.method.stages)
        try:
            rec.call("forward solve", lambda: ws.ts.solve(ws.u))
        finally:
            self._active = None
            if store is not None:
                store.end(rec.step_times)
            if progress is not None:
                progress.close()
        ws.wiring.forget()
        self.step_times = torch.tensor([clock.user(x) for x in rec.step_times], dtype=torch.float64)
        self.stats.forward_done(ws.ts)
        if store is not None:
            self.stats.graphs(store.kept_steps, store.peak_bytes)
        if event is not None:  # the TS keeps its event handler: build a fresh one next time
            found = self._event_found(ws.ts, clock, steps)
            self.discard()
            return found
        start = y0 if ws.evaluations is None else None  # no evaluation times: outputs are start and end
        if rec.capture is None:
            ys, rec.segments = collect(ws.ts, s, times, clock, rec.step_times, self.reducer, steps.max_steps, start)
        else:
            ends, _ = collect(ws.ts, [s[0], s[-1]], [times[0], times[-1]], clock, rec.step_times, self.reducer,
                              steps.max_steps, start)
            ys, self.stencil = rec.capture.finish(self.step_times.tolist(), times, ends[-1])
            rec.segments, rec.capture = self.stencil.boundaries, None
        rec.plan.account(self.stats, self.stats["steps"], layout.numel)
        return ys, rec

    def _attach(self, rec, ws, fields, layout, steps, event):
        """What watches or shapes this solve besides PETSc: the step callbacks and
        progress bar (``rec.hooks``), the nudge of evaluations at jumps, the graph store.
        Returns ``(progress, store)`` (either may be None)."""
        clock = rec.clock
        progress = None
        if self.progress and event is None:
            progress = Progress(rec.s[-1] - rec.s[0], enabled=self.reducer.root)
        rec.hooks = StepHooks.of(self.func, not steps.fixed, layout, clock, progress, self.callback, self.stats)
        nudge = (Nudge(ws.ts, clock) if self.settings.grid.perturb
                 else Nudge(ws.ts, clock, rec.jumps) if rec.jumps else None)
        store = getattr(rec.plan, "store", None)  # a GraphPlan's: the forward keeps its stage graphs
        for d in fields:
            if d is not None:
                d.nudge, d.store = nudge, store
        return progress, store

    def _agree(self, layout, times, params, record):
        """Under MPI, what every rank must share (checked once per call, collectively):
        otherwise the ranks would wait in different collectives. A tensor that needs a
        gradient pnode would not compute (:attr:`unseen`) is an error on every rank, and
        so is an exception ``func`` raised while it was looked for."""
        facts = {} if self.comm.getSize() == 1 else {  # one rank agrees with itself: skip the work
            "len(t)": len(times), "t": tuple(times), "method": self.method.name,
            "gradient wanted": bool(record), "dtype": str(layout.dtype),
            "state shape (beyond dim 0)": tuple(tuple(sh[1:]) for sh in layout.shapes),
            "number of parameters": sum(p.numel() for p in params)}
        missing, error = self.unseen
        self.unseen = ([], None)
        flags = list(missing) + (["error"] if error is not None else [])
        flags, differ = self.reducer.agree(facts, flags)
        if error is not None:
            raise error
        if "error" in flags:
            raise SolverError("func raised an exception on another rank", reason="OTHER_RANK")
        if flags:
            raise ValueError(f"func uses {', '.join(flags)} that requires grad but is not among the tensors pnode "
                             "differentiates, so its gradient would be missing: pass adjoint_params=[...] listing "
                             "every tensor func uses that needs a gradient (pnode finds nn.Module parameters and "
                             "tensors reached through closures, globals, lists, tuples, dicts, partials and plain "
                             "objects' attributes)")
        if differ:
            raise ValueError(f"the MPI ranks disagree on {', '.join(differ)} (every rank must call the solver "
                             "with the same t, method, dtype and parameters, and each its own shard of y0)")

    def _workspace(self, layout, params, clock, n_out, form):
        """Dynamics for this call, and a workspace for its configuration (reused when
        the state sizes, form and number of output times match)."""
        fe = self.settings.func_explicit
        if form == "imex" and self.settings.implicit.mass is not None:
            raise ValueError("options['mass'] is not supported with ARKIMEX methods: PETSc's ARKIMEX "
                             "adjoint needs the identity mass; use implicit_euler, crank_nicolson or theta")
        if fe is not None and not self.method.explicit_part:
            raise ValueError(f"options['func_explicit'] is not supported by {self.method.name!r} (a purely implicit "
                             "method): use kencarp3/4/5 for an IMEX split")
        if form != "imex" and fe is not None:
            raise ValueError("options['func_explicit'] needs an IMEX method (kencarp3/4/5, arkimex), "
                             f"not TS type {self.source.get('ts_type') or self.method.ts_type!r}")
        dyn = Dynamics(self.func, layout, params, clock, self.stats, joint_vjp=(form == "rhs"), name="func")
        dyn_ex = None if fe is None else Dynamics(fe, layout, params, clock, self.stats, joint_vjp=False,
                                                  name="options['func_explicit']")
        sizes = Sizes(self.comm, layout.numel, sum(p.numel() for p in params), self.reducer)
        ws = self.workspace
        if ws is not None and ws.key == Workspace.key_of(sizes, form, n_out, layout, self.settings.implicit):
            ws.wiring.rebind(dyn, dyn_ex)
        else:
            self.discard()
            ws = self.workspace = Workspace(self.comm, self.source.prefix, sizes, form, n_out, dyn, dyn_ex,
                                            self.trap, self.reducer, self.settings.implicit, self._pre_step, self._post_step)
        return ws, dyn, dyn_ex

    def _configure(self, ws, s, steps, plan, ts_type, dtype, record, interpolate):
        """PETSc options (code defaults under the command line), trajectory, times ``s``
        (only the first and last when the solve ``interpolate``s)."""
        ts = ws.ts
        defaults = self.method.petsc_defaults(self.settings.implicit, ts_type, dtype, self.comm.getSize())
        defaults.update(steps.petsc_defaults())
        defaults.update(plan.petsc_defaults())
        user_atol = self.source.given("snes_atol")  # asked before the defaults enter the database
        with self.source.applied(defaults):
            plan.attach(ts)
            try:
                ts.setFromOptions()
            except PETSc.Error as err:
                raise ValueError(f"PETSc rejected an option value: {petsc_message(err)} (check petsc_options and "
                                 "the command line)") from None
            self.source.warn_unused(ts.getType())
            if record and not has_adjoint(ts.getType()):
                raise ValueError(
                    f"TS type {ts.getType()!r} has no discrete adjoint in PETSc, so no gradients: use one of "
                    f"{', '.join(adjoint_method_names())}, or call under torch.no_grad() for a forward-only "
                    "solve")
            ws.wiring.configure_pc(ts, scale_atol=not user_atol)
        ts.setTime(s[0])
        ts.setStepNumber(0)
        ts.setMaxTime(s[-1])
        times = [s[0], s[-1]] if interpolate else s
        if _evaluation_count(len(times)):
            ts.setEvaluationTimes(times)
            ws.evaluations = len(times)

    def _watch(self, ts, event, steps):
        """Stop the solve where ``event`` crosses zero (PETSc locates it to round-off in
        time by re-stepping with shorter steps)."""
        if steps.fixed and steps.grid_dt is None:
            raise ValueError("an event with a fixed-step method needs options['step_size'] (there is no end time "
                             "to divide into steps)")

        def indicator(ts_, s, U, fvalue):
            fvalue[0] = event(s, vec_view(U, "r"))
        ts.setEventHandler([0], [True], self.trap.wrap(indicator))
        ts.setEventTolerances(tol=1e-12)

    def _event_found(self, ts, clock, steps):
        if ts.getConvergedReason() != PETSc.TS.ConvergedReason.CONVERGED_EVENT:
            n, time = ts.getStepNumber(), clock.user(ts.getTime())
            why = (f"the event function did not cross zero within {n} steps (up to t={time:.6g}; raise "
                   "options['max_num_steps'] if it lies further)")
            if n >= steps.max_steps:  # torchdiffeq's wording and type, which programs test for
                raise MaxStepsError.exceeded(n, steps.max_steps, why, reason="NO_EVENT", time=time)
            raise SolverError(why, reason="NO_EVENT", time=time, steps=n)
        return clock.user(ts.getTime()), vec_view(ts.getSolution(), "r").clone()

    def _pre_step(self, ts):
        if self._active is not None and self._active[0].hooks is not None:
            self._active[0].hooks.before_step(ts)

    def _post_step(self, ts):
        if self._active is None:  # the adjoint re-taking a forward step from a checkpoint
            self.stats.recomputed(1)
            return
        rec, steps = self._active
        rec.step_times.append(ts.getTime())
        jumps = [rec.clock.solver(x) for x in rec.jumps]
        if self.settings.grid.perturb or (jumps and hits(ts.getTime(), jumps)):
            ts.restartStep()  # func jumps here: a first-same-as-last stage must not be reused
        if rec.hooks is not None:
            rec.hooks.after_step(ts, rec.step_times[-1] - rec.step_times[-2])
        steps.after_step(ts)
        rec.plan.on_step(ts.getStepNumber(), vec_view(ts.getSolution(), "r"))
        if rec.capture is not None:
            rec.capture.on_step(ts.getStepNumber(), ts.getTime(), vec_view(ts.getSolution(), "r"))

    def rates(self, layout, times, ys):
        """``dy/dt`` (``func`` plus ``func_explicit``) at user times ``times`` and flat
        float64 states ``ys`` (one row each), without a graph; float64 ``(len(times), n)``."""
        identity = Clock(0.0, 1.0)
        fields = [Dynamics(f, layout, [], identity, self.stats, name=name)
                  for f, name in ((self.func, "func"), (self.settings.func_explicit, "options['func_explicit']"))
                  if f is not None]
        return torch.stack([sum(d.rhs(float(t), y) for d in fields) for t, y in zip(times, ys)])

    # ------------------------------------------------------------------ backward
    def holds(self, rec):
        """Whether ``rec``'s forward is still recorded (no later call replaced it)."""
        return rec.trivial or (rec.run == self._run and rec.plan.valid)

    def backward(self, rec, grad_ys):
        """The adjoint of the recorded forward call ``rec`` (see :func:`pnode.adjoint.sweep`);
        the recording is freed afterwards, whatever happens."""
        try:
            return sweep(rec, grad_ys, self.stats, self.reducer)
        except BaseException:
            self.discard()
            raise
        finally:
            rec.plan.release()

    # ------------------------------------------------------------------ cleanup
    def release(self):
        """Free the last call's trajectory or checkpoints."""
        if self._plan is not None:
            self._plan.release()
            self._plan = None

    def discard(self):
        """Destroy the PETSc objects (the next call builds new ones)."""
        self.release()
        if self.workspace is not None:
            self.workspace.destroy()
            self.workspace = None


def _evaluation_count(landings):
    """How many evaluation times PETSc is given for a solve landing on ``landings`` times:
    none when only the first and last matter (the last is the TS's end time).

    PETSc's evaluation times make ``TSAdaptChoose`` remember a step it cut short to land on
    one of them and propose it again whenever the controller next wants to grow the step,
    until a step goes through uncut; a rejection does not clear it. So after rejections it
    undoes the reduction: on a stability-limited dopri5 solve (the 2-D reaction-diffusion
    field of ``benchmarks/stiff_pde.py``) 12 of 40 steps were rejected in a cycle of "accept
    a short step, jump back to the remembered long one, fail twice". Without evaluation
    times PETSc still lands on the end time (``MATCHSTEP``) and remembers nothing. With
    inner output times the memory remains (PETSc offers no way to clear it)."""
    return 0 if landings <= 2 else landings

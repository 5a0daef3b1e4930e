"""ODESolver: one PETSc TS, reused across calls, with a differentiable ``__call__``.

Forward: PETSc integrates the flattened state, stepping exactly onto every output time
(``TSSetEvaluationTimes`` with ``MATCHSTEP``) and recording the trajectory the adjoint
needs. Backward: PETSc's discrete adjoint (``TSAdjointSolve``) runs one output interval at
a time, and the loss gradient at each output time is added to the adjoint state between
intervals. The gradients are those of the computed discrete solution.
"""
import math
import os
import shutil
import tempfile
import weakref

import torch
from petsc4py import PETSc

from . import checkpoint as _ckpt
from .bridge import PETSC_DTYPE, StateLayout, vec_view, vec_write
from .dynamics import Dynamics
from .errors import CallbackTrap, SolverError, petsc_message
from .methods import ADJOINT_TYPES, METHODS, get_method
from .options import option_defaults, user_value
from .parallel import Reducer, as_petsc
from .replay import OnlineCheckpoints, Replay, fits_fixed_grid
from .validate import check_options, check_t, check_tolerance
from .wiring import MassMatrix, Sizes, Wiring, form_of, new_vec

_LIVE = weakref.WeakSet()  # solvers to close at interpreter exit (see close_all)


class _RevolveOwner:
    """PETSc's revolve keeps one schedule per process (a global-state C API), and
    destroying any trajectory that used it resets it. So at most one solver holds a
    revolve trajectory at a time: a new one takes over, the previous holder drops its
    trajectory (its next backward re-solves first), and no stale trajectory is left for
    the garbage collector to reset the schedule in the middle of another adjoint."""

    holder = None

    @classmethod
    def take(cls, solver):
        prev = cls.holder() if cls.holder is not None else None
        if prev is not None and prev is not solver:
            prev._drop_trajectory()
        cls.holder = weakref.ref(solver)


_STAT_KEYS = ("steps", "rejected_steps", "rhs_evals", "jvp_evals", "vjp_evals",
              "newton_iterations", "linear_iterations", "adjoint_steps",
              "recomputed_steps", "checkpoints", "checkpoint_bytes")


def _reason_name(reason):
    for name in dir(PETSc.TS.ConvergedReason):
        if not name.startswith("_") and getattr(PETSc.TS.ConvergedReason, name) == reason:
            return name
    return str(reason)


class ODESolver:
    """A reusable, differentiable ODE solve ``ys = solver(y0, t)``.

    Args:
        func: ``nn.Module`` or callable ``func(t, y) -> dy/dt`` (same layout as ``y``).
        method: integrator name (see :mod:`pnode.methods`; default ``dopri5``).
        rtol, atol: tolerances of adaptive step control (ignored for fixed steps).
        options: dict; ``step_size`` (fixed steps), ``first_step``, ``max_num_steps``,
            and for implicit methods ``theta``, ``endpoint``, ``func_explicit`` (IMEX:
            the explicit part), ``mass`` (``M`` in ``M y' = f``), ``jacobian="dense"``
            (assemble ``shift*M - J`` for LU instead of matrix-free Newton-Krylov) and
            ``preconditioner`` (``prec(t, y, shift, r, transpose) -> z`` approximating
            ``(shift*M - J)^{-1} r``, or its transpose).
        checkpoint: a :class:`pnode.Checkpoint`, a strategy name, or None (store all).
        petsc_options: dict of PETSc options (without the dash) used as defaults under
            this solver's prefix, e.g. ``{"ts_monitor": None}``.
        prefix: PETSc options prefix (``"enc_"`` reads ``-enc_ts_type``).
        comm: MPI communicator (default ``COMM_SELF``).
        adjoint_params: tensors to differentiate with respect to (default: the
            parameters of ``func`` and ``options["func_explicit"]``).

    Attributes:
        stats: dict of counters from the last forward (and backward) pass: ``steps``,
            ``rejected_steps``, ``rhs_evals``, ``jvp_evals``, ``vjp_evals``,
            ``newton_iterations``, ``linear_iterations``, ``adjoint_steps``,
            ``recomputed_steps``, ``checkpoints`` (most states held at once),
            ``checkpoint_bytes``.
        step_times: 1-D float64 tensor of the accepted step boundaries of the last
            solve, from ``t[0]`` to ``t[-1]`` inclusive (user time units).
    """

    def __init__(self, func, *, method=None, rtol=1e-7, atol=1e-9, options=None,
                 checkpoint=None, petsc_options=None, prefix=None, comm=None,
                 adjoint_params=None):
        if not callable(func):
            raise TypeError("func must be callable: func(t, y) -> dy/dt")
        self.func = func
        self.method = get_method(method)
        self.rtol = check_tolerance(rtol, "rtol")
        self.atol = check_tolerance(atol, "atol")
        self.options = check_options(options, self.method)
        self.checkpoint = _ckpt.coerce(checkpoint)
        if petsc_options is not None and not isinstance(petsc_options, dict):
            raise TypeError("petsc_options must be a dict like {'ts_monitor': None}")
        self.petsc_options = dict(petsc_options or {})
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError("prefix must be a string")
        self.prefix = prefix
        self.comm = as_petsc(comm)
        self._reducer = Reducer(self.comm)
        self._adjoint_params = None if adjoint_params is None else list(adjoint_params)
        self.stats = dict.fromkeys(_STAT_KEYS, 0)
        self.step_times = torch.zeros(0, dtype=torch.float64)
        self._ts = None
        self._wiring = None
        self._config = None
        self._run = 0
        self._recording = False
        self._replay = False
        self._fixed_dt = None
        self._online = None
        self._disk_dir = None
        self._trap = CallbackTrap(collective=self.comm.getSize() > 1)
        _LIVE.add(self)

    # ------------------------------------------------------------------ public API
    def __call__(self, y0, t):
        """Solve from ``y0`` at ``t[0]`` and return the states at every ``t[k]``.

        Args:
            y0: Tensor of any shape, or tuple of Tensors (float32/float64).
            t: strictly monotone 1-D tensor (or sequence) of output times.

        Returns:
            Tensor of shape ``(len(t), *y0.shape)`` (a tuple of such for tuple ``y0``),
            differentiable with respect to ``y0`` and the parameters.
        """
        from .adjoint import solve

        layout = StateLayout.of(y0)
        times = check_t(t)
        return solve(self, layout, y0, times)

    @property
    def params(self):
        """Tensors that receive gradients (requires_grad ones only)."""
        if self._adjoint_params is not None:
            ps = self._adjoint_params
        else:
            ps = []
            for m in (self.func, self.options.get("func_explicit")):
                if isinstance(m, torch.nn.Module):
                    ps.extend(m.parameters())
        seen, out = set(), []
        for p in ps:
            if isinstance(p, torch.Tensor) and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    @property
    def petsc_ts(self):
        """The PETSc ``TS`` of the last solve (None before the first): for inspecting
        what PETSc chose (``solver.petsc_ts.getType()``); pnode owns and destroys it."""
        return self._ts

    def close(self):
        """Destroy the PETSc objects now (also done by ``with`` and at exit)."""
        if getattr(self, "_wiring", None) is not None:
            self._wiring.forget()
            self._wiring.destroy()
            self._wiring = None
        for name in ("_ts", "_u", "_lam", "_mu"):
            obj = getattr(self, name, None)
            if obj is not None:
                obj.destroy()
            setattr(self, name, None)
        self._config = None
        if getattr(self, "_disk_dir", None) is not None:
            self._cleanup_disk()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ PETSc setup
    def _effective_type(self):
        """The TS type that will run: command line, then petsc_options, then the method."""
        return (user_value(self.prefix, "ts_type") or self.petsc_options.get("ts_type")
                or self.method.ts_type)

    def _setup(self, layout, params, time_sign, n_out):
        """Create (or reuse) the TS and its wiring for this state size, TS type and
        number of output times (PETSc 3.26's TSSetEvaluationTimes frees, and does not
        reallocate, its arrays when the count changes: a new count needs a new TS)."""
        n, n_p = layout.numel, sum(p.numel() for p in params)
        ts_type = self._effective_type()
        form = form_of(ts_type)
        opts = self.options
        if form == "imex" and "mass" in opts:
            raise ValueError("options['mass'] is not supported with ARKIMEX methods: PETSc's ARKIMEX "
                             "adjoint needs the identity mass; use implicit_euler, crank_nicolson or theta")
        if form != "imex" and opts.get("func_explicit") is not None:
            raise ValueError("options['func_explicit'] needs an IMEX method (kencarp3/4/5, arkimex), "
                             f"not TS type {ts_type!r}")
        self.stats = dict.fromkeys(_STAT_KEYS, 0)
        self._dyn = Dynamics(self.func, layout, params, time_sign, self.stats,
                             joint_vjp=(form == "rhs"), name="func")
        dyn_ex = None
        if opts.get("func_explicit") is not None:
            dyn_ex = Dynamics(opts["func_explicit"], layout, params, time_sign, self.stats,
                              joint_vjp=False, name="options['func_explicit']")
        self._dyn_ex = dyn_ex
        sizes = Sizes(self.comm, n, n_p, self._reducer)
        config = (sizes.key(), form, n_out)
        if self._ts is not None and self._config == config:
            self._wiring.rebind(self._dyn, dyn_ex)
            return
        self.close()
        comm = self.comm
        self._sizes = sizes
        self._u = new_vec(comm, *sizes.state)
        self._lam = self._u.duplicate()
        self._mu = new_vec(comm, *sizes.params) if n_p else None
        ts = PETSc.TS().create(comm=comm)
        if self.prefix:
            ts.setOptionsPrefix(self.prefix)
        ts.setProblemType(PETSc.TS.ProblemType.NONLINEAR)
        mass = MassMatrix(opts["mass"], layout) if "mass" in opts else None
        self._wiring = Wiring(ts, form, sizes, self._reducer, self._dyn, dyn_ex, self._trap, mass=mass,
                              dense=opts.get("jacobian") == "dense",
                              preconditioner=opts.get("preconditioner"))
        ts.setPostStep(self._trap.wrap(self._post_step))
        ts.setExactFinalTime(PETSc.TS.ExactFinalTime.MATCHSTEP)
        self._ts = ts
        self._config = config

    def _defaults(self):
        """The code-level option defaults of this solver (command line wins)."""
        m = self.method
        opts = {"ts_type": m.ts_type, "ts_rtol": self.rtol, "ts_atol": self.atol}
        if "max_num_steps" in self.options:
            opts["ts_max_steps"] = self.options["max_num_steps"]
        if m.subtype is not None:
            opts[f"ts_{m.ts_type}_type"] = m.subtype
        if m.ts_type == "theta" and self._effective_type() == "theta":
            opts["ts_theta_theta"] = self.options.get("theta", 0.5)
            opts["ts_theta_endpoint"] = bool(self.options.get("endpoint", False))
        fixed = "step_size" in self.options or not m.adaptive
        opts["ts_adapt_type"] = "none" if fixed else "basic"
        if m.implicit:
            # Tight nonlinear and linear solves: the adjoint is exact for the solution the
            # Newton iteration returns, so let that be the discrete solution to round-off
            # (to what a float32 model can resolve, for float32 models).
            if self._dyn.layout.dtype == torch.float32:
                opts.update(snes_rtol=1e-5, snes_atol=1e-6, snes_stol=1e-8, ksp_rtol=1e-6, ksp_atol=1e-8)
            else:
                opts.update(snes_rtol=1e-10, snes_atol=1e-12, snes_stol=1e-14, ksp_rtol=1e-12,
                            ksp_atol=1e-14)
            opts["snes_max_it"] = 50
            if self.options.get("jacobian") == "dense":
                opts.update(ksp_type="preonly", pc_type="lu")
            else:
                opts.update(ksp_type="gmres", pc_type="none", ksp_gmres_restart=100)
        opts.update({k: v for k, v in self.petsc_options.items() if not k.startswith("ts_trajectory_")})
        return opts

    def _trajectory_defaults(self):
        """Trajectory options. PETSc reads them without the solver's prefix (its
        TSTrajectory has none), so they are set, and overridden, as plain -ts_trajectory_*."""
        opts = {"ts_trajectory_type": "memory"}
        ck = self.checkpoint
        if ck.strategy == "solution":
            opts["ts_trajectory_solution_only"] = True
        elif ck.strategy == "binomial":
            opts["ts_trajectory_max_cps_ram"] = ck.ram_slots(self._sizes.N, self.method.stages)
            if ck.max_disk:
                opts["ts_trajectory_max_cps_disk"] = ck.max_disk
                opts["ts_trajectory_dirname"] = self._disk_dir
        opts.update({k: v for k, v in self.petsc_options.items() if k.startswith("ts_trajectory_")})
        return opts

    @staticmethod
    def _uses_revolve(traj):
        limits = ("ts_trajectory_max_cps_ram", "ts_trajectory_max_cps_disk",
                  "ts_trajectory_max_units_ram", "ts_trajectory_max_units_disk")
        return any(k in traj or user_value(None, k) is not None for k in limits)

    def _drop_trajectory(self):
        """Give up the recorded trajectory or checkpoints (a later backward re-solves)."""
        if self._ts is not None:
            self._ts.removeTrajectory()
        self._online = None
        self._record = False

    def _uses_replay(self, s, dt_option):
        """Binomial checkpointing that PETSc's revolve cannot bound (adaptive steps, or
        fixed steps off the output grid) runs through :mod:`pnode.replay`."""
        if self.checkpoint.strategy != "binomial":
            return False
        adapt = user_value(self.prefix, "ts_adapt_type") or self.petsc_options.get("ts_adapt_type")
        fixed = ("step_size" in self.options or not self.method.adaptive) if adapt is None else adapt == "none"
        dt = float(dt_option) if dt_option is not None else self.options.get("step_size")
        if fixed and dt is not None and fits_fixed_grid(s, dt):
            return False
        if self.checkpoint.max_disk:
            raise ValueError("Checkpoint max_disk needs fixed steps (options['step_size']) on which every "
                             "output time lies; adaptive solves keep their checkpoints in RAM (max_ram)")
        return True

    def _check_adjoint(self, ts, record):
        """Refuse gradient solves with a TS type that has no discrete adjoint."""
        if record and ts.getType() not in ADJOINT_TYPES:
            raise ValueError(
                f"TS type {ts.getType()!r} has no discrete adjoint in PETSc, so no gradients: use one of "
                f"{', '.join(sorted(m.name for m in METHODS.values() if m.adjoint))}, or call under "
                f"torch.no_grad() for a forward-only solve")

    # ------------------------------------------------------------------ callbacks
    def _post_step(self, ts):
        if self._recording:
            self._times.append(ts.getTime())
            if self._fixed_dt is not None:
                self._next_fixed_step(ts)
            if self._online is not None:
                self._online.offer(ts.getStepNumber(), vec_view(ts.getSolution(), "r"))
        else:  # the adjoint re-taking a forward step from a checkpoint
            self.stats["recomputed_steps"] += 1

    def _next_fixed_step(self, ts):
        """With fixed steps, PETSc keeps a step that was shortened to land on an output
        time; take the full step again, shortened only to land on the next output time."""
        t = ts.getTime()
        nxt = next((x for x in self._s if x > t), None)
        if nxt is not None:
            gap = nxt - t
            h = self._fixed_dt
            ts.setTimeStep(gap if h >= gap or abs(h - gap) <= 1e-12 * abs(gap) else h)

    def _run_petsc(self, what, fn):
        """Call a PETSc driver; re-raise a callback's exception unchanged.

        Under MPI the outcome is agreed on by all ranks, so a failure on one rank is an
        error on every rank (the failing rank raises the original exception).
        """
        self._trap.pop()
        err = None
        try:
            fn()
        except PETSc.Error as e:
            err = e
        exc = self._trap.pop()
        if not self._reducer.any(exc is not None or err is not None):
            return
        if exc is not None:
            raise exc.with_traceback(exc.__traceback__)
        ts = self._ts
        time, steps = self._user_time(ts.getTime()), ts.getStepNumber()
        if err is None:
            raise SolverError(f"PETSc {what} failed on another rank at t={time:.6g}",
                              reason="OTHER_RANK", time=time, steps=steps)
        code = getattr(err, "ierr", None)
        reason = "NAN" if code == 72 else f"PETSC_ERROR_{code}"
        raise SolverError(f"PETSc {what} failed at t={time:.6g} after {steps} steps: "
                          f"{petsc_message(err)}", reason=reason, time=time, steps=steps) from None

    def _user_time(self, s):
        return self._dyn.time_sign * s

    # ------------------------------------------------------------------ forward
    def _initial_step(self, s, y0):
        """Hairer-Norsett-Wanner's starting step for adaptive methods."""
        span = s[-1] - s[0]
        f = self._rhs_total
        red, count = self._reducer, self._sizes.N

        def rms(x):  # global RMS norm: every rank must choose the same step
            return math.sqrt(red.sum(float(x.pow(2).sum())) / count)
        f0 = f(s[0], y0)
        scale = self.atol + self.rtol * y0.abs()
        d0, d1 = rms(y0 / scale), rms(f0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        f1 = f(s[0] + h0, y0 + h0 * f0)
        d2 = rms((f1 - f0) / scale) / h0
        if d2 <= 1e-15 and float(d1) <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(float(d1), d2)) ** (1.0 / (self.method.order + 1))
        return min(100 * h0, h1, span)

    def _rhs_total(self, s, u):
        """f (plus the explicit part of an IMEX split) without a graph, float64."""
        out = self._dyn.rhs(s, u)
        if self._dyn_ex is not None:
            out = out + self._dyn_ex.rhs(s, u)
        return out

    def forward(self, layout, y0_flat, times, record):
        """Integrate; return the (len(t), n) float64 outputs. ``record`` keeps what the
        adjoint needs (a PETSc trajectory, or pnode's own checkpoints)."""
        sign = 1.0 if len(times) < 2 or times[-1] > times[0] else -1.0
        s = [sign * x for x in times]
        self._setup(layout, self.params, sign, len(s))
        ts, u = self._ts, self._u
        y0 = y0_flat.detach().to(PETSC_DTYPE)
        vec_write(u, y0)
        self._run += 1
        self._record = record
        self._times = [s[0]]
        self._s = s
        if len(s) == 1:
            return y0.reshape(1, -1).clone()
        trajectory = self._configure(s, y0, record)
        self._recording = True
        try:
            self._run_petsc("forward solve", lambda: ts.solve(u))
        except BaseException:
            # a solve that failed half-way leaves PETSc's work vectors checked out:
            # start the next call from fresh objects
            self.close()
            raise
        finally:
            self._recording = False
        self._wiring.forget()
        ys = self._outputs(s, times, sign)
        if trajectory:
            self._account_checkpoints(layout.numel)
        return ys

    def _configure(self, s, y0, record):
        """Options, checkpointing mode and per-solve settings; returns whether a PETSc
        trajectory records the forward sweep."""
        ts = self._ts
        self._cleanup_disk()
        dt_option = (user_value(self.prefix, "ts_time_step") or user_value(self.prefix, "ts_dt")
                     or self.petsc_options.get("ts_time_step") or self.petsc_options.get("ts_dt"))
        self._replay = record and self._uses_replay(s, dt_option)
        trajectory = record and not self._replay
        if trajectory and self.checkpoint.max_disk:
            # PETSc creates the directory it writes to; it lives inside one of ours
            self._disk_root = tempfile.mkdtemp(prefix="pnode-ckpt-", dir=self.checkpoint.disk_dir)
            self._disk_dir = os.path.join(self._disk_root, "trajectory")
        self._online = None
        if self._replay:
            self._slots = self.checkpoint.ram_slots(self._sizes.N, 0)  # states only; same K on every rank
            self._online = OnlineCheckpoints(self._slots)
            self._online.offer(0, y0)
        traj = self._trajectory_defaults() if trajectory else {}
        if trajectory and self._uses_revolve(traj):
            _RevolveOwner.take(self)
        with option_defaults(self.prefix, self._defaults()), option_defaults(None, traj):
            ts.removeTrajectory()
            if trajectory:
                ts.setSaveTrajectory()
            ts.setFromOptions()
            self._check_adjoint(ts, record)
            self._wiring.configure_pc(ts)
        ts.setTime(s[0])
        ts.setStepNumber(0)
        ts.setMaxTime(s[-1])
        ts.setEvaluationTimes(s)
        dt = self._first_dt(s, y0, dt_option)
        ts.setTimeStep(dt)
        adapt = (user_value(self.prefix, "ts_adapt_type") or self.petsc_options.get("ts_adapt_type")
                 or self._defaults()["ts_adapt_type"])
        self._fixed_dt = dt if adapt == "none" else None
        return trajectory

    def _outputs(self, s, times, sign):
        """Statistics, step times and the states at the output times of a finished solve."""
        ts = self._ts
        st = self.stats
        st["steps"] = ts.getStepNumber()
        st["rejected_steps"] = ts.getStepRejections()
        st["newton_iterations"] = ts.getSNESIterations()
        st["linear_iterations"] = ts.getKSPIterations()
        self.step_times = torch.tensor([sign * x for x in self._times], dtype=torch.float64)
        time, steps = sign * ts.getTime(), ts.getStepNumber()
        reason = ts.getConvergedReason()
        if reason < 0:
            raise SolverError(f"PETSc forward solve failed ({_reason_name(reason)}) at t={time:.6g} "
                              f"after {steps} steps", reason=_reason_name(reason), time=time, steps=steps)
        sol_times, sols = ts.getEvaluationSolutions()
        if len(sols) != len(s):
            limit = self.options.get("max_num_steps")
            why = (f"max_num_steps={limit} reached" if limit and steps >= limit
                   else f"{len(sols)} of {len(s)} output times reached")
            raise SolverError(f"PETSc forward solve stopped at t={time:.6g} before t[-1]={times[-1]:.6g}: "
                              f"{why}", reason="MAX_STEPS" if limit else "INCOMPLETE", time=time, steps=steps)
        ys = torch.stack([vec_view(v, "r").clone() for v in sols])
        if self._reducer.any(not bool(torch.isfinite(ys).all())):
            raise SolverError(f"the solution is not finite (NaN/Inf) by t={times[-1]:.6g}",
                              reason="NAN", time=time, steps=steps)
        # PETSc records an output at the step that reached it up to its tolerance (~1e-15
        # relative): locate the steps by the times it actually reached
        step_of = {x: k for k, x in enumerate(self._times)}
        self._segments = [step_of[float(x)] for x in sol_times]
        return ys

    def _cleanup_disk(self):
        """Remove the disk checkpoints of the last solve (they are ours alone)."""
        if self._disk_dir is not None:
            shutil.rmtree(self._disk_root, ignore_errors=True)
            self._disk_dir = self._disk_root = None

    def _first_dt(self, s, y0, dt_option):
        # -ts_time_step (command line or petsc_options) wins over the code's settings
        if dt_option is not None:
            return float(dt_option)
        if "step_size" in self.options:
            return float(self.options["step_size"])
        if "first_step" in self.options:
            return float(self.options["first_step"])
        if not self.method.adaptive:
            return s[-1] - s[0]  # one step per output interval, as torchdiffeq does
        return self._initial_step(s, y0)

    def _account_checkpoints(self, n):
        st, ck = self.stats, self.checkpoint
        steps, stages = st["steps"], self.method.stages
        if ck.strategy == "all":
            held, per = steps + 1, (stages + 1)
        elif ck.strategy == "solution":
            held, per = steps + 1, 1
        else:
            held, per = min(steps + 1, ck.ram_slots(self._sizes.N, stages)), (stages + 1)
        st["checkpoints"] = held
        st["checkpoint_bytes"] = held * per * n * 8

    # ------------------------------------------------------------------ backward
    def backward(self, grad_ys):
        """Adjoint of the last forward solve.

        Args:
            grad_ys: (len(t), n) float64 gradient of the loss w.r.t. each output.

        Returns:
            (grad_y0, grad_params): flat float64 tensors.
        """
        ts, lam, mu = self._ts, self._lam, self._mu
        g = grad_ys.detach().to(PETSC_DTYPE)
        if len(self._s) == 1:
            return g[0].clone(), torch.zeros(0 if mu is None else self._sizes.n_p, dtype=PETSC_DTYPE)
        vec_write(lam, g[-1])
        if mu is not None:
            mu.zeroEntries()

        def add_forcing(k):  # loss gradient at output time k joins the adjoint state
            if g[k].any():
                view = vec_view(lam, "rw")
                view += g[k].to(view.device)
                lam.stateIncrease()
        try:
            if self._replay:
                ts.setSaveTrajectory()  # TSAdjointStep needs one attached; it stays empty
                ts.setCostGradients([lam], [mu] if mu is not None else None)
                output_at = {step: k for k, step in enumerate(self._segments[:-1])}
                replay = Replay(ts, self._u, self._times, self._online, self._slots,
                                lambda n: add_forcing(output_at[n]) if n in output_at else None,
                                self._run_petsc)
                peak = replay.backward()
                self.stats["checkpoints"] = peak
                self.stats["recomputed_steps"] = replay.recomputed
                self.stats["checkpoint_bytes"] = peak * self._sizes.n * 8
                adj = len(self._times) - 1
            else:
                ts.setCostGradients([lam], [mu] if mu is not None else None)
                adj = 0
                for k in range(len(self._s) - 1, 0, -1):
                    steps = self._segments[k] - self._segments[k - 1]
                    ts.adjointSetSteps(steps)
                    self._run_petsc("adjoint solve", ts.adjointSolve)
                    adj += steps
                    add_forcing(k - 1)
        except BaseException:
            self.close()
            raise
        finally:
            self._cleanup_disk()
        self._wiring.forget()
        st = self.stats
        st["adjoint_steps"] = adj
        st["newton_iterations"] += ts.getSNESIterations()
        st["linear_iterations"] += ts.getKSPIterations()
        grad_y0 = vec_view(lam, "r").clone()
        if mu is None:
            return grad_y0, torch.zeros(0, dtype=PETSC_DTYPE)
        # the parameter gradient lives on rank 0; every rank gets it
        grad_p = vec_view(mu, "r").clone() if self.comm.getRank() == 0 else \
            torch.zeros(self._sizes.n_p, dtype=PETSC_DTYPE)
        return grad_y0, self._reducer.broadcast(grad_p)


def close_all():
    """Close every live solver (registered with atexit by pnode)."""
    for solver in list(_LIVE):
        solver.close()

"""PNODE v1.1's interface, ``from pnode import petsc_adjoint``, as a thin layer on
:class:`pnode.ODESolver`.

pnode shares its package name with PNODE (caidao22/pnode), whose programs write::

    ode = petsc_adjoint.ODEPetsc()
    ode.setupTS(y0, func, step_size=0.01, method="dopri5", implicit_form=False, ...)
    ys = ode.odeint_adjoint(y0, t)    # or ode.odeint(y0, t) without gradients

Those programs run unchanged on pnode: ``setupTS`` builds an ``ODESolver`` with PNODE's
settings and its defaults (PETSc's tolerances ``1e-4``; PETSc command-line options such as
``-ts_adapt_type none`` or ``-ts_trajectory_type memory`` still apply). New code should use
:func:`pnode.odeint` or :class:`pnode.ODESolver` directly (``docs/guides/from_pnode.md``):
they add the tolerances, checkpointing, events and statistics this interface has no words
for. The solver of the last ``setupTS`` is ``ode.solver``.
"""
import torch

from .solver import ODESolver

# PNODE's method names and pnode's.
_METHODS = {"euler": "euler", "rk2": "midpoint", "bosh3": "bosh3", "fixed_bosh3": "bosh3", "rk4": "rk4",
            "dopri5": "dopri5", "fixed_dopri5": "dopri5", "beuler": "implicit_euler", "cn": "crank_nicolson",
            "imex": "arkimex"}
_PETSC_TOLERANCE = 1e-4  # PETSc's default ts_rtol and ts_atol, which PNODE never changes
_LINEAR_SOLVERS = ("petsc", "hpddm", "torch")


class ODEPetsc:
    """PNODE's solver object: :meth:`setupTS` once (again to change anything), then
    :meth:`odeint_adjoint` (differentiable) or :meth:`odeint` (no gradients).

    Attributes:
        solver: the :class:`pnode.ODESolver` built by the last :meth:`setupTS` (None
            before), for its ``stats``, ``step_times`` and ``petsc_ts``.
    """

    def __init__(self):
        self.solver = None
        self._module = False

    def setupTS(self, u_tensor, func, step_size=0.01, enable_adjoint=True, implicit_form=False, use_dlpack=True,
                method="dopri5", mass=None, imex_form=False, func2=None, batch_size=1, linear_solver="petsc",
                fixed_jacobian=False, matrixfree_jacobian=True):
        """Set up the solver (PNODE's signature and defaults).

        Args:
            u_tensor: a state like those to be solved (its values are not used).
            func: the vector field ``func(t, u)`` (an ``nn.Module`` for
                :meth:`odeint_adjoint`); with ``imex_form`` its stiff part.
            step_size: a float: the first step of an adaptive method (``dopri5``,
                ``bosh3``, ``imex``; fixed steps of that size with ``-ts_adapt_type none``)
                or the fixed step of the others; a list: the size of each step from
                ``t[0]`` (pnode lands on those times and on the output times).
            enable_adjoint: PNODE's switch for keeping a trajectory; pnode keeps one
                exactly when a gradient is wanted, so it has no effect.
            implicit_form: PNODE's choice of PETSc's IFunction over its RHSFunction; pnode
                picks the form from the method, so it has no effect on the solution.
            use_dlpack: accepted (pnode always shares memory through DLPack).
            method: ``euler``, ``rk2`` (explicit midpoint), ``bosh3``, ``rk4``, ``dopri5``,
                ``beuler`` (backward Euler), ``cn`` (Crank-Nicolson) or ``imex`` (ARKIMEX);
                ``-ts_type`` on the command line overrides it, as in PNODE.
            mass: the mass matrix ``M`` of ``M du/dt = func(t, u)`` (a tensor).
            imex_form, func2: ``du/dt = func(t, u) + func2(t, u)`` with ``func`` implicit
                and ``func2`` explicit.
            batch_size, linear_solver, fixed_jacobian, matrixfree_jacobian: PNODE's linear
                solver choices ("petsc", "hpddm", "torch"); accepted, and pnode uses its
                own: per-sample block Jacobians factored by LU where the field allows,
                matrix-free Newton-Krylov otherwise (``ODESolver``'s ``jacobian`` option).
        """
        if imex_form and func2 is None:
            raise ValueError("func2 must be provided to enable imex_form=True")
        if method not in _METHODS:
            raise ValueError(f"method must be one of {sorted(_METHODS)} (PNODE's names), got {method!r}; "
                             "pnode.ODESolver offers more (pnode.METHODS)")
        if linear_solver not in _LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {_LINEAR_SOLVERS}, got {linear_solver!r}")
        name = _METHODS[method]
        options = {}
        if isinstance(step_size, (list, tuple)):
            options["grid_constructor"] = _StepList(step_size)
        elif name in ("dopri5", "bosh3", "arkimex"):
            options["first_step"] = float(step_size)
        else:
            options["step_size"] = float(step_size)
        if mass is not None:
            options["mass"] = mass
        if imex_form:
            options["func_explicit"] = func2
        if self.solver is not None:
            self.solver.close()
        self.solver = ODESolver(func, method=name, rtol=_PETSC_TOLERANCE, atol=_PETSC_TOLERANCE, options=options)
        self._module = isinstance(func, torch.nn.Module)

    def odeint(self, u0, t):
        """Solve without gradients: the states at every ``t`` (``t[0]`` the initial time;
        a single time ``t`` solves from 0 to it), shape ``(len(t), *u0.shape)``."""
        with torch.no_grad():
            return self._solve(u0, t)

    def odeint_adjoint(self, y0, t):
        """As :meth:`odeint`, differentiable with respect to ``y0`` and the parameters of
        ``func`` by PETSc's discrete adjoint (``func`` must be an ``nn.Module``, as in
        PNODE)."""
        if not self._module:
            raise ValueError("func is required to be an instance of nn.Module.")
        return self._solve(y0, t)

    def _solve(self, y0, t):
        if self.solver is None:
            raise RuntimeError("call setupTS(u_tensor, func, ...) before odeint")
        t = torch.as_tensor(t)
        if t.numel() == 1:  # PNODE: a single time is the end of [0, t]
            return self.solver(y0, torch.cat([torch.zeros_like(t.reshape(1)), t.reshape(1)]))[1:]
        return self.solver(y0, t)


class _StepList:
    """PNODE's list of step sizes as torchdiffeq's ``grid_constructor``: step ``k`` is
    ``steps[k]`` from ``t[0]``. Boundaries within PNODE's landing tolerance of an output
    time (1e-5, float32 1e-3, relative to the step) are left to the output time."""

    def __init__(self, steps):
        self.steps = [float(h) for h in steps]

    def __call__(self, func, y0, t):
        t64 = t.detach().to(torch.float64).reshape(-1)
        t0, t1 = float(t64[0]), float(t64[-1])
        sign = 1.0 if t1 > t0 else -1.0
        slack = 1e-3 if t.dtype == torch.float32 else 1e-5
        grid, s = [], t0
        for h in self.steps:
            s += sign * h
            if sign * (t1 - s) <= slack * h:
                break
            if min(abs(s - float(x)) for x in t64) > slack * h:
                grid.append(s)
        return torch.tensor([t0, *grid, t1], dtype=torch.float64)

"""The method registry: every integrator pnode knows, each declared once with its facts.

A :class:`Method` says which PETSc TS type and tableau it runs, which form of the ODE that
type needs (explicit right-hand side, implicit, or IMEX), which PETSc options it implies,
which nonlinear-solve defaults it wants, which entries of ``options`` it accepts and
whether PETSc has a discrete adjoint for it. The solver, the forms, option defaults and
validation all read these facts from here, so :func:`register` alone adds a method.
"""
import difflib
from dataclasses import dataclass
from typing import Optional

import torch

from . import runtime
from .tableaus import DIRK_TABLEAUS, TABLEAUS

# Keys of ``options`` every method accepts, and those only implicit methods accept.
COMMON_OPTIONS = ("step_size", "first_step", "max_num_steps", "min_step", "max_step", "step_t", "jump_t",
                  "perturb", "grid_constructor", "norm", "dtype", "interp", "interpolate")
IMPLICIT_OPTIONS = ("theta", "endpoint", "func_explicit", "mass", "jacobian", "preconditioner", "linear",
                    "sparsity")
OPTION_KEYS = COMMON_OPTIONS + IMPLICIT_OPTIONS

# PETSc TS types that take the explicit right-hand-side form although no registered
# method names them (reachable through -ts_type on the command line).
_EXPLICIT_PETSC_TYPES = {"euler", "ssp", "eimex", "mprk"}

# Newton and Krylov tolerances of implicit solves. The adjoint is exact for the solution
# the Newton iteration returns, so make that the discrete solution to round-off (to what a
# float32 model can resolve, for float32 models).
_NONLINEAR_TOLERANCES = {
    torch.float64: dict(snes_rtol=1e-10, snes_atol=1e-12, snes_stol=1e-14, ksp_rtol=1e-12, ksp_atol=1e-14),
    torch.float32: dict(snes_rtol=1e-5, snes_atol=1e-6, snes_stol=1e-8, ksp_rtol=1e-6, ksp_atol=1e-8),
}


@dataclass(frozen=True)
class Method:
    """One integrator.

    Attributes:
        name: user-facing name (``odeint(..., method=name)``).
        ts_type: PETSc TS type (``-ts_type``).
        subtype: tableau within the type (``-ts_rk_type`` / ``-ts_arkimex_type``), or None.
        order: order of accuracy.
        stages: number of stages (state-sized vectors per step kept by store-all).
        adaptive: has an embedded error estimator, so ``rtol``/``atol`` steer the steps.
        adjoint: PETSc implements TSAdjointStep for it (gradients possible).
        implicit: needs nonlinear solves (IFunction form).
        form: ``"rhs"`` (explicit RK), ``"implicit"`` (IFunction) or ``"imex"`` (ARKIMEX:
            implicit ``func`` plus an explicit ``options["func_explicit"]``).
        reference: where the tableau comes from.
    """

    name: str
    ts_type: str
    subtype: Optional[str]
    order: int
    stages: int
    adaptive: bool
    adjoint: bool = True
    implicit: bool = False
    form: str = "rhs"
    reference: str = ""
    fixed_theta: Optional[tuple] = None  # (theta, endpoint) a theta-family method is defined by
    explicit_part: bool = True  # an IMEX method that accepts options["func_explicit"]

    @property
    def option_keys(self):
        """The keys of ``options`` this method accepts."""
        if not self.implicit:
            return COMMON_OPTIONS
        if self.fixed_theta is not None:  # theta and endpoint are what the name means
            return tuple(k for k in OPTION_KEYS if k not in ("theta", "endpoint"))
        return OPTION_KEYS

    def petsc_defaults(self, implicit, ts_type, dtype, ranks=1):
        """PETSc options this method implies for one solve.

        Args:
            implicit: the solver's :class:`~pnode.settings.ImplicitSettings`.
            ts_type: the TS type that will run (the command line may have changed it).
            dtype: the model's dtype (float32 models get looser nonlinear tolerances).
            ranks: the state's communicator size (PETSc's own LU is sequential: the
                sparse Jacobian on several ranks gets block Jacobi, one LU per rank, exact
                since the samples, split over ranks, do not couple).
        """
        opts = {"ts_type": self.ts_type}
        if self.subtype is not None:
            opts[f"ts_{self.ts_type}_type"] = self.subtype
        if self.ts_type == "theta" and ts_type == "theta":
            theta, endpoint = self.fixed_theta or (implicit.theta, implicit.endpoint)
            opts["ts_theta_theta"] = theta
            opts["ts_theta_endpoint"] = bool(endpoint)
        if self.implicit:
            opts.update(_NONLINEAR_TOLERANCES[dtype], snes_max_it=50)
            if implicit.jacobian == "dense":
                opts.update(ksp_type="preonly", pc_type="lu")
            elif implicit.sparsity is not None:  # PETSc's PCs on the assembled sparse Jacobian
                opts.update(ksp_type="gmres", pc_type="lu", ksp_gmres_restart=100)
                if ranks > 1:
                    opts.update(pc_type="bjacobi", sub_pc_type="lu")
            else:
                opts.update(ksp_type="gmres", pc_type="none", ksp_gmres_restart=100)
            if implicit.linear:  # one linear solve is the exact Newton step
                opts.update(snes_type="ksponly")
        return opts


def _rk(name, subtype, order, stages, adaptive, reference):
    return Method(name, "rk", subtype, order, stages, adaptive, reference=reference)


def _implicit(name, ts_type, subtype, order, stages, adaptive, reference, adjoint=True, fixed_theta=None,
              explicit_part=True):
    form = "imex" if ts_type == "arkimex" else "implicit"
    return Method(name, ts_type, subtype, order, stages, adaptive, adjoint=adjoint, implicit=True,
                  form=form, reference=reference, fixed_theta=fixed_theta, explicit_part=explicit_part)


METHODS = {}
ALIASES = {}
DEFAULT_METHOD = "dopri5"


def register(method, *aliases):
    """Add ``method`` (a :class:`Method`) to the registry under its name and ``aliases``."""
    METHODS[method.name] = method
    for a in aliases:
        ALIASES[a] = method.name


for _m in [
    _rk("euler", "1fe", 1, 1, False, "forward Euler"),
    _rk("midpoint", "2b", 2, 2, False, "explicit midpoint"),
    _rk("heun2", "2a", 2, 2, False, "Heun's method (explicit trapezoid), fixed steps"),
    _rk("adaptive_heun", "adaptive_heun", 2, 2, True, TABLEAUS["adaptive_heun"].reference),
    _rk("fehlberg2", "fehlberg2", 2, 3, True, TABLEAUS["fehlberg2"].reference),
    _rk("heun3", "heun3", 3, 3, False, TABLEAUS["heun3"].reference),
    _rk("bosh3", "3bs", 3, 4, True, "Bogacki-Shampine 3(2), FSAL"),
    _rk("rk4", "4", 4, 4, False, "classical Runge-Kutta (1/6,1/3,1/3,1/6)"),
    _rk("rk4_38", "rk4_38", 4, 4, False, TABLEAUS["rk4_38"].reference),
    _rk("dopri5", "5dp", 5, 7, True, "Dormand-Prince 5(4), FSAL"),
    _rk("tsit5", "tsit5", 5, 7, True, TABLEAUS["tsit5"].reference),
    _rk("dopri8", "dopri8", 8, 13, True, TABLEAUS["dopri8"].reference),
    _rk("verner6", "6vr", 6, 9, True, "Verner 6(5) 'most efficient'"),
    _rk("verner7", "7vr", 7, 10, True, "Verner 7(6)"),
    _rk("verner8", "8vr", 8, 13, True, "Verner 8(7)"),
    _implicit("implicit_euler", "beuler", None, 1, 1, False, "backward Euler"),
    _implicit("crank_nicolson", "cn", None, 2, 2, False, "Crank-Nicolson (trapezoid; theta=0.5, endpoint)"),
    _implicit("theta", "theta", None, 2, 1, False,
              "theta method (options theta, endpoint; default 0.5 midpoint form)"),
    _implicit("implicit_midpoint", "theta", None, 2, 1, False, "implicit midpoint rule (theta 0.5, midpoint form)",
              fixed_theta=(0.5, False)),
    _implicit("kencarp3", "arkimex", "3", 3, 4, True, "Kennedy-Carpenter ARK3(2)4L[2]SA, IMEX"),
    _implicit("kencarp4", "arkimex", "4", 4, 6, True, "Kennedy-Carpenter ARK4(3)6L[2]SA, IMEX"),
    _implicit("kencarp5", "arkimex", "5", 5, 8, True, "Kennedy-Carpenter ARK5(4)8L[2]SA, IMEX"),
    _implicit("arkimex", "arkimex", None, 3, 4, True, "any PETSc ARKIMEX tableau (-ts_arkimex_type; default 3)"),
    _implicit("sdirk2", "arkimex", "sdirk2", 2, 2, False, DIRK_TABLEAUS["sdirk2"].reference, explicit_part=False),
    _implicit("trbdf2", "arkimex", "trbdf2", 2, 3, False, DIRK_TABLEAUS["trbdf2"].reference, explicit_part=False),
    # forward-only: PETSc has no TSAdjointStep for these
    _implicit("bdf", "bdf", None, 2, 1, True, "BDF (order via -ts_bdf_order); no adjoint", adjoint=False),
    _implicit("rosw", "rosw", None, 3, 4, True, "Rosenbrock-W; no adjoint", adjoint=False),
]:
    register(_m)
register(METHODS["crank_nicolson"], "trapezoid")


# torchdiffeq's methods pnode does not offer, and why, with the nearest it has.
_MULTISTEP = ("PETSc has no discrete adjoint for multistep methods, so no exact gradients; nearest: "
              "dopri5 or tsit5 (adaptive), rk4 (fixed steps), or bdf (implicit, forward only)")
UNSUPPORTED = {
    "explicit_adams": _MULTISTEP,
    "implicit_adams": _MULTISTEP,
    "fixed_adams": _MULTISTEP,
    "radauIIA3": "PETSc's fully implicit Runge-Kutta (TSIRK) has no discrete adjoint; nearest: kencarp3 "
                 "(L-stable, 3rd order, adaptive) or implicit_euler",
    "radauIIA5": "PETSc's fully implicit Runge-Kutta (TSIRK) has no discrete adjoint; nearest: kencarp5 "
                 "(L-stable, 5th order, adaptive)",
    "gl4": "PETSc's fully implicit Runge-Kutta (TSIRK) has no discrete adjoint; nearest: implicit_midpoint "
           "(Gauss-Legendre of order 2, symplectic) or kencarp4",
    "gl6": "PETSc's fully implicit Runge-Kutta (TSIRK) has no discrete adjoint; nearest: implicit_midpoint "
           "(symplectic) or kencarp5",
    "scipy_solver": "pnode integrates with PETSc instead of scipy; scipy's RK45 -> dopri5, RK23 -> bosh3, "
                    "DOP853 -> dopri8, Radau -> kencarp5, BDF/LSODA -> kencarp4 (or bdf, forward only)",
}


def form_of(ts_type):
    """The form (``rhs``, ``implicit`` or ``imex``) the PETSc TS type ``ts_type`` needs."""
    for m in METHODS.values():
        if m.ts_type == ts_type:
            return m.form
    return "rhs" if ts_type in _EXPLICIT_PETSC_TYPES else "implicit"


def has_adjoint(ts_type):
    """Whether PETSc has a discrete adjoint (TSAdjointStep) for TS type ``ts_type``."""
    return any(m.adjoint and m.ts_type == ts_type for m in METHODS.values())


def adjoint_method_names():
    """Names of the registered methods that give gradients."""
    return sorted(m.name for m in METHODS.values() if m.adjoint)


def get_method(name):
    """Return the :class:`Method` called ``name`` (None means the default, dopri5).

    Raises:
        ValueError: naming the valid methods when ``name`` is unknown.
    """
    if name is None:
        name = DEFAULT_METHOD
    if not isinstance(name, str):
        raise TypeError(f"method must be a string or None, got {type(name).__name__}")
    key = ALIASES.get(name, name)
    if key in UNSUPPORTED:
        raise ValueError(f"method {name!r} is not available in pnode: {UNSUPPORTED[key]}")
    if key not in METHODS:
        names = sorted(list(METHODS) + list(ALIASES))
        close = difflib.get_close_matches(name, names, n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; valid methods: {', '.join(names)}")
    method = METHODS[key]
    if method.subtype in TABLEAUS or method.subtype in DIRK_TABLEAUS:
        if not runtime.effects().get("tableaus", "").startswith("registered"):
            raise ValueError(f"method {name!r} is one of pnode's own tableaus, which were not registered with PETSc "
                             "(PNODE_TABLEAUS=0): unset PNODE_TABLEAUS to use it")
    return method

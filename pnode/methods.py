"""The method registry: every integrator pnode knows, as declarations.

Each entry maps a user-facing name (torchdiffeq's spelling where one exists) to a PETSc
TS type and tableau, with the facts the solver needs: is it implicit, can it adapt its
step, does PETSc have a discrete adjoint for it.
"""
from dataclasses import dataclass
from typing import Optional


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
    reference: str = ""


_METHODS = [
    Method("euler", "rk", "1fe", 1, 1, False, reference="forward Euler"),
    Method("midpoint", "rk", "2b", 2, 2, False, reference="explicit midpoint"),
    Method("heun2", "rk", "2a", 2, 2, True, reference="Heun's method with Euler embedded"),
    Method("bosh3", "rk", "3bs", 3, 4, True, reference="Bogacki-Shampine 3(2), FSAL"),
    Method("rk4", "rk", "4", 4, 4, False, reference="classical Runge-Kutta (1/6,1/3,1/3,1/6)"),
    Method("dopri5", "rk", "5dp", 5, 7, True, reference="Dormand-Prince 5(4), FSAL"),
    Method("verner6", "rk", "6vr", 6, 9, True, reference="Verner 6(5) 'most efficient'"),
    Method("verner7", "rk", "7vr", 7, 10, True, reference="Verner 7(6)"),
    Method("verner8", "rk", "8vr", 8, 13, True, reference="Verner 8(7)"),
]

_IMPLICIT = [
    Method("implicit_euler", "beuler", None, 1, 1, False, implicit=True, reference="backward Euler"),
    Method("crank_nicolson", "cn", None, 2, 2, False, implicit=True,
           reference="Crank-Nicolson (trapezoid; theta=0.5, endpoint)"),
    Method("theta", "theta", None, 2, 1, False, implicit=True,
           reference="theta method (options theta, endpoint; default 0.5 midpoint form)"),
    Method("kencarp3", "arkimex", "3", 3, 4, True, implicit=True,
           reference="Kennedy-Carpenter ARK3(2)4L[2]SA, IMEX"),
    Method("kencarp4", "arkimex", "4", 4, 6, True, implicit=True,
           reference="Kennedy-Carpenter ARK4(3)6L[2]SA, IMEX"),
    Method("kencarp5", "arkimex", "5", 5, 8, True, implicit=True,
           reference="Kennedy-Carpenter ARK5(4)8L[2]SA, IMEX"),
    Method("arkimex", "arkimex", None, 3, 4, True, implicit=True,
           reference="any PETSc ARKIMEX tableau (-ts_arkimex_type; default 3)"),
    # forward-only: PETSc has no TSAdjointStep for these
    Method("bdf", "bdf", None, 2, 1, True, adjoint=False, implicit=True,
           reference="BDF (order via -ts_bdf_order); no adjoint"),
    Method("rosw", "rosw", None, 3, 4, True, adjoint=False, implicit=True,
           reference="Rosenbrock-W; no adjoint"),
]

METHODS = {m.name: m for m in _METHODS + _IMPLICIT}
ALIASES = {"trapezoid": "crank_nicolson"}
# TS types with a discrete adjoint (TSAdjointStep) in PETSc >= 3.23
ADJOINT_TYPES = {"rk", "theta", "beuler", "cn", "arkimex"}
DEFAULT_METHOD = "dopri5"


def register(method, *aliases):
    """Add ``method`` (a :class:`Method`) to the registry under its name and ``aliases``."""
    METHODS[method.name] = method
    for a in aliases:
        ALIASES[a] = method.name


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
    if key not in METHODS:
        valid = ", ".join(sorted(list(METHODS) + list(ALIASES)))
        raise ValueError(f"unknown method {name!r}; valid methods: {valid}")
    return METHODS[key]

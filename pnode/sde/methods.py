"""The SDE method registry: every stepper ``sdeint`` knows, as declarations.

Each entry names a stepper from :mod:`pnode.sde.solvers` with the facts the API checks
against: the SDE interpretation it converges to, the noise types it handles, the Lévy
area it needs from the Brownian motion, its strong order, and whether it is
algebraically reversible (so :func:`pnode.sdeint_adjoint` can rebuild the forward
trajectory backwards instead of re-stepping from checkpoints). Like :mod:`pnode.methods`
for ODEs, the error messages and the lists of valid names are derived from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

from . import solvers
from .settings import METHODS as _TORCHSDE_METHODS

ALL_NOISE = ("diagonal", "additive", "scalar", "general")
COMMUTATIVE = ("diagonal", "additive", "scalar")
# What a method asks the Brownian motion for, and which levy_area_approximation
# settings provide it.
NOISE_NEEDS = {
    "W": ("none", "space-time", "davie", "foster"),
    "WU": ("space-time", "davie", "foster"),
    "WA": ("davie", "foster"),
}


@dataclass(frozen=True)
class SDEMethod:
    """One SDE integrator.

    Attributes:
        name: user-facing name (``sdeint(..., method=name)``).
        init: ``init(sde, t0, y0) -> state`` (``state[0]`` is ``y``, shape ``(b, d)``;
            ``state[1:]`` is torchsde's ``extra_solver_state``).
        step: ``step(sde, ta, tb, state, noise) -> state`` over ``[ta, tb]``.
        sde_type: the interpretation it converges to; ``sde.sde_type`` must match.
        noise_types: the noise types it solves.
        needs: what ``noise`` is: ``"W"`` (the increment), ``"WU"`` (with the space-time
            integral, from ``bm(ta, tb, return_U=True)``) or ``"WA"`` (with the Lévy
            area, ``return_A=True``).
        strong_order: strong order for the noise types it accepts (general noise may be
            lower; see ``reference``).
        reversible: the step has a closed-form inverse (the O(1)-memory adjoint).
        options: the ``options`` keys the stepper takes as keyword arguments.
        aliases: other accepted spellings of ``name``.
        reference: what the method is and where it comes from.
    """

    name: str
    init: Callable
    step: Callable
    sde_type: str
    noise_types: Tuple[str, ...] = ALL_NOISE
    needs: str = "W"
    strong_order: float = 0.5
    reversible: bool = False
    options: Tuple[str, ...] = ()
    aliases: Tuple[str, ...] = ()
    reference: str = ""

    @property
    def levy_areas(self):
        """The ``levy_area_approximation`` values whose Brownian motion serves it."""
        return NOISE_NEEDS[self.needs]


_init = solvers.single_state_init
_METHODS = [
    SDEMethod("euler", _init, solvers.euler_step, "ito", aliases=("euler_maruyama",),
              reference="Euler-Maruyama; order 1.0 for additive noise"),
    SDEMethod("milstein", _init, solvers.milstein_ito_step, "ito", COMMUTATIVE, strong_order=1.0,
              options=("grad_free",), reference="Milstein (Kloeden & Platen 10.3); grad_free: 11.1"),
    SDEMethod("srk", _init, solvers.srk_step, "ito", COMMUTATIVE, needs="WU", strong_order=1.0,
              reference="Rossler 2010: SRID2 (diagonal/scalar, order 1.0), SRA1 (additive, 1.5)"),
    SDEMethod("midpoint", _init, solvers.midpoint_step, "stratonovich",
              reference="stochastic midpoint; order 1.0 for commutative noise"),
    SDEMethod("reversible_heun", solvers.reversible_heun_init, solvers.reversible_heun_step,
              "stratonovich", reversible=True,
              reference="reversible Heun (Kidger, Foster, Li, Lyons 2021, Algorithm 1); "
                        "order 1.0 for additive noise"),
    SDEMethod("heun", _init, solvers.heun_step, "stratonovich",
              reference="Heun (Burrage, Burrage & Tian 2004); order 1.0 for commutative noise"),
    SDEMethod("milstein_stratonovich", _init, solvers.milstein_strat_step, "stratonovich",
              COMMUTATIVE, strong_order=1.0, options=("grad_free",),
              reference="Stratonovich Milstein; spelled method='milstein' for Stratonovich SDEs"),
    SDEMethod("log_ode", _init, solvers.log_ode_step, "stratonovich", needs="WA",
              reference="log-ODE midpoint (Lie-Trotter splitting with the midpoint method) "
                        "with Davie's or Foster's Levy area; order 1.0 for commutative noise"),
    SDEMethod("euler_heun", _init, solvers.euler_heun_step, "stratonovich",
              reference="Euler-Heun; order 1.0 for commutative noise"),
]

METHODS = {m.name: m for m in _METHODS}
ALIASES = {a: m.name for m in _METHODS for a in m.aliases}
PUBLIC_NAMES = sorted(n for n in METHODS if n != "milstein_stratonovich")


def get_method(name, sde_type):
    """The :class:`SDEMethod` called ``name`` (a name or an alias) for ``sde_type``
    SDEs: ``"milstein"`` is the Itô or the Stratonovich Milstein scheme by ``sde_type``,
    as in torchsde.

    Raises:
        ValueError: naming the valid methods when ``name`` is unknown.
    """
    key = ALIASES.get(name, name)
    if key == "milstein" and sde_type == "stratonovich":
        key = "milstein_stratonovich"
    if key not in METHODS or name == "milstein_stratonovich":
        raise ValueError(f"method={name!r} is unknown; valid methods: "
                         f"{PUBLIC_NAMES + sorted(ALIASES)}")
    return METHODS[key]


def default_method(sde_type, noise_type):
    """torchsde's default: ``srk`` for Itô SDEs with commutative noise, ``euler`` for
    Itô with general noise, ``midpoint`` for Stratonovich SDEs."""
    if sde_type == "ito":
        return "euler" if noise_type == "general" else "srk"
    return "midpoint"


def methods_for(sde_type):
    """Names of the methods that solve ``sde_type`` SDEs, in registry order."""
    return [m.name if m.name != "milstein_stratonovich" else "milstein"
            for m in _METHODS if m.sde_type == sde_type]


def is_torchsde_name(name):
    """Whether ``name`` is one of torchsde's method names (valid as ``adjoint_method``)."""
    return name in _TORCHSDE_METHODS or name in ALIASES

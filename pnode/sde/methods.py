"""The SDE method registry: every stepper ``sdeint`` knows, as declarations.

Each entry names a stepper pair from :mod:`pnode.sde.solvers` with the facts the API
checks against: the SDE interpretation it converges to, its strong order, and whether it
is algebraically reversible (so :func:`pnode.sdeint_adjoint` can rebuild the forward
trajectory backwards instead of storing it). Like :mod:`pnode.methods` for ODEs, the
error messages and the lists of valid names are derived from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

from . import solvers


@dataclass(frozen=True)
class SDEMethod:
    """One fixed-step SDE integrator.

    Attributes:
        name: user-facing name (``sdeint(..., method=name)``).
        init: ``init(sde, t0, y0) -> state``, the stepper's state tuple (``state[0]`` is
            ``y``, shape ``(b, d)``).
        step: ``step(sde, ta, tb, state, dw) -> state`` over ``[ta, tb]`` (time units of
            ``ts``) with the Brownian increment ``dw``.
        sde_type: the interpretation it converges to, ``"ito"`` or ``"stratonovich"``;
            ``sde.sde_type`` must match.
        strong_order: strong order of convergence for general noise (special noise
            structures may do better; see ``reference``).
        reversible: the step has a closed-form inverse, which gives the O(1)-memory
            reversible adjoint of :func:`pnode.sdeint_adjoint`.
        aliases: other accepted spellings of ``name``.
        reference: what the method is and where it comes from.
    """

    name: str
    init: Callable
    step: Callable
    sde_type: str
    strong_order: float
    reversible: bool = False
    aliases: Tuple[str, ...] = ()
    reference: str = ""

    @property
    def adjoint_names(self):
        """Accepted ``adjoint_method`` values: ``None``, the name, and torchsde's
        ``"adjoint_" + name``; empty when the method is not reversible."""
        if not self.reversible:
            return ()
        return (None, self.name, "adjoint_" + self.name)


_METHODS = [
    SDEMethod("reversible_heun", solvers.reversible_heun_init, solvers.reversible_heun_step,
              "stratonovich", 0.5, reversible=True,
              reference="reversible Heun (Kidger, Foster, Li, Lyons 2021, Algorithm 1); "
                        "order 1.0 for additive noise"),
    SDEMethod("euler_heun", solvers.single_state_init, solvers.euler_heun_step,
              "stratonovich", 0.5, reference="Euler-Heun; order 1.0 for commutative noise"),
    SDEMethod("midpoint", solvers.single_state_init, solvers.midpoint_step,
              "stratonovich", 0.5, reference="stochastic midpoint; order 1.0 for "
                                             "commutative noise"),
    SDEMethod("euler", solvers.single_state_init, solvers.euler_step, "ito", 0.5,
              aliases=("euler_maruyama",),
              reference="Euler-Maruyama; order 1.0 for additive noise"),
]

METHODS = {m.name: m for m in _METHODS}
ALIASES = {a: m.name for m in _METHODS for a in m.aliases}


def get_method(name):
    """Return the :class:`SDEMethod` called ``name`` (a name or an alias).

    Raises:
        ValueError: naming the valid methods and aliases when ``name`` is unknown.
    """
    key = ALIASES.get(name, name)
    if key not in METHODS:
        raise ValueError(f"method={key!r} is unknown; valid methods: "
                         f"{sorted(METHODS) + sorted(ALIASES)}")
    return METHODS[key]


def methods_for(sde_type):
    """Names of the methods that solve ``sde_type`` SDEs, in registry order."""
    return [m.name for m in _METHODS if m.sde_type == sde_type]


def reversible_methods():
    """Names of the methods with the reversible adjoint, in registry order."""
    return [m.name for m in _METHODS if m.reversible]

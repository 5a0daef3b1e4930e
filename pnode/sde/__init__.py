"""Neural SDEs in pure torch, with torchsde 0.2.6's public API: ``import pnode.sde as
torchsde`` is the whole migration.

- :func:`sdeint`: solve and backpropagate through the solver.
- :func:`sdeint_adjoint`: the same solve with exact gradients (backpropagation's, to
  round-off) at bounded memory: reversible Heun's algebraic reversal (O(1) memory), or
  re-stepping from O(sqrt(N)) checkpoints for every other method.
- :class:`BrownianInterval` (and :class:`BrownianPath`, :class:`BrownianTree`,
  :class:`ReverseBrownian`, :func:`brownian_interval_like`): Brownian motion queried by
  interval, reproducible from a seed, with bounded memory, space-time Lévy area and
  Davie's/Foster's Lévy-area approximations.
- :class:`BaseSDE`, :class:`SDEIto`, :class:`SDEStratonovich`; :mod:`pnode.sde.settings`.

Methods: ``euler``, ``milstein`` (and ``options={"grad_free": True}``), ``srk`` (Itô);
``midpoint``, ``heun``, ``euler_heun``, ``reversible_heun``, ``milstein``, ``log_ode``
(Stratonovich). See ``docs/sde.md`` and ``docs/guides/from_torchsde.md``.
"""

from . import settings
from .api import sdeint, sdeint_adjoint
from .base import BaseSDE, SDEIto, SDEStratonovich
from .brownian import BrownianInterval
from .brownian_derived import (BaseBrownian, BrownianPath, BrownianTree, ReverseBrownian,
                               brownian_interval_like)

__version__ = "0.2.6"  # the torchsde API version this module follows

__all__ = ["sdeint", "sdeint_adjoint", "BaseSDE", "SDEIto", "SDEStratonovich", "BaseBrownian",
           "BrownianInterval", "BrownianPath", "BrownianTree", "ReverseBrownian",
           "brownian_interval_like", "settings"]

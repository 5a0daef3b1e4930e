"""Neural SDEs, torchsde-compatible, in pure torch.

- :func:`sdeint`: fixed-step solve, gradients by backpropagation through the solver.
- :func:`sdeint_adjoint`: reversible Heun with its algebraically reversible adjoint
  (Kidger, Foster, Li, Lyons 2021): gradients equal to ``sdeint``'s to round-off, memory
  independent of the number of steps.
- :class:`BrownianInterval`: Brownian motion queried by interval, reproducible from a
  seed, with bounded memory.

Methods: ``reversible_heun``, ``euler_heun``, ``midpoint`` (Stratonovich) and ``euler``
(Euler–Maruyama, Ito). See ``docs/sde.md``.
"""

from .api import sdeint, sdeint_adjoint
from .brownian import BrownianInterval

__all__ = ["sdeint", "sdeint_adjoint", "BrownianInterval"]

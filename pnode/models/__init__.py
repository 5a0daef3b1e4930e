"""Models built on pnode's solvers.

- :class:`CNF`: a continuous normalizing flow (FFJORD) with exact or Hutchinson trace and
  optional RNODE regularisation, trained with PETSc's discrete adjoint.
- :class:`ODENet`: the time-dependent MLP vector field it uses (concat-squash or
  time-concat layers); :class:`CNFDynamics`: the augmented dynamics
  ``(z, delta_logp[, kinetic, jacobian])``.
- :func:`exact_divergence`, :func:`hutchinson_divergence`: trace estimators.
"""
from .cnf import (CNF, CNFDynamics, ConcatLinear, ConcatSquashLinear, ODENet, exact_divergence,
                  hutchinson_divergence, standard_normal_logprob)

__all__ = ["CNF", "CNFDynamics", "ODENet", "ConcatSquashLinear", "ConcatLinear", "exact_divergence",
           "hutchinson_divergence", "standard_normal_logprob"]

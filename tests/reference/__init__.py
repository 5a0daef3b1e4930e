"""Independent plain-torch references (oracles) for the tests; no pnode solver code.

- ``reference.rk``: explicit Runge-Kutta with PETSc's own Butcher tableaus (``rk_tableau``,
  ``rk_solve``) and the classical fixed-step RK4 written out (``rk4``);
- ``reference.theta``: the theta method (PETSc TSTHETA's endpoint and midpoint forms, with
  an optional mass matrix) with a dense Newton solve (``theta_solve``, ``newton``);
- ``reference.sde``: Euler-Maruyama, Euler-Heun and reversible Heun on given Brownian
  increments over pnode's step grid (``sde_solve``, ``step_grid``, ``g_dw``).
"""
from .rk import rk4, rk_solve, rk_tableau
from .sde import g_dw, sde_solve, step_grid
from .theta import newton, theta_solve

__all__ = ["g_dw", "newton", "rk4", "rk_solve", "rk_tableau", "sde_solve", "step_grid", "theta_solve"]

"""Butcher-type tableaus of Rößler's stochastic Runge-Kutta methods.

A. Rößler, "Runge-Kutta methods for the strong approximation of solutions of stochastic
differential equations", SIAM J. Numer. Anal. 48(3), 922-952 (2010):

- ``SRID2`` (Table 5.2 family, strong order 1.0 for diagonal and scalar Itô noise;
  order 1.5 in the drift), four stages;
- ``SRA1`` (strong order 1.5 for additive noise), two stages.

Row ``s`` of ``A0``/``A1``/``B0``/``B1`` holds the coefficients of stages ``0..s-1``.
"""

from types import SimpleNamespace

SRID2 = SimpleNamespace(
    stages=4,
    c0=(0.0, 1.0, 0.5, 0.0),
    c1=(0.0, 0.25, 1.0, 0.25),
    a0=((), (1.0,), (0.25, 0.25), (0.0, 0.0, 0.0)),
    a1=((), (0.25,), (1.0, 0.0), (0.0, 0.0, 0.25)),
    b0=((), (0.0,), (1.0, 0.5), (0.0, 0.0, 0.0)),
    b1=((), (-0.5,), (1.0, 0.0), (2.0, -1.0, 0.5)),
    alpha=(1 / 6, 1 / 6, 2 / 3, 0.0),
    beta1=(-1.0, 4 / 3, 2 / 3, 0.0),
    beta2=(1.0, -4 / 3, 1 / 3, 0.0),
    beta3=(2.0, -4 / 3, -2 / 3, 0.0),
    beta4=(-2.0, 5 / 3, -2 / 3, 1.0),
)

SRA1 = SimpleNamespace(
    stages=2,
    c0=(0.0, 0.75),
    c1=(1.0, 0.0),
    a0=((), (0.75,)),
    b0=((), (1.5,)),
    alpha=(1 / 3, 2 / 3),
    beta1=(1.0, 0.0),
    beta2=(-1.0, 1.0),
)

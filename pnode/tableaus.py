"""Runge-Kutta tableaus that PETSc lacks, registered with PETSc's ``TSRKRegister`` (explicit)
and ``TSARKIMEXRegister`` (diagonally implicit).

Each :class:`Tableau` is declared once here with its coefficients and source; at import
pnode registers them all with PETSc (``TSRKRegister`` through ctypes: petsc4py does not
wrap it), so they run in PETSc's own TSRK and get PETSc's discrete adjoint like the
built-in tableaus, and they are reachable from the command line too
(``-ts_type rk -ts_rk_type tsit5``, ``-ts_type arkimex -ts_arkimex_type sdirk2``). The method registry (:mod:`pnode.methods`) names
them by their PETSc name.
"""
from dataclasses import dataclass
from fractions import Fraction as F
from typing import Optional, Tuple

from .clib import dirk_register, rk_register


class _Butcher:
    """What every tableau computes from its rows ``A`` and weights ``b``."""

    @property
    def stages(self):
        """Number of stages ``s``."""
        return len(self.b)

    @property
    def c(self):
        """Stage times as fractions of the step: ``nodes`` where the source gives them
        (float row sums can miss them by an ulp), else the row sums of ``A``."""
        nodes = getattr(self, "nodes", None)
        return tuple(float(x) for x in nodes) if nodes else tuple(float(sum(row)) for row in self.A)

    def dense_A(self):
        """``A`` as a row-major ``s*s`` list of floats."""
        s = self.stages
        return [float(row[j]) if j < len(row) else 0.0 for row in self.A for j in range(s)]


@dataclass(frozen=True)
class Tableau(_Butcher):
    """A Butcher tableau ``c | A / b`` (with an embedded ``bembed`` for error control).

    Attributes:
        name: PETSc's name for it (``-ts_rk_type name``).
        order: order of the propagated solution ``b`` (the embedded one is ``order - 1``).
        A: the strictly lower triangular stage matrix, row ``i`` holding its ``i``
            entries ``a_i0 .. a_i,i-1``.
        b: solution weights (``s`` entries).
        bembed: embedded weights for the error estimate, or None (fixed steps only).
        reference: where the coefficients come from.
        nodes: the stage times ``c`` when the source gives them exactly.
    """

    name: str
    order: int
    A: Tuple[tuple, ...]
    b: tuple
    bembed: Optional[tuple]
    reference: str
    nodes: Optional[tuple] = None


def _f(*xs):
    return tuple(F(x) if isinstance(x, str) else x for x in xs)


# Tsitouras 5(4), 7 stages, FSAL. The solution is the 5th-order one (as in
# OrdinaryDiffEq.jl and diffrax; torchdiffeq 0.2.x propagates the 4th-order embedded one).
_TSIT5_B = (0.09646076681806522951816731316512876333711995238157997181903319145764851595234062815396,
            0.01,
            0.4798896504144995747752495322905965199130404621990332488332634944254542060153074523509,
            1.379008574103741893192274821856872770756462643091360525934940067397245698027561293331,
            -3.290069515436080679901047585711363850115683290894936158531296799594813811049925401677,
            2.324710524099773982415355918398765796109060233222962411944060046314465391054716027841,
            0.0)
_TSIT5_ERR = (-1.780011052225771443378550607539534775944678804333659557637450799792588061629796e-03,
              -8.164344596567469032236360633546862401862537590159047610940604670770447527463931e-04,
              7.880878010261996010314727672526304238628733777103128603258129604952959142646516e-03,
              -1.44711007173262907537165147972635116720922712343167677619514233896760819649515e-01,
              5.823571654525552250199376106520421794260781239567387797673045438803694038950012e-01,
              -4.580821059291869466616365188325542974428047279788398179474684434732070620889539e-01,
              1 / 66)
TSIT5 = Tableau(
    "tsit5", 5,
    ((),
     (0.161,),
     (-0.008480655492356988544426874250230774675121177393430391537369234245294192976164141156943,
      0.3354806554923569885444268742502307746751211773934303915373692342452941929761641411569),
     (2.897153057105493432130432594192938764924887287701866490314866693455023795137503079289,
      -6.359448489975074843148159912383825625952700647415626703305928850207288721235210244366,
      4.362295432869581411017727318190886861027813359713760212991062156752264926097707165077),
     (5.325864828439256604428877920840511317836476253097040101202360397727981648835607691791,
      -11.74888356406282787774717033978577296188744178259862899288666928009020615663593781589,
      7.495539342889836208304604784564358155658679161518186721010132816213648793440552049753,
      -0.09249506636175524925650207933207191611349983406029535244034750452930469056411389539635),
     (5.861455442946420028659251486982647890394337666164814434818157239052507339770711679748,
      -12.92096931784710929170611868178335939541780751955743459166312250439928519268343184452,
      8.159367898576158643180400794539253485181918321135053305748355423955009222648673734986,
      -0.07158497328140099722453054252582973869127213147363544882721139659546372402303777878835,
      -0.02826905039406838290900305721271224146717633626879770007617876201276764571291579142206),
     _TSIT5_B[:6]),
    _TSIT5_B,
    tuple(b - e for b, e in zip(_TSIT5_B, _TSIT5_ERR)),
    "Tsitouras, Comput. Math. Appl. 62 (2011) 770-775: 5(4), 7 stages, FSAL",
    nodes=(0.0, 0.161, 0.327, 0.9, 0.9800255409045096857298102862870245954942137979563024768854764293221195950761080302604,
           1.0, 1.0))

# Prince & Dormand's RK8(7)13M (J. Comput. Appl. Math. 7 (1981) 67-75): 13 stages; the
# solution is the 8th-order one. (torchdiffeq adds a 14th, zero-weight stage.)
_DP8_B = _f(F(14005451, 335480064), 0, 0, 0, 0, F(-59238493, 1068277825), F(181606767, 758867731),
            F(561292985, 797845732), F(-1041891430, 1371343529), F(760417239, 1151165299),
            F(118820643, 751138087), F(-528747749, 2220607170), F(1, 4))
_DP8_B7 = _f(F(13451932, 455176623), 0, 0, 0, 0, F(-808719846, 976000145), F(1757004468, 5645159321),
             F(656045339, 265891186), F(-3867574721, 1518517206), F(465885868, 322736535),
             F(53011238, 667516719), F(2, 45), 0)
DOPRI8 = Tableau(
    "dopri8", 8,
    ((),
     (F(1, 18),),
     (F(1, 48), F(1, 16)),
     (F(1, 32), 0, F(3, 32)),
     (F(5, 16), 0, F(-75, 64), F(75, 64)),
     (F(3, 80), 0, 0, F(3, 16), F(3, 20)),
     (F(29443841, 614563906), 0, 0, F(77736538, 692538347), F(-28693883, 1125000000),
      F(23124283, 1800000000)),
     (F(16016141, 946692911), 0, 0, F(61564180, 158732637), F(22789713, 633445777),
      F(545815736, 2771057229), F(-180193667, 1043307555)),
     (F(39632708, 573591083), 0, 0, F(-433636366, 683701615), F(-421739975, 2616292301),
      F(100302831, 723423059), F(790204164, 839813087), F(800635310, 3783071287)),
     (F(246121993, 1340847787), 0, 0, F(-37695042795, 15268766246), F(-309121744, 1061227803),
      F(-12992083, 490766935), F(6005943493, 2108947869), F(393006217, 1396673457),
      F(123872331, 1001029789)),
     (F(-1028468189, 846180014), 0, 0, F(8478235783, 508512852), F(1311729495, 1432422823),
      F(-10304129995, 1701304382), F(-48777925059, 3047939560), F(15336726248, 1032824649),
      F(-45442868181, 3398467696), F(3065993473, 597172653)),
     (F(185892177, 718116043), 0, 0, F(-3185094517, 667107341), F(-477755414, 1098053517),
      F(-703635378, 230739211), F(5731566787, 1027545527), F(5232866602, 850066563),
      F(-4093664535, 808688257), F(3962137247, 1805957418), F(65686358, 487910083)),
     (F(403863854, 491063109), 0, 0, F(-5068492393, 434740067), F(-411421997, 543043805),
      F(652783627, 914296604), F(11173962825, 925320556), F(-13158990841, 6184727034),
      F(3936647629, 1978049680), F(-160528059, 685178525), F(248638103, 1413531060), 0)),
    _DP8_B, _DP8_B7,
    "Prince & Dormand, J. Comput. Appl. Math. 7 (1981) 67-75: RK8(7)13M")

FEHLBERG2 = Tableau(
    "fehlberg2", 2,
    ((), (F(1, 2),), (F(1, 256), F(255, 256))),
    (F(1, 512), F(255, 256), F(1, 512)),
    (F(1, 256), F(255, 256), 0),
    "Fehlberg, NASA TR R-315 (1969): RK1(2) with the 2nd-order solution propagated, as torchdiffeq")

ADAPTIVE_HEUN = Tableau(
    "adaptive_heun", 2, ((), (1,)), (F(1, 2), F(1, 2)), (1, 0),
    "Heun's method with forward Euler embedded (PETSc's 2a, under torchdiffeq's name)")

HEUN3 = Tableau(
    "heun3", 3, ((), (F(1, 3),), (0, F(2, 3))), (F(1, 4), 0, F(3, 4)), None,
    "Heun's third-order method (Heun 1900)")

RK4_38 = Tableau(
    "rk4_38", 4, ((), (F(1, 3),), (F(-1, 3), 1), (1, -1, 1)), (F(1, 8), F(3, 8), F(3, 8), F(1, 8)), None,
    "Kutta's 3/8 rule (Kutta 1901): torchdiffeq's 'rk4'")

TABLEAUS = {t.name: t for t in (TSIT5, DOPRI8, FEHLBERG2, ADAPTIVE_HEUN, HEUN3, RK4_38)}


@dataclass(frozen=True)
class DIRKTableau(_Butcher):
    """A diagonally implicit Runge-Kutta tableau, run by PETSc's ARKIMEX (whose discrete
    adjoint pnode's tests verify) as the implicit part of an IMEX pair whose explicit part
    is never used: methods built on it refuse ``func_explicit``.

    Attributes:
        name: PETSc's name (``-ts_arkimex_type name``).
        order: order of accuracy.
        A: lower triangular stage matrix (row ``i`` has ``i + 1`` entries).
        b: weights.
        reference: source.
    """

    name: str
    order: int
    A: Tuple[tuple, ...]
    b: tuple
    reference: str


_G2 = 1 - 2 ** 0.5 / 2  # gamma of both L-stable 2nd-order methods below
DIRK_TABLEAUS = {t.name: t for t in (
    DIRKTableau("sdirk2", 2, ((_G2,), (1 - _G2, _G2)), (1 - _G2, _G2),
                "Alexander's L-stable two-stage SDIRK (SIAM J. Numer. Anal. 14, 1977), torchdiffeq's sdirk2"),
    DIRKTableau("trbdf2", 2, ((0.0,), (_G2, _G2), (2 ** 0.5 / 4, 2 ** 0.5 / 4, _G2)),
                (2 ** 0.5 / 4, 2 ** 0.5 / 4, _G2),
                "TR-BDF2 as an ESDIRK (Hosea & Shampine, Appl. Numer. Math. 20, 1996), torchdiffeq's trbdf2"),
)}


def register_all():
    """Register every tableau of :data:`TABLEAUS` and :data:`DIRK_TABLEAUS` with PETSc
    (called once per process by :mod:`pnode.runtime`); returns their names."""
    for tab in TABLEAUS.values():
        rk_register(tab.name, tab.order, tab.dense_A(), tab.b, tab.c, tab.bembed)
    for tab in DIRK_TABLEAUS.values():
        dirk_register(tab.name, tab.order, tab.dense_A(), tab.b, tab.c)
    return list(TABLEAUS) + list(DIRK_TABLEAUS)

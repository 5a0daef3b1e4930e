"""pnode: neural ODEs with exact discrete-adjoint gradients at bounded memory.

PETSc integrates the ODE and its discrete adjoint; torch supplies the vector field and
its derivatives. Public API:

- :func:`odeint` / :func:`odeint_adjoint` / :func:`odeint_event` / :func:`odeint_dense`
  (torchdiffeq-compatible),
- :class:`ODESolver` (reusable solver object), :class:`ODEBlock` (``nn.Module``),
- :class:`Checkpoint` (memory/recomputation trade-off), :class:`SolverError`,
- :func:`sdeint` / :func:`sdeint_adjoint` / :class:`BrownianInterval` (neural SDEs,
  reversible Heun with an O(1)-memory exact adjoint),
- :func:`info` (versions and build facts).
"""
from ._version import __version__
from . import runtime as _runtime

_runtime.start()  # PETSc with sys.argv, and every other process-wide effect (pnode.info lists them)

from .block import ODEBlock
from .checkpoint import Checkpoint
from .errors import SolverError
from .versions import info
from .methods import METHODS
from .functional import odeint, odeint_adjoint, odeint_event
from .dense import odeint_dense
from .sde import BrownianInterval
from .sde.api import pnode_sdeint as sdeint, pnode_sdeint_adjoint as sdeint_adjoint
from .solver import ODESolver, close_all

_runtime.at_exit(close_all)

__all__ = ["__version__", "odeint", "odeint_adjoint", "odeint_event", "odeint_dense", "ODESolver", "ODEBlock",
           "Checkpoint", "SolverError", "info", "METHODS", "sdeint", "sdeint_adjoint", "BrownianInterval"]

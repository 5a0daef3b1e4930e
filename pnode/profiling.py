"""pnode's work as PETSc log events, so that ``-log_view`` shows where a solve's time goes.

PETSc's own events (``TSStep``, ``TSAdjointStep``, ``VecMAXPY``, ...) include the time
spent in pnode's callbacks; these events say what that time was:

- ``pnodeFunc``: ``func`` evaluated for the solver (a right-hand side, no graph);
- ``pnodeFuncGraph``: ``func`` evaluated with a graph (for products, or kept with
  ``Checkpoint("graphs")``);
- ``pnodeVJP``: vector-Jacobian products (state and parameters, through autograd);
- ``pnodeJVP``: Jacobian-vector products (implicit methods);
- ``pnodeInterp``: interpolated outputs (``func`` at step boundaries, the combination);

each also counted by :attr:`pnode.ODESolver.stats`. Run any program with ``-log_view``
(``python train.py -log_view``) to get the table at exit. An event costs about 1 us per
call, logged or not.
"""
from petsc4py import PETSc

FUNC = PETSc.Log.Event("pnodeFunc")
FUNC_GRAPH = PETSc.Log.Event("pnodeFuncGraph")
VJP = PETSc.Log.Event("pnodeVJP")
JVP = PETSc.Log.Event("pnodeJVP")
INTERP = PETSc.Log.Event("pnodeInterp")

"""The right-hand-side part ``u' = f(t, u)``: RHSFunction, RHSJacobian, RHSJacobianP.

Used alone by explicit RK methods and as the explicit half of an IMEX split, where
``dyn`` may be None: the zero function (ARKIMEX without an explicit part).
"""
from ..bridge import vec_view, vec_write
from ..parallel import new_vec
from ..shells import JacobianShell, ParamJacobianShell
from .part import Part


class RHSPart(Part):
    """Registers ``dyn`` (a :class:`~pnode.dynamics.Dynamics`, or None for zero) as the
    TS's right-hand side, with matrix-free state and parameter Jacobians."""

    def __init__(self, ts, sizes, reducer, dyn, trap):
        super().__init__(dyn, trap)
        comm, wrap = sizes.comm, trap.wrap
        red = reducer if comm.getSize() > 1 else None
        self.f = self.own(new_vec(comm, *sizes.state))
        # the shells' Python contexts, kept: getPythonContext() costs a PETSc call per callback
        self.J, self.Jp = JacobianShell(trap), ParamJacobianShell(trap, reducer=red)
        J = self.shell(self.J, sizes.state, sizes.state, comm)
        ts.setRHSFunction(wrap(self._function), self.f)
        ts.setRHSJacobian(wrap(self._jacobian), J, J)
        if sizes.n_p:
            Jp = self.shell(self.Jp, sizes.state, sizes.params, comm)
            ts.setRHSJacobianP(wrap(self._jacobian_p), Jp)

    def _function(self, ts, s, U, F):
        if self.dyn is None:
            F.zeroEntries()
        else:
            vec_write(F, self.dyn.rhs(s, vec_view(U, "r")))

    def _jacobian(self, ts, s, U, J, P):
        self.J.set_point(self.linearize(s, U))

    def _jacobian_p(self, ts, s, U, Jp):
        self.Jp.set_point(self.linearize(s, U))

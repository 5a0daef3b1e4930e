"""The implicit part ``F(t, u, u') = M u' - f(t, u) = 0``: IFunction, IJacobian
(``shift*M - J``, matrix-free or dense) and IJacobianP (``-df/dp``), plus the user's
preconditioner hook on the Newton-Krylov solve."""
from petsc4py import PETSc

from ..bridge import vec_view, vec_write
from ..parallel import new_vec
from ..shells import JacobianShell, ParamJacobianShell
from .blocks import BlockJacobianPC
from .jacobians import DenseJacobian, ShellPC
from .part import Part


class ImplicitPart(Part):
    """Registers ``dyn`` as the implicit part of the TS.

    Args:
        mass: :class:`~pnode.forms.jacobians.MassMatrix` or None (identity).
        dense: assemble ``shift*M - J`` densely for LU (single rank only).
        preconditioner: the user's PC callable, or None.
        blocks: ``(B, d)`` to precondition with per-sample block Jacobians
            (:mod:`pnode.forms.blocks`), or None.
    """

    def __init__(self, ts, sizes, reducer, dyn, trap, mass, dense, preconditioner, blocks=None):
        super().__init__(dyn, trap)
        comm, wrap = sizes.comm, trap.wrap
        if dense and comm.getSize() > 1:
            raise ValueError("options['jacobian']='dense' needs a single rank (use the matrix-free default)")
        red = reducer if comm.getSize() > 1 else None
        self.mass = mass
        self.dense = DenseJacobian(sizes.n, comm, mass) if dense else None
        # the shells' Python contexts, kept: getPythonContext() costs a PETSc call per callback
        self.J = self.Jp = None
        if self.dense is not None:
            IJ = self.own(self.dense.mat)
        else:
            self.J = JacobianShell(trap, b=-1.0, mass=mass)
            IJ = self.shell(self.J, sizes.state, sizes.state, comm)
        self.fi = self.own(new_vec(comm, *sizes.state))
        ts.setIFunction(wrap(self._function), self.fi)
        ts.setIJacobian(wrap(self._jacobian), IJ, IJ)
        if sizes.n_p:
            self.Jp = ParamJacobianShell(trap, c=-1.0, reducer=red)
            IJp = self.shell(self.Jp, sizes.state, sizes.params, comm)
            ts.setIJacobianP(wrap(self._jacobian_p), IJp)
        self.krylov_iterations = 0  # every Krylov iteration of this part's KSP, forward and adjoint
        self._monitoring = False
        self.pc = None
        if preconditioner is not None and not dense:
            self.pc = ShellPC(preconditioner, trap)
        elif blocks is not None and not dense:
            self.pc = BlockJacobianPC(blocks, mass, trap)
            self.J.blocks = self.pc

    def rebind(self, dyn):
        super().rebind(dyn)
        if isinstance(self.pc, BlockJacobianPC):
            self.pc.new_call()

    def configure_pc(self, ts):
        """After setFromOptions: count Krylov iterations (PETSc's own counter is reset
        by TSAdjointSolve), and make the user's hook, or else the block Jacobians unless
        the options chose another PC, the PC of the Newton-Krylov solve."""
        ksp = ts.getSNES().getKSP()
        if not self._monitoring:  # once per KSP: monitors accumulate
            ksp.setMonitor(self._count)
            self._monitoring = True
        if self.pc is None:
            return
        pc = ts.getSNES().getKSP().getPC()
        if isinstance(self.pc, BlockJacobianPC) and pc.getType() not in (PETSc.PC.Type.NONE, PETSc.PC.Type.PYTHON):
            return
        pc.setType(PETSc.PC.Type.PYTHON)
        pc.setPythonContext(self.pc)

    def _count(self, ksp, its, rnorm):
        if its > 0:
            self.krylov_iterations += 1

    def _function(self, ts, s, U, Udot, F):
        udot = vec_view(Udot, "r")
        lhs = self.mass.apply(udot) if self.mass is not None else udot
        vec_write(F, lhs - self.dyn.rhs(s, vec_view(U, "r")).to(lhs.device))

    def _jacobian(self, ts, s, U, Udot, shift, J, P):
        lin = self.linearize(s, U)
        if self.dense is not None:
            self.dense.assemble(lin, shift)
        else:
            self.J.set_point(lin, shift)
        if self.pc is not None:
            self.pc.set_point(lin, shift)

    def _jacobian_p(self, ts, s, U, Udot, shift, Jp):
        self.Jp.set_point(self.linearize(s, U))

"""The implicit part ``F(t, u, u') = M u' - f(t, u) = 0``: IFunction, IJacobian
(``shift*M - J``: matrix-free, dense, or sparse by colouring) and IJacobianP (``-df/dp``),
plus the preconditioner of the Newton-Krylov solve (the user's hook, per-sample blocks, or
PETSc's own on the sparse matrix).

A part declared linear (``options["linear"]``) has one Jacobian for the whole call: every
IJacobian hands the operators the call's first linearization, so blocks, sparse matrix
and factorisations are built once per shift and reused by every stage, step and the
adjoint. The declaration is checked once per call, at the second point PETSc asks for.
"""
import warnings

import torch
from petsc4py import PETSc

from ..bridge import vec_view, vec_write
from ..parallel import new_vec
from ..shells import JacobianShell, ParamJacobianShell
from .blocks import MAX_BLOCK, BlockJacobianPC
from .jacobians import DenseJacobian, ShellPC
from .part import Part
from .sparse import SparseJacobian


_SEQUENTIAL_PCS = ("lu", "ilu", "icc", "cholesky")  # PETSc's own factorizations: one rank only
ROUNDOFF_MARGIN = 10.0  # Newton's scaled absolute tolerance, in units of the residual's round-off estimate


class UnpreconditionedWarning(UserWarning):
    """The implicit solve runs matrix-free GMRES without a preconditioner."""


class ImplicitPart(Part):
    """Registers ``dyn`` as the implicit part of the TS.

    Args:
        mass: :class:`~pnode.forms.jacobians.MassMatrix` or None (identity).
        dense: assemble ``shift*M - J`` densely for LU (single rank only).
        preconditioner: the user's PC callable, or None.
        blocks: ``(B, d)`` to precondition with per-sample block Jacobians
            (:mod:`pnode.forms.blocks`), or None.
        sparse: ``((B, d), (rows, cols))`` to assemble the sparse Jacobian by colouring
            (:mod:`pnode.forms.sparse`), or None.
        linear: the part is declared linear in the state (one Jacobian per call).
        large: ``(B, d)`` when the samples are too large for blocks and nothing else
            preconditions: warn if the PC stays none.
    """

    def __init__(self, ts, sizes, reducer, dyn, trap, mass, dense, preconditioner, blocks=None, sparse=None,
                 linear=False, large=None):
        super().__init__(dyn, trap)
        comm, wrap = sizes.comm, trap.wrap
        if dense and comm.getSize() > 1:
            raise ValueError("options['jacobian']='dense' needs a single rank (use the matrix-free default)")
        red = reducer if comm.getSize() > 1 else None
        self.mass = mass
        self.dense = DenseJacobian(sizes.n, comm, mass) if dense else None
        # the shells' Python contexts, kept: getPythonContext() costs a PETSc call per callback
        self.J = self.Jp = None
        self.sparse = SparseJacobian(*sparse, mass, comm) if sparse is not None and not dense else None
        if self.dense is not None:
            IJ = PJ = self.own(self.dense.mat)
        else:
            self.J = JacobianShell(trap, b=-1.0, mass=mass)
            IJ = PJ = self.shell(self.J, sizes.state, sizes.state, comm)
            if self.sparse is not None:
                PJ = self.own(self.sparse.mat)
                self.J.assembled = self.sparse
        self.fi = self.own(new_vec(comm, *sizes.state))
        ts.setIFunction(wrap(self._function), self.fi)
        ts.setIJacobian(wrap(self._jacobian), IJ, PJ)
        if sizes.n_p:
            self.Jp = ParamJacobianShell(trap, c=-1.0, reducer=red)
            IJp = self.shell(self.Jp, sizes.state, sizes.params, comm)
            ts.setIJacobianP(wrap(self._jacobian_p), IJp)
        self.krylov_iterations = 0  # every Krylov iteration of this part's KSP, forward and adjoint
        self._monitoring = False
        self.pc = None
        if preconditioner is not None and not dense:
            self.pc = ShellPC(preconditioner, trap)
        elif blocks is not None and not dense and self.sparse is None:
            self.pc = BlockJacobianPC(blocks, mass, trap)
            self.J.assembled = self.pc
        self.linear = linear
        self._constant = None  # linear: (first Linearization of the call, checked at a second point)
        self._dense_point = None
        self.large = large if (self.pc is None and not dense and self.sparse is None) else None
        self._atol = None  # (the options' snes_atol, estimated |J|) while Newton's atol is scaled

    def rebind(self, dyn):
        super().rebind(dyn)
        self._constant = self._dense_point = None
        for op in (self.pc, self.sparse):
            if hasattr(op, "new_call"):
                op.new_call()

    def configure_pc(self, ts):
        """After setFromOptions: count Krylov iterations (PETSc's own counter is reset
        by TSAdjointSolve), and make the user's hook, or else the block Jacobians unless
        the options chose another PC, the PC of the Newton-Krylov solve."""
        ksp = ts.getSNES().getKSP()
        if not self._monitoring:  # once per KSP: monitors accumulate
            ksp.setMonitor(self._count)
            self._monitoring = True
        pc = ts.getSNES().getKSP().getPC()
        if self.sparse is not None and ksp.getComm().getSize() > 1 and pc.getType() in _SEQUENTIAL_PCS:
            raise ValueError(f"options['sparsity'] on {ksp.getComm().getSize()} ranks: -pc_type {pc.getType()} is "
                             "PETSc's sequential factorization and cannot factor the matrix spread over the ranks; "
                             f"use -pc_type bjacobi -sub_pc_type {pc.getType()} (the default: exact, the samples "
                             "do not couple across ranks), asm or gamg")
        if self.large is not None and pc.getType() == PETSc.PC.Type.NONE and self.pc is None:
            self._warn_unpreconditioned()
        if self.pc is None:
            return
        if isinstance(self.pc, BlockJacobianPC) and pc.getType() not in (PETSc.PC.Type.NONE, PETSc.PC.Type.PYTHON):
            return
        pc.setType(PETSc.PC.Type.PYTHON)
        pc.setPythonContext(self.pc)

    def scale_atol(self, ts, enabled):
        """Scale Newton's absolute tolerance to the problem's round-off (when ``enabled``:
        the user set no ``snes_atol``; Newton only, a declared-linear part runs one linear
        solve).

        The stage residual ``shift*M u - f(u) - ...`` cannot be computed more accurately
        than about ``eps * (shift + |J|) * |u|`` (2-norms; ``|J|`` estimated once per call
        by ``|J v| / |v|`` for a random ``v``). A stiff operator with a large norm (KS at
        512 points: ``|J|`` ~ 1e6) puts that floor above pnode's fixed default (1e-12 in
        float64), and Newton would fail to converge at round-off. At every Jacobian the
        tolerance becomes ``max(default, 10 * floor)``: ten times, so that Newton stops
        above round-off (the stage's error is then about ``atol / shift``, a relative
        1e-10 or less in that case).
        """
        if not enabled or self.linear:
            self._atol = None
            return
        self._atol = (ts.getSNES().getTolerances()[1], None)

    def _scaled_atol(self, ts, lin, shift, U):
        """Set ``snes_atol`` to ``max(default, 10 * eps * (shift + |J|) * |U|)`` (see :meth:`scale_atol`)."""
        base, norm = self._atol
        if norm is None:
            g = torch.Generator(device="cpu").manual_seed(1357)
            v = torch.randn(lin.u64.numel(), generator=g, dtype=lin.u64.dtype).to(lin.u64.device)
            sums = [float(lin.jvp(v).pow(2).sum()), float(v.pow(2).sum())]
            comm = U.getComm()
            if comm.getSize() > 1:
                sums = [comm.tompi4py().allreduce(x) for x in sums]
            norm = (sums[0] / max(sums[1], 1e-300)) ** 0.5
            self._atol = (base, norm)
        eps = torch.finfo(self.dyn.layout.dtype).eps
        floor = ROUNDOFF_MARGIN * eps * (abs(shift) + norm) * U.norm()
        ts.getSNES().setTolerances(atol=max(base, floor))

    def _warn_unpreconditioned(self):
        """Once per workspace: the samples are too large for dense blocks."""
        B, d = self.large
        self.large = None
        warnings.warn(f"each sample of the state has {d} unknowns, more than the {MAX_BLOCK} of a dense block "
                      "Jacobian, so the implicit solve runs matrix-free GMRES without a preconditioner (slow "
                      "when stiff): declare the Jacobian's pattern with options['sparsity'] (e.g. {'grid': "
                      f"({d},), 'stencil': 2, 'periodic': True}}) for PETSc's preconditioners, give "
                      "options['preconditioner'], or choose -pc_type", UnpreconditionedWarning, stacklevel=2)

    def _count(self, ksp, its, rnorm):
        if its > 0:
            self.krylov_iterations += 1

    def _function(self, ts, s, U, Udot, F):
        udot = vec_view(Udot, "r")
        lhs = self.mass.apply(udot) if self.mass is not None else udot
        vec_write(F, lhs - self.dyn.rhs(s, vec_view(U, "r")).to(lhs.device))

    def _jacobian(self, ts, s, U, Udot, shift, J, P):
        lin = self.linearize(s, U)
        if self.linear:
            lin = self._linear_point(lin)
        if self._atol is not None:
            self._scaled_atol(ts, lin, shift, U)
        if self.dense is not None:
            if self._dense_point != (lin, shift):  # unchanged: PETSc keeps its LU
                self.dense.assemble(lin, shift)
                self._dense_point = (lin, shift)
        else:
            self.J.set_point(lin, shift)
        if self.sparse is not None:
            self.sparse.set_point(lin, shift)
        if self.pc is not None:
            self.pc.set_point(lin, shift)

    def _linear_point(self, lin):
        """The call's first linearization, after checking at the second point that the
        Jacobian there is the same (one random Jacobian-vector product at each)."""
        if self._constant is None:
            self._constant = (lin, False)
            return lin
        first, checked = self._constant
        if checked or lin is first or (lin.s == first.s and torch.equal(lin.u64, first.u64)):
            return first
        g = torch.Generator(device="cpu").manual_seed(2468)
        v = torch.randn(first.u64.numel(), generator=g, dtype=first.u64.dtype).to(first.u64.device)
        a, b = first.jvp(v), lin.jvp(v)
        diff = float((a - b).norm()) / max(float(a.norm()), 1e-300)
        tol = 1e-10 if self.dyn.layout.dtype == torch.float64 else 1e-4
        if not diff <= tol:
            raise ValueError(f"options['linear']=True but func is not linear in y with a constant Jacobian: its "
                             f"Jacobian-vector products at two points (t={self.dyn.clock.user(first.s):.6g} and "
                             f"t={self.dyn.clock.user(lin.s):.6g}) differ by {diff:.2e} (relative); drop "
                             "options['linear']")
        self._constant = (first, True)
        return first

    def _jacobian_p(self, ts, s, U, Udot, shift, Jp):
        self.Jp.set_point(self.linearize(s, U))

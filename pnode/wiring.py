"""Wiring a PETSc TS to torch: which callbacks and Mats, for which form of the ODE.

Three forms, chosen from the TS type that will actually run:

- ``rhs`` (explicit RK): ``u' = f(t, u)`` through RHSFunction/RHSJacobian/RHSJacobianP.
- ``implicit`` (theta, BE, CN, BDF, ...): ``F(t, u, u') = M u' - f(t, u) = 0`` through
  IFunction/IJacobian (``shift*M - J``)/IJacobianP (``-df/dp``).
- ``imex`` (ARKIMEX): the stiff ``f`` implicitly as above (identity mass) plus the explicit
  ``g = options["func_explicit"]`` through RHSFunction/RHSJacobian/RHSJacobianP, on
  separate Mats (PETSc 3.26 rejects one Mat for both parameter Jacobians).
"""
import torch
from petsc4py import PETSc

from .bridge import PETSC_DTYPE, vec_view, vec_write
from .shells import JacobianShell, ParamJacobianShell, shell_mat

EXPLICIT_TYPES = {"rk", "euler", "ssp", "eimex", "mprk"}
IMEX_TYPES = {"arkimex"}


def form_of(ts_type):
    """The form (``rhs``, ``implicit`` or ``imex``) a PETSc TS type needs."""
    if ts_type in EXPLICIT_TYPES:
        return "rhs"
    if ts_type in IMEX_TYPES:
        return "imex"
    return "implicit"


class MassMatrix:
    """A constant mass matrix ``M`` (``M u' = f``), applied to flat states.

    ``matrix`` is ``(n, n)`` for the whole flat state, or ``(d, d)`` applied along the
    last dimension of a tensor state of shape ``(..., d)`` (the same M for every sample).
    """

    def __init__(self, matrix, layout):
        if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError("options['mass'] must be a square 2-D tensor")
        n, d = layout.numel, matrix.shape[0]
        last = layout.shapes[0][-1] if (not layout.is_tuple and len(layout.shapes[0])) else None
        if d == n:
            self.blocks = 1
        elif d == last:
            self.blocks = n // d
        else:
            raise ValueError(f"options['mass'] has shape {tuple(matrix.shape)}; expected ({n}, {n}) "
                             f"or ({last}, {last}) for a state of shape {tuple(layout.shapes[0])}")
        self.m = matrix.detach().to(PETSC_DTYPE)

    def apply(self, x, transpose=False):
        """``M x`` (or ``M^T x``) for a flat float64 ``x``."""
        m = (self.m.T if transpose else self.m).to(x.device)
        return (x.reshape(self.blocks, -1) @ m.T).reshape(-1)

    def dense(self, n):
        """The full ``(n, n)`` matrix."""
        return torch.block_diag(*([self.m] * self.blocks)) if self.blocks > 1 else self.m


class DenseJacobian:
    """``shift*M - J`` assembled with ``torch.func.jacrev`` (for small systems, with LU)."""

    def __init__(self, n, comm, mass):
        self.mat = PETSc.Mat().createDense([n, n], comm=comm)
        self.mat.setUp()
        self.mass = mass

    def assemble(self, lin, shift, n):
        dyn = lin.dyn
        u = dyn.layout.to_model(lin.u64)
        jac = torch.func.jacrev(lambda x: dyn(lin.s, x))(u).to(PETSC_DTYPE).cpu()
        eye = self.mass.dense(n).cpu() if self.mass is not None else torch.eye(n, dtype=PETSC_DTYPE)
        self.mat.getDenseArray()[:] = (shift * eye - jac).numpy()
        self.mat.assemble()


class ShellPC:
    """PC applying the user's ``options["preconditioner"](t, y, shift, r, transpose)``."""

    def __init__(self, fn, trap, layout, time_sign):
        self.fn, self.layout, self.time_sign = fn, layout, time_sign
        self.point = None
        self.apply = trap.wrap(self.apply)
        self.applyTranspose = trap.wrap(self.applyTranspose)

    def _run(self, X, Y, transpose):
        s, u, shift = self.point
        lay = self.layout
        t = torch.tensor(self.time_sign * s, dtype=lay.dtype, device=lay.device)
        with torch.no_grad():
            z = self.fn(t, lay.unflatten(lay.to_model(u)), shift, lay.unflatten(lay.to_model(vec_view(X, "r"))),
                        transpose)
        vec_write(Y, lay.flatten(z).to(PETSC_DTYPE))

    def apply(self, pc, X, Y):
        self._run(X, Y, False)

    def applyTranspose(self, pc, X, Y):
        self._run(X, Y, True)


def new_vec(comm, n_local, n_global):
    """A Vec with ``n_local`` entries here (sequential on one rank)."""
    if comm.getSize() == 1:
        return PETSc.Vec().createSeq(n_local, comm=comm)
    return PETSc.Vec().createMPI((n_local, n_global), comm=comm)


class Sizes:
    """Local and global sizes of the state and of the parameter vector.

    The state is split over the ranks as the user's shards are; the parameter vector
    lives on rank 0 (data parallelism: every rank sees all parameters, and PETSc's
    parameter-Jacobian products are summed onto rank 0).
    """

    def __init__(self, comm, n_local, n_p, reducer):
        self.comm = comm
        self.n = n_local
        self.N = int(reducer.sum(n_local))
        self.n_p = n_p
        self.n_p_local = n_p if comm.getRank() == 0 else 0

    @property
    def state(self):
        return (self.n, self.N)

    @property
    def params(self):
        return (self.n_p_local, self.n_p)

    def key(self):
        return (self.n, self.N, self.n_p)


class Wiring:
    """The Vecs, Mats and callbacks of one TS for one state size and form.

    Args:
        ts: the TS to wire.
        form: ``rhs``, ``implicit`` or ``imex``.
        sizes: :class:`Sizes` of the state and parameters.
        reducer: :class:`~pnode.parallel.Reducer` summing parameter products on rank 0.
        dyn: :class:`~pnode.dynamics.Dynamics` of ``func`` (stiff part for imex).
        dyn_ex: Dynamics of ``func_explicit`` (imex only; None means zero).
        trap: the solver's :class:`~pnode.errors.CallbackTrap`.
        mass: :class:`MassMatrix` or None.
        dense: assemble the implicit Jacobian densely (LU) instead of matrix-free.
        preconditioner: optional user PC callable (matrix-free implicit only).
    """

    def __init__(self, ts, form, sizes, reducer, dyn, dyn_ex, trap, mass=None, dense=False,
                 preconditioner=None):
        self.form, self.dyn, self.dyn_ex, self.trap = form, dyn, dyn_ex, trap
        comm = sizes.comm
        n = self.n = sizes.n
        state, params = sizes.state, sizes.params
        red = reducer if comm.getSize() > 1 else None
        self.mats = []
        wrap = trap.wrap
        self.f = new_vec(comm, *state)
        self.vecs = [self.f]
        self.pc_ctx = None
        if dense and comm.getSize() > 1:
            raise ValueError("options['jacobian']='dense' needs a single rank (use the matrix-free default)")
        if form == "rhs":
            self.J = self._shell(JacobianShell(trap), state, state, comm)
            ts.setRHSFunction(wrap(self._rhs), self.f)
            ts.setRHSJacobian(wrap(self._rhs_jacobian), self.J, self.J)
            if sizes.n_p:
                self.Jp = self._shell(ParamJacobianShell(trap, reducer=red), state, params, comm)
                ts.setRHSJacobianP(wrap(self._rhs_jacobian_p), self.Jp)
            return
        # implicit part: F = M u' - f(t, u)
        self.mass = mass
        self.dense = DenseJacobian(n, comm, mass) if dense else None
        if self.dense is not None:
            self.IJ = self.dense.mat
            self.mats.append(self.IJ)
        else:
            self.IJ = self._shell(JacobianShell(trap, b=-1.0, mass=mass), state, state, comm)
        self.fi = self.f.duplicate()
        self.vecs.append(self.fi)
        ts.setIFunction(wrap(self._ifunction), self.fi)
        ts.setIJacobian(wrap(self._ijacobian), self.IJ, self.IJ)
        if sizes.n_p:
            self.IJp = self._shell(ParamJacobianShell(trap, c=-1.0, reducer=red), state, params, comm)
            ts.setIJacobianP(wrap(self._ijacobian_p), self.IJp)
        if preconditioner is not None and self.dense is None:
            self.pc_ctx = ShellPC(preconditioner, trap, dyn.layout, dyn.time_sign)
        if form == "imex":
            # PETSc's ARKIMEX adjoint needs an RHS Jacobian even when g is zero
            self.J = self._shell(JacobianShell(trap), state, state, comm)
            ts.setRHSFunction(wrap(self._rhs_explicit), self.f)
            ts.setRHSJacobian(wrap(self._rhs_jacobian_explicit), self.J, self.J)
            if sizes.n_p:
                self.Jp = self._shell(ParamJacobianShell(trap, reducer=red), state, params, comm)
                ts.setRHSJacobianP(wrap(self._rhs_jacobian_p_explicit), self.Jp)

    def _shell(self, ctx, rows, cols, comm):
        mat = shell_mat(ctx, rows, cols, comm)
        self.mats.append(mat)
        return mat

    def destroy(self):
        for obj in self.mats + self.vecs:
            obj.destroy()
        self.mats, self.vecs = [], []

    def rebind(self, dyn, dyn_ex):
        """Use new Dynamics (a new call) with the same PETSc objects."""
        self.dyn, self.dyn_ex = dyn, dyn_ex
        if self.pc_ctx is not None:
            self.pc_ctx.time_sign = dyn.time_sign

    def forget(self):
        """Drop cached linearizations (graphs) of both parts."""
        for d in (self.dyn, self.dyn_ex):
            if d is not None:
                d.forget()

    def configure_pc(self, ts):
        """After setFromOptions: LU for the dense Jacobian, or the user's PC hook."""
        if self.form == "rhs":
            return
        ksp = ts.getSNES().getKSP()
        if self.dense is not None:
            return
        if self.pc_ctx is not None:
            pc = ksp.getPC()
            pc.setType(PETSc.PC.Type.PYTHON)
            pc.setPythonContext(self.pc_ctx)

    # ---------------------------------------------------------------- rhs form
    def _rhs(self, ts, s, U, F):
        vec_write(F, self.dyn.rhs(s, vec_view(U, "r")))

    def _rhs_jacobian(self, ts, s, U, J, P):
        J.getPythonContext().set_point(self.dyn.linearize(s, vec_view(U, "r")))

    def _rhs_jacobian_p(self, ts, s, U, Jp):
        Jp.getPythonContext().set_point(self.dyn.linearize(s, vec_view(U, "r")))

    # ---------------------------------------------------------------- implicit part
    def _ifunction(self, ts, s, U, Udot, F):
        udot = vec_view(Udot, "r")
        lhs = self.mass.apply(udot) if self.mass is not None else udot
        vec_write(F, lhs - self.dyn.rhs(s, vec_view(U, "r")).to(lhs.device))

    def _ijacobian(self, ts, s, U, Udot, shift, J, P):
        lin = self.dyn.linearize(s, vec_view(U, "r"))
        if self.dense is not None:
            self.dense.assemble(lin, shift, self.n)
        else:
            J.getPythonContext().set_point(lin, shift)
        if self.pc_ctx is not None:
            self.pc_ctx.point = (s, lin.u64, shift)

    def _ijacobian_p(self, ts, s, U, Udot, shift, Jp):
        Jp.getPythonContext().set_point(self.dyn.linearize(s, vec_view(U, "r")))

    # ---------------------------------------------------------------- explicit part (imex)
    def _rhs_explicit(self, ts, s, U, F):
        if self.dyn_ex is None:
            F.zeroEntries()
        else:
            vec_write(F, self.dyn_ex.rhs(s, vec_view(U, "r")))

    def _rhs_jacobian_explicit(self, ts, s, U, J, P):
        # None: the zero operator (ARKIMEX without an explicit part)
        lin = self.dyn_ex.linearize(s, vec_view(U, "r")) if self.dyn_ex is not None else None
        J.getPythonContext().set_point(lin)

    def _rhs_jacobian_p_explicit(self, ts, s, U, Jp):
        lin = self.dyn_ex.linearize(s, vec_view(U, "r")) if self.dyn_ex is not None else None
        Jp.getPythonContext().set_point(lin)


"""Linear algebra of the implicit form: the mass matrix, the dense Jacobian, the user's
preconditioner hook."""
import torch
from petsc4py import PETSc

from ..bridge import PETSC_DTYPE, vec_view, vec_write


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
        self.n = n

    def assemble(self, lin, shift):
        """Fill the matrix at the linearization ``lin`` for the IJacobian ``shift``."""
        dyn, n = lin.dyn, self.n
        u = dyn.layout.to_model(lin.u64)
        jac = torch.func.jacrev(lambda x: dyn.evaluate(lin.t, x))(u).to(PETSC_DTYPE).cpu()
        eye = self.mass.dense(n).cpu() if self.mass is not None else torch.eye(n, dtype=PETSC_DTYPE)
        self.mat.getDenseArray()[:] = (shift * eye - jac).numpy()
        self.mat.assemble()


class ShellPC:
    """PC applying the user's ``options["preconditioner"](t, y, shift, r, transpose)``."""

    def __init__(self, fn, trap):
        self.fn = fn
        self.point = None  # (Linearization, shift) of the last IJacobian
        self.apply = trap.wrap(self.apply)
        self.applyTranspose = trap.wrap(self.applyTranspose)

    def set_point(self, lin, shift):
        """The linearization and shift of the last IJacobian."""
        self.point = (lin, shift)

    def _run(self, X, Y, transpose):
        lin, shift = self.point
        dyn = lin.dyn
        lay = dyn.layout
        t = torch.tensor(dyn.clock.user(lin.s), dtype=lay.dtype, device=lay.device)
        with torch.no_grad():
            z = self.fn(t, lay.unflatten(lay.to_model(lin.u64)), shift,
                        lay.unflatten(lay.to_model(vec_view(X, "r"))), transpose)
        vec_write(Y, lay.flatten(z).to(PETSC_DTYPE))

    def apply(self, pc, X, Y):
        self._run(X, Y, False)

    def applyTranspose(self, pc, X, Y):
        self._run(X, Y, True)

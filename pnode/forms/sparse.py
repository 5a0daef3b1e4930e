"""The exact sparse Jacobian ``shift*M - J`` assembled by colouring, for PETSc's own
preconditioners (``-pc_type lu|ilu|asm|gamg|...`` under the solver's prefix).

``options["sparsity"]`` declares one sample's Jacobian pattern; the state ``(B, ...)``
is B samples the field treats independently, so the whole Jacobian is block diagonal.
The rows of the pattern are coloured once (:mod:`pnode.forms.coloring`); at each
IJacobian, one batched backward pass computes the ``ncolours`` vector-Jacobian products
that hold every entry of every sample's block, and the values go into a PETSc AIJ
matrix (COO-preallocated once). The matrix is the preconditioning matrix of the
Newton-Krylov solve and, once verified (the first assembly of each call: one random
product against the matrix-free ``shift*M v - J v``, to round-off), also gives the
operator's products, so ``-ksp_type preonly -pc_type lu`` is an exact direct solve. A
pattern that misses entries, or a field that couples samples, fails that check with an
error naming ``options['sparsity']``. The adjoint's transposed solves use the same
matrix (PETSc's LU, ILU, ASM and GAMG apply their transposes).
"""
import numpy as np
import torch
from petsc4py import PETSc

from ..bridge import PETSC_DTYPE, vec_view, vec_write
from .coloring import colour_rows


class SparseJacobian:
    """``shift*M - J`` as a block-diagonal AIJ matrix over the local samples.

    Args:
        shape: ``(B, d)`` samples and unknowns per sample (local to this rank).
        pattern: ``(rows, cols)`` of one sample (:func:`~pnode.forms.coloring.pattern`).
        mass: :class:`~pnode.forms.jacobians.MassMatrix` with a ``(d, d)`` matrix, or None.
        comm: the state's communicator.
    """

    def __init__(self, shape, pattern, mass, comm):
        self.B, self.d = B, d = shape
        rows, cols = pattern
        if mass is not None:
            if tuple(mass.m.shape) != (d, d):
                raise ValueError(f"options['sparsity'] needs a per-sample mass matrix of shape ({d}, {d}), not "
                                 f"{tuple(mass.m.shape)}")
            mr, mc = np.nonzero(mass.m.cpu().numpy())
            keys = np.unique(np.concatenate([rows * d + cols, mr * d + mc]))
            rows, cols = keys // d, keys % d
        self.rows, self.cols, self.mass = rows, cols, mass
        colour, self.ncolours = colour_rows(rows, cols, d)
        self._colour_of_entry = torch.as_tensor(colour[rows])
        seeds = torch.zeros(self.ncolours, d, dtype=PETSC_DTYPE)
        seeds[torch.as_tensor(colour), torch.arange(d)] = 1.0
        self._seeds = seeds  # (ncolours, d), repeated over the samples when used
        n = B * d
        self.mat = PETSc.Mat().create(comm=comm)
        self.mat.setSizes([[n, PETSc.DECIDE], [n, PETSc.DECIDE]])
        self.mat.setType(PETSc.Mat.Type.AIJ)
        start = self._start(comm, n)
        offsets = start + d * np.arange(B, dtype=np.int64).reshape(B, 1)
        self.mat.setPreallocationCOO((offsets + rows).reshape(-1).astype(PETSc.IntType),
                                     (offsets + cols).reshape(-1).astype(PETSc.IntType))
        # M's values at the pattern's positions (the identity's: its diagonal; never a dense d x d eye)
        self._mass_values = (torch.as_tensor(rows == cols).to(PETSC_DTYPE) if mass is None else
                             mass.m.cpu()[torch.as_tensor(rows), torch.as_tensor(cols)].to(PETSC_DTYPE))
        self.point = self._jac = None
        self.exact = None  # verified against the matrix-free product (once per call)
        self.assemblies = 0

    @staticmethod
    def _start(comm, n):
        """The first global row of this rank (the ranks' rows in rank order)."""
        return comm.tompi4py().exscan(n) or 0 if comm.getSize() > 1 else 0

    def new_call(self):
        """A new call: verify again at the first assembly."""
        self.exact = None
        self.point = self._jac = None

    def values(self, lin, shift):
        """``(B, nnz)`` float64 values of ``shift*M - J`` at the pattern's positions."""
        B, d = self.B, self.d
        if self._jac is None or self._jac[0] is not lin:  # a new shift alone needs no new VJPs
            seeds = self._seeds.to(lin.u64.device)
            products = lin.vjp_rows(seeds.reshape(-1, 1, d).expand(-1, B, d).reshape(-1, B * d))
            products = products.reshape(self.ncolours, B, d).cpu()
            # entry (r, c) of sample b is component c of the product seeded by r's colour
            self._jac = (lin, products[self._colour_of_entry, :, torch.as_tensor(self.cols)].T)  # (B, nnz)
        jac = self._jac[1]
        return shift * self._mass_values.reshape(1, -1) - jac

    def set_point(self, lin, shift):
        """Assemble at ``lin`` and ``shift`` (nothing to do at the same point and shift:
        PETSc keeps the preconditioner it built from the unchanged matrix)."""
        if self.point is not None and self.point[0] is lin and self.point[1] == shift:
            return
        vals = self.values(lin, shift)
        self.mat.setValuesCOO(np.ascontiguousarray(vals.numpy().reshape(-1)), PETSc.InsertMode.INSERT_VALUES)
        self.mat.assemble()
        self.assemblies += 1
        self.point = (lin, shift)
        if self.exact is None:
            self._verify(lin, shift)

    def _verify(self, lin, shift):
        """Raise unless the matrix times a random vector is the matrix-free product."""
        g = torch.Generator(device="cpu").manual_seed(4321)
        v = torch.randn(self.B * self.d, generator=g, dtype=PETSC_DTYPE)
        x, y = self.mat.createVecs()
        try:
            vec_write(x, v.to(lin.u64.device))
            self.mat.mult(x, y)
            got = vec_view(y, "r").clone()
        finally:
            x.destroy()
            y.destroy()
        vm = v.to(lin.u64.device)
        mv = vm if self.mass is None else self.mass.apply(vm)
        free = shift * mv - lin.jvp(vm)
        err = float((got.to(free.device) - free).norm())
        tol = 1e-10 if lin.dyn.layout.dtype == torch.float64 else 1e-4
        if not err <= tol * float(free.norm()) + 1e-300:
            raise ValueError(f"options['sparsity'] does not hold for func: the coloured Jacobian differs from the "
                             f"exact Jacobian-vector product by {err / max(float(free.norm()), 1e-300):.2e} "
                             "(relative). The declared stencil is too narrow, or func couples the samples of the "
                             "batch (batch norm, attention over the batch): widen the pattern, or drop "
                             "options['sparsity'] for the matrix-free solve")
        self.exact = True

    def multiply(self, lin, shift, X, Y, transpose):
        """``Y = (shift*M - J) X`` (or the transpose) by the matrix when it holds this
        very point and shift; returns False (nothing written) otherwise."""
        if self.point is None or self.point[0] is not lin or self.point[1] != shift or not self.exact:
            return False
        (self.mat.multTranspose if transpose else self.mat.mult)(X, Y)
        return True

    def destroy(self):
        self.mat.destroy()

"""Per-sample Jacobian patterns and their colouring (numpy only).

A pattern is the set of ``(row, col)`` positions where one sample's ``d x d`` Jacobian
may be non-zero, from ``options["sparsity"]`` (:class:`~pnode.settings.Sparsity`): a
box stencil of half-width ``s`` on a 1-D or 2-D grid (periodic or bounded per axis), or
explicit ``(rows, cols)``. The diagonal is always included (``shift*M - J`` has it).

Rows are coloured so that no two rows of one colour share a column (a greedy
distance-2 colouring of the column-intersection graph, in numpy: petsc4py 3.26 does not
expose PETSc's ``MatColoring``). Then one vector-Jacobian product per colour, with the
seed ``w_c = sum of the unit vectors of the rows in colour c``, gives ``J^T w_c``, whose
entry ``j`` is exactly ``J[r, j]`` for the one row ``r`` of colour ``c`` having ``j`` in
its pattern: every entry of the pattern comes out of ``ncolours`` products.
"""
import itertools

import numpy as np


def pattern(sparsity, d):
    """``(rows, cols)`` int64 arrays of one sample's pattern (sorted by row, then column,
    diagonal included, duplicates removed).

    Args:
        sparsity: :class:`~pnode.settings.Sparsity`.
        d: unknowns per sample.

    Raises:
        ValueError: when the pattern does not fit ``d`` unknowns (naming ``options['sparsity']``).
    """
    if sparsity.grid is not None:
        size = int(np.prod(sparsity.grid))
        if size != d:
            raise ValueError(f"options['sparsity'] grid {sparsity.grid} has {size} points but each sample of the "
                             f"state has {d} unknowns")
        rows, cols = _stencil(sparsity.grid, sparsity.stencil, sparsity.periodic)
    else:
        rows = np.asarray(sparsity.rows, dtype=np.int64)
        cols = np.asarray(sparsity.cols, dtype=np.int64)
        if max(rows.max(), cols.max()) >= d:
            raise ValueError(f"options['sparsity'] = (rows, cols) has an index >= {d}, the unknowns per sample")
    diag = np.arange(d, dtype=np.int64)
    keys = np.unique(np.concatenate([rows, diag]) * d + np.concatenate([cols, diag]))
    return keys // d, keys % d


def _stencil(grid, width, periodic):
    """Box stencil of half-width ``width`` on a row-major grid."""
    index = np.arange(int(np.prod(grid))).reshape(grid)
    coords = np.indices(grid).reshape(len(grid), -1)  # (ndim, d)
    rows, cols = [], []
    for offset in itertools.product(range(-width, width + 1), repeat=len(grid)):
        target = coords + np.asarray(offset).reshape(-1, 1)
        keep = np.ones(target.shape[1], dtype=bool)
        for axis, n in enumerate(grid):
            if periodic[axis]:
                target[axis] %= n
            else:
                keep &= (target[axis] >= 0) & (target[axis] < n)
        rows.append(np.flatnonzero(keep))
        cols.append(index[tuple(target[:, keep])])
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def colour_rows(rows, cols, d):
    """Greedy colouring of the rows: rows sharing a column get different colours.

    Returns:
        ``(colour, ncolours)``: ``colour[r]`` for every row ``r < d`` (int64).
    """
    by_col = [[] for _ in range(d)]
    for r, c in zip(rows.tolist(), cols.tolist()):
        by_col[c].append(r)
    by_row = [[] for _ in range(d)]
    for r, c in zip(rows.tolist(), cols.tolist()):
        by_row[r].append(c)
    colour = np.full(d, -1, dtype=np.int64)
    for r in range(d):
        taken = {int(colour[o]) for c in by_row[r] for o in by_col[c] if colour[o] >= 0}
        k = 0
        while k in taken:
            k += 1
        colour[r] = k
    return colour, int(colour.max()) + 1 if d else 0

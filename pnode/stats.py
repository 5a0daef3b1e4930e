"""The counters a solver reports in ``solver.stats`` (a plain dict to the user)."""

KEYS = ("steps", "rejected_steps", "rhs_evals", "jvp_evals", "vjp_evals",
        "newton_iterations", "linear_iterations", "adjoint_linear_iterations", "adjoint_steps",
        "recomputed_steps", "checkpoints", "checkpoint_bytes", "graph_steps", "graph_bytes")


class Stats(dict):
    """``solver.stats``: counters of the last forward (and backward) pass.

    Keys: ``steps``, ``rejected_steps``, ``rhs_evals``, ``jvp_evals``, ``vjp_evals``
    (bumped by :mod:`pnode.dynamics` per evaluation), ``newton_iterations``,
    ``linear_iterations`` (forward), ``adjoint_linear_iterations`` (the adjoint's
    transposed solves), ``adjoint_steps``, ``recomputed_steps``, ``checkpoints``
    (most states held at once), ``checkpoint_bytes``, ``graph_steps`` and ``graph_bytes``
    (``Checkpoint("graphs")``: steps whose stage graphs were kept, and the most bytes the
    kept graphs' saved tensors held at once). The writers below are the only
    other places that change them.
    """

    def __init__(self):
        super().__init__(dict.fromkeys(KEYS, 0))

    def forward_done(self, ts):
        """Counts of a finished forward solve."""
        self["steps"] = ts.getStepNumber()
        self["rejected_steps"] = ts.getStepRejections()
        self["newton_iterations"] = ts.getSNESIterations()
        self["linear_iterations"] = ts.getKSPIterations()

    def adjoint_done(self, adjoint_steps, linear_iterations):
        """Counts of a finished adjoint solve: its steps and the Krylov iterations of
        its transposed linear solves (the adjoint has no Newton iterations)."""
        self["adjoint_steps"] = adjoint_steps
        self["adjoint_linear_iterations"] = linear_iterations

    def checkpoints(self, held, nbytes, recomputed=None):
        """The most checkpoints held, their bytes, and (if known) the steps recomputed."""
        self["checkpoints"] = held
        self["checkpoint_bytes"] = nbytes
        if recomputed is not None:
            self["recomputed_steps"] = recomputed

    def recomputed(self, steps):
        """``steps`` more forward steps were re-taken for the adjoint."""
        self["recomputed_steps"] += steps

    def graphs(self, steps, nbytes):
        """Stored stage graphs: steps covered when the forward ended, peak bytes."""
        self["graph_steps"] = steps
        self["graph_bytes"] = nbytes

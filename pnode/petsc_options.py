"""The options database: which value PETSc will use for each solver setting.

PETSc is initialised with ``sys.argv`` when pnode is imported (:mod:`pnode.runtime`), so
every solver setting can come from the command line (``python train.py -ts_type cn
-ts_monitor``). Settings
made in code are *defaults*: :func:`option_defaults` inserts them under a solver's prefix
only where the command line said nothing, and removes them again once the solver has read
them, so they never leak into another solver.
"""
import difflib
import warnings
from contextlib import contextmanager

from petsc4py import PETSc

# The options the command line gave PETSc (whoever initialised it: pnode, or a program
# that called petsc4py.init itself first), checked for misspellings by warn_unused.
_COMMAND_LINE = tuple(PETSc.Options().getAll())
_REPORTED_ARGS = set()  # command-line names already warned about (once per process)


def option_name(prefix, key):
    """The full option name ``-{prefix}{key}`` (``key`` without the leading dash)."""
    return "-" + (prefix or "") + key.lstrip("-")


def format_value(value):
    """PETSc's string form of an option value (booleans as true/false, None as a flag)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    return str(value)


@contextmanager
def option_defaults(prefix, defaults):
    """Insert ``defaults`` (``{"ts_type": "rk", ...}``) under ``prefix`` where unset.

    Options already in the database (from the command line or the user's own
    ``PETSc.Options()``) win. On exit the database is as it was before: the inserted
    options are removed, and so is anything PETSc itself added while reading them
    (a deprecated name such as ``-ts_dt`` is copied to its new name), so that no
    setting leaks into a later solver.
    """
    db = PETSc.Options()
    before = set(db.getAll())
    try:
        for key, value in defaults.items():
            name = option_name(prefix, key)
            if not db.hasName(name):
                db.setValue(name, format_value(value))
        yield
    finally:
        for name in set(db.getAll()) - before:
            db.delValue("-" + name)


def user_value(prefix, key):
    """The string value of option ``-{prefix}{key}`` if the user set it, else None."""
    db = PETSc.Options()
    name = option_name(prefix, key)
    return db.getString(name) if db.hasName(name) else None


# PETSc's TSTrajectory has no options prefix: its options are read unprefixed.
_UNPREFIXED = ("ts_trajectory_",)


def _unprefixed(key):
    return key.startswith(_UNPREFIXED)


class OptionSource:
    """One solver's view of the options: command line > ``petsc_options`` > code defaults.

    Every question "which value will PETSc use for this option" goes through
    :meth:`get`, and every solve inserts its defaults through :meth:`applied`, so the
    precedence is decided here and nowhere else.

    Args:
        prefix: the solver's options prefix (None for none).
        petsc_options: the user's dict of PETSc options (keys without the dash).
    """

    def __init__(self, prefix, petsc_options):
        self.prefix = prefix
        self.petsc_options = dict(petsc_options or {})
        self._reported = set()  # petsc_options keys already warned about as unread

    def _prefix_of(self, key):
        return None if _unprefixed(key) else self.prefix

    def get(self, key, default=None):
        """The value PETSc will see for ``key``: the command line's (a string), else
        ``petsc_options[key]``, else ``default``."""
        value = user_value(self._prefix_of(key), key)
        if value is not None:
            return value
        return self.petsc_options.get(key, default)

    def given(self, key):
        """Whether the command line or ``petsc_options`` sets ``key``."""
        return self.get(key) is not None

    @contextmanager
    def applied(self, defaults):
        """Insert ``defaults`` overridden by ``petsc_options`` (the command line wins
        over both), under the prefix or, for trajectory options, unprefixed; removed on
        exit."""
        merged = dict(defaults)
        merged.update(self.petsc_options)
        prefixed = {k: v for k, v in merged.items() if not _unprefixed(k)}
        plain = {k: v for k, v in merged.items() if _unprefixed(k)}
        with option_defaults(self.prefix, prefixed), option_defaults(None, plain):
            yield

    def warn_unused(self, ts_type):
        """Warn (once per key) about ``petsc_options`` PETSc did not read while setting up
        this solve: a misspelt key (``ts_monitr``) or one the TS type does not use (Newton
        options for an explicit method). Call right after ``setFromOptions``, inside
        :meth:`applied`: options read later would come too late anyway. Command-line
        options get the same check for misspellings (:meth:`_warn_misspelt_args`)."""
        self._warn_misspelt_args()
        if not self.petsc_options:  # the common case: nothing given in code to check
            return
        db = PETSc.Options()
        reported = self._reported
        present = db.getAll()  # (hasName would itself mark an option as used)
        names = {k: option_name(self._prefix_of(k), k).lstrip("-") for k in self.petsc_options}
        unused = [k for k, name in names.items()
                  if k.startswith(_CHECKED) and k not in reported and name in present and not db.used(name)]
        for key in unused:
            reported.add(key)
            close = difflib.get_close_matches(key, _KNOWN, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close and close[0] != key else ""
            warnings.warn(f"petsc_options[{key!r}] was not read by PETSc{hint}: misspelt, or not used by TS type "
                          f"{ts_type!r}", stacklevel=_user_stacklevel())


    def _warn_misspelt_args(self):
        """Warn (once per process) about a command-line option under this solver's prefix
        that nothing has read so far and that is a near miss of a common option
        (``-ts_rk_tpye``), instead of PETSc's "Option left" at exit. Only near misses:
        another solver of the program (another TS type, a later solve) may still read a
        valid option this one ignores, and PETSc reports those at exit as before."""
        if not _COMMAND_LINE:
            return
        db = PETSc.Options()
        for name in _COMMAND_LINE:
            key = name[len(self.prefix or ""):] if name.startswith(self.prefix or "") else None
            if (key is None or not key.startswith(_CHECKED) or key in _KNOWN or key in _VALID
                    or name in _REPORTED_ARGS or db.used(name)):
                continue
            close = difflib.get_close_matches(key, _KNOWN, n=1, cutoff=0.75)
            if close:
                _REPORTED_ARGS.add(name)
                warnings.warn(f"command-line option -{name} has not been read by PETSc: did you mean "
                              f"-{option_name(self.prefix, close[0]).lstrip('-')}? (PETSc would report it as "
                              f"'Option left' at exit)", stacklevel=_user_stacklevel())


def _user_stacklevel():
    from .errors import user_stacklevel
    return user_stacklevel() - 1  # counted from this helper, one frame below the warning


# Keys whose use pnode can check right after TSSetFromOptions (log_*, options_*, ... are
# read elsewhere or at exit), and a list of common ones to suggest for a misspelling.
_CHECKED = ("ts_", "snes_", "ksp_", "pc_")
_KNOWN = (
    "ts_type", "ts_rk_type", "ts_arkimex_type", "ts_theta_theta", "ts_theta_endpoint", "ts_monitor", "ts_view",
    "ts_adapt_type", "ts_adapt_dt_min", "ts_adapt_dt_max", "ts_adapt_monitor", "ts_adapt_wnormtype",
    "ts_adapt_clip", "ts_adapt_safety", "ts_max_steps", "ts_max_reject", "ts_time_step", "ts_rtol", "ts_atol",
    "ts_max_snes_failures", "ts_trajectory_type", "ts_trajectory_max_cps_ram", "ts_trajectory_max_cps_disk",
    "ts_trajectory_solution_only", "ts_bdf_order", "ts_event_tol", "snes_monitor", "snes_converged_reason",
    "snes_max_it", "snes_rtol", "snes_atol", "snes_stol", "snes_type", "snes_linesearch_type",
    "snes_lag_jacobian", "snes_lag_preconditioner", "snes_view", "ksp_type", "ksp_monitor",
    "ksp_converged_reason", "ksp_rtol", "ksp_atol", "ksp_max_it", "ksp_gmres_restart", "ksp_view", "pc_type",
    "pc_factor_mat_solver_type",
)
# Real options near a common one, read after setFromOptions or by another TS type: not
# to be mistaken for misspellings of the command line.
_VALID = (
    "ts_adjoint_monitor", "ts_adjoint_view_solution", "ts_adjoint_solve", "ts_trajectory_max_units_ram",
    "ts_trajectory_max_units_disk", "ts_trajectory_monitor", "ts_trajectory_dirname", "ts_trajectory_file_template",
    "ts_trajectory_use_history", "ts_max_time", "ts_init_time", "ts_exact_final_time", "ts_adapt_basic_clip",
    "ts_adapt_basic_safety", "ts_adapt_dsp_filter", "ts_adapt_scale_solve_failed", "ts_monitor_solution",
    "ts_monitor_lg_solution", "ts_dt", "ts_theta_initial_guess_extrapolate", "ts_rk_multirate",
    "ts_arkimex_fully_implicit", "ts_arkimex_initial_guess_extrapolate", "ts_event_monitor",
    "ts_adapt_time_step_increase_delay", "ksp_monitor_true_residual", "snes_linesearch_monitor",
    "ksp_error_if_not_converged", "snes_error_if_not_converged", "pc_factor_mat_ordering_type",
)

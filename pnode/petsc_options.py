"""PETSc start-up and the options database.

PETSc is initialised with ``sys.argv`` when pnode is imported, so every solver setting
can come from the command line (``python train.py -ts_type cn -ts_monitor``). Settings
made in code are *defaults*: :func:`option_defaults` inserts them under a solver's prefix
only where the command line said nothing, and removes them again once the solver has read
them, so they never leak into another solver.
"""
import sys
from contextlib import contextmanager

from mpi4py import MPI  # noqa: F401  (loads libmpi before libpetsc needs it)
import petsc4py


def _init_args(argv):
    """PETSc's view of the command line: the program name and the single-dash options.

    ``--long`` flags (and the value after one) belong to the script's own argument parser
    (PETSc options have one dash), so they are not handed to PETSc, which would report
    them as unused or read the value as another option's.
    """
    # `python -c ...` leaves sys.argv == ['-c']: that is no PETSc option either.
    prog = sys.executable if not argv or argv[0] in ("", "-c") else argv[0]
    args, rest = [prog], list(argv)[1:]
    while rest:
        a = rest.pop(0)
        if not a.startswith("--"):
            args.append(a)
        elif "=" not in a and rest and not rest[0].startswith("-"):
            rest.pop(0)  # the --flag's value (`--iters 300`), not a PETSc option value
    return args


petsc4py.init(_init_args(sys.argv))
from petsc4py import PETSc  # noqa: E402


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

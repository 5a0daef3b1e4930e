"""Everything pnode does to the process, in one place, each effect with its opt-out.

``import pnode`` calls :func:`start` once, before any other pnode module touches PETSc:

==================  ===========================================================  ==============================
effect              what and why                                                 opt-out
==================  ===========================================================  ==============================
petsc_init          PETSc initialised with the PETSc-like options of ``sys.argv``  ``PNODE_PETSC_SIGNAL_HANDLER=1``
                    (``-ts_type cn`` works from the command line), and with      keeps PETSc's signal handler
                    ``-no_signal_handler`` so Ctrl-C and SIGTERM act as Python's
petsc_build         a complex or single-precision PETSc refused (pnode's views   none: pnode cannot run there
                    and C prototypes assume real doubles)
blas_threads        PETSc's BLAS on one thread: its spinning workers took the    ``PNODE_BLAS_THREADS=n``, or
                    cores torch computes on (a training step's wall time 2x)     the user's ``OPENBLAS_NUM_THREADS``
tableaus            pnode's extra RK/DIRK tableaus (tsit5, dopri8, ...) added to  ``PNODE_TABLEAUS=0`` (those
                    PETSc's registry, so they get PETSc's adjoint                 methods are then unavailable)
printing            PETSc's output through ``sys.stdout``/``sys.stderr``          ``PNODE_PETSC_PRINT=c``
                    (petsc4py's own hook): notebooks, redirections, ordering
mpi_abort           with more than one MPI rank, an uncaught exception prints    ``PNODE_MPI_ABORT=0``
                    its rank's traceback and aborts the job (exit code 1)
                    instead of leaving the other ranks waiting for ever
close_at_exit       live solvers' PETSc objects destroyed at exit, before PETSc  none: left to the garbage
                    finalises (left to the garbage collector they crashed)       collector they crash
heap                (on the first stored-graph solve) glibc keeps freed graph    ``PNODE_KEEP_HEAP=0``, or the
                    memory for the next iteration instead of faulting it in      user's ``MALLOC_*_`` variables
==================  ===========================================================  ==============================

:func:`effects` lists what happened in this process; :func:`pnode.info` prints it.
"""
import atexit
import os
import re
import sys
import time
import traceback

from mpi4py import MPI  # loads libmpi before libpetsc needs it
import petsc4py

from . import clib

_EFFECTS = {}  # name -> what this process got, in the order applied
_state = {"started": False, "trim": 0}


def effects():
    """``{effect: state}`` of every process-wide effect pnode applied or left out here."""
    return dict(_EFFECTS)


# What PETSc's own options are called after any solver prefix ("-enc_ts_type"): only
# these reach PETSc, so the flags of a script or of Jupyter ("-f kernel.json", "-n 3 -v",
# "-h") are neither read by PETSc nor reported as unused PETSc options at exit.
_PETSC_WORDS = ("ts", "snes", "ksp", "pc", "mat", "vec", "dm", "tao", "log", "options", "malloc",
                "info", "on_error", "start_in_debugger", "debugger", "no_signal_handler", "viewer",
                "draw", "help", "version", "history", "fp_trap", "device", "use_gpu_aware_mpi", "petsc")
_PETSC_OPTION = re.compile(r"-(?:[A-Za-z0-9]+_)*?(?:%s)(?:_[A-Za-z0-9_]*)?$" % "|".join(_PETSC_WORDS))
_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _is_value(token):
    """A token that is an option's value rather than another option."""
    return not token.startswith("-") or bool(_NUMBER.match(token))


def petsc_args(argv, environ=os.environ):
    """PETSc's view of the command line: the program name, the options that look like
    PETSc's (with their values), and ``-no_signal_handler``.

    Everything else (``--long`` flags, a script's short flags, Jupyter's ``-f file``)
    belongs to someone else and, with the value after it, is left out. PETSc's signal
    handler is off so that Ctrl-C, SIGTERM and a closed pipe behave as Python's do
    (``PNODE_PETSC_SIGNAL_HANDLER=1`` keeps PETSc's crash handler for debugging).
    """
    # `python -c ...` leaves sys.argv == ['-c']: that is no PETSc option either.
    prog = sys.executable if not argv or argv[0] in ("", "-c") else argv[0]
    args, rest = [prog], list(argv)[1:]
    while rest:
        a = rest.pop(0)
        keep = _PETSC_OPTION.match(a) is not None
        if keep:
            args.append(a)
        while rest and _is_value(rest[0]):  # its value(s), PETSc's or not
            v = rest.pop(0)
            if keep:
                args.append(v)
    if environ.get("PNODE_PETSC_SIGNAL_HANDLER") != "1" and "-no_signal_handler" not in args:
        args.append("-no_signal_handler")
    return args


def start(environ=os.environ):
    """Apply every import-time effect of the table above (once per process)."""
    if _state["started"]:
        return
    _state["started"] = True
    args = petsc_args(sys.argv, environ)
    petsc4py.init(args)
    from petsc4py import PETSc
    _EFFECTS["petsc_init"] = " ".join(args[1:]) or "(no options)"
    clib.check_petsc_build(PETSc.ScalarType, PETSc.RealType)
    _EFFECTS["petsc_build"] = "real double scalars, %d-bit indices" % (8 * PETSc.IntType().itemsize)
    _EFFECTS["blas_threads"] = _limit_blas_threads(environ)
    _EFFECTS["tableaus"] = _register_tableaus(environ)
    _EFFECTS["printing"] = _route_printing(PETSc, environ)
    _EFFECTS["mpi_abort"] = _abort_on_uncaught(environ)


def _limit_blas_threads(environ):
    """PETSc's vector operations on states of more than ~10^4 entries reach a threaded
    BLAS, whose workers then spin waiting for the next call on the cores torch's kernels
    run on (a 10-step RK4 training step: 104 -> 209 ms wall). One thread is also what
    PETSc recommends with MPI. A user who set ``OPENBLAS_NUM_THREADS`` has chosen."""
    want = environ.get("PNODE_BLAS_THREADS")
    if want is None and ("OPENBLAS_NUM_THREADS" in environ or "BLIS_NUM_THREADS" in environ):
        return "left as the environment set it"
    n = int(want) if want else 1
    done = clib.set_blas_threads(n)
    return f"{n} thread(s)" if done else "no known BLAS library"


def _register_tableaus(environ):
    if environ.get("PNODE_TABLEAUS") == "0":
        return "not registered (PNODE_TABLEAUS=0)"
    from .tableaus import register_all
    return "registered: " + ", ".join(register_all())


def _route_printing(PETSc, environ):
    """PETSc prints (monitors, viewers, error messages) through its ``PetscVFPrintf``;
    petsc4py's own hook sends it to Python's ``sys.stdout``/``sys.stderr``, so it
    appears in a notebook cell or a redirected stream, in order with ``print``. It is
    popped again at exit, before PETSc finalises."""
    if environ.get("PNODE_PETSC_PRINT") == "c":
        return "PETSc's own (PNODE_PETSC_PRINT=c)"
    push = getattr(PETSc, "_push_python_vfprintf", None)
    if push is None:  # pragma: no cover - petsc4py older than pnode supports
        return "PETSc's own (this petsc4py has no Python printing hook)"
    try:
        push()
    except AssertionError:  # petsc4py pushed its hook itself (it does under a redirected stdout)
        return "sys.stdout / sys.stderr (petsc4py's hook, installed by petsc4py)"
    atexit.register(PETSc._pop_python_vfprintf)
    return "sys.stdout / sys.stderr (petsc4py's hook)"


def _abort_on_uncaught(environ):
    """``mpiexec`` waits for every rank: one rank that dies of an exception while the
    others wait in a collective (or in MPI_Finalize) hangs the job until its allocation
    ends. As ``python -m mpi4py`` does, an uncaught exception prints its traceback with
    the rank and aborts every rank (exit code 1)."""
    if MPI.COMM_WORLD.Get_size() == 1:
        return "off (one rank)"
    if environ.get("PNODE_MPI_ABORT") == "0":
        return "off (PNODE_MPI_ABORT=0)"
    abort_on_exception(MPI.COMM_WORLD)
    return "on: an uncaught exception aborts all %d ranks" % MPI.COMM_WORLD.Get_size()


_SECONDARY_GRACE = 4.0  # seconds a rank that failed because another did waits before aborting
_FORWARD_GRACE = 1.5  # seconds between printing the traceback and aborting (mpiexec's forwarding)


def abort_on_exception(comm):
    """Make an uncaught exception on any rank of ``comm`` (an mpi4py communicator) print
    its traceback once, prefixed with the rank, and abort the whole job (exit code 1).
    Installing it again (any communicator) changes nothing."""
    if comm.Get_size() == 1 or getattr(sys.excepthook, "pnode_abort", False):
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        rank = comm.Get_rank()
        try:
            if getattr(exc, "reason", None) == "OTHER_RANK":
                # the rank that failed first is aborting the job with the traceback that
                # matters; give it time to print before this one ends everything
                sys.stderr.write(f"[rank {rank}] {exc}\n")
                sys.stderr.flush()
                time.sleep(_SECONDARY_GRACE)
            if previous is sys.__excepthook__:  # one write: an abort elsewhere cannot cut it short
                sys.stderr.write(f"[rank {rank}] uncaught exception: aborting the MPI job\n"
                                 + "".join(traceback.format_exception(exc_type, exc, tb)))
            else:  # the user's (or IPython's) own hook prints
                sys.stderr.write(f"[rank {rank}] uncaught exception: aborting the MPI job\n")
                previous(exc_type, exc, tb)
            sys.stderr.flush()
            # mpiexec forwards each rank's output through a pipe and drops what it has not
            # read yet when the job is aborted: give it a moment to pass the traceback on
            time.sleep(_FORWARD_GRACE)
        finally:
            comm.Abort(1)
    hook.pnode_abort = True
    sys.excepthook = hook


def at_exit(fn):
    """Run ``fn`` at interpreter exit, before PETSc finalises (pnode closes its solvers
    with it: PETSc objects left to the garbage collector crashed at exit)."""
    atexit.register(fn)
    _EFFECTS["close_at_exit"] = "live solvers closed before PETSc finalises"


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_CEILING = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_SLACK = 64 * 2**20  # trajectory vectors and allocator slack freed along with the graphs


def retain_heap(nbytes, environ=os.environ):
    """Keep up to ``nbytes`` (plus slack) of freed heap in the process (glibc only);
    returns the trim threshold now in force (0 when pnode leaves the allocator alone).

    Stored stage graphs (:mod:`pnode.graphs`) are hundreds of megabytes made in one
    forward pass and freed by its adjoint. glibc hands the freed top of its heap back to
    the system once more than ``M_TRIM_THRESHOLD`` bytes are free there, and the next
    iteration faults every page in again (RK4-100 with 800 MB of graphs: 90-180 thousand
    faults, 0.25-0.4 s of a 1.0-1.4 s iteration). This raises the trim threshold to a
    little over the graph bytes (and fixes the mmap threshold at glibc's own 32 MB
    ceiling, which setting the trim threshold would otherwise freeze where it was). It
    only ever raises them, and leaves alone a process whose user set
    ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or
    ``PNODE_KEEP_HEAP=0``.
    """
    mine = environ.get("PNODE_KEEP_HEAP", "1") == "0" or any(
        k in environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"))
    mallopt = None if mine else clib.glibc_mallopt()
    if mallopt is None:
        _EFFECTS.setdefault("heap", "left alone" if mine else "not glibc: left alone")
        return 0
    want = min(int(nbytes) + _SLACK, 2**31 - 1)  # mallopt takes an int
    if want > _state["trim"]:
        if _state["trim"] == 0:
            mallopt(_M_MMAP_THRESHOLD, _MMAP_CEILING)
        mallopt(_M_TRIM_THRESHOLD, want)
        _state["trim"] = want
        _EFFECTS["heap"] = f"glibc trim threshold {want} bytes, mmap threshold {_MMAP_CEILING} bytes"
    return _state["trim"]


def heap_trim_threshold():
    """The trim threshold pnode set (0: the allocator is as glibc configured it)."""
    return _state["trim"]

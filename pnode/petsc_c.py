"""The few PETSc C functions petsc4py does not wrap, called through ctypes."""
import ctypes
import functools
import os



@functools.lru_cache(maxsize=1)
def libpetsc():
    """The PETSc library petsc4py runs on: symbols are looked up through petsc4py's own
    extension module, whose dependencies include exactly that libpetsc (not a copy named
    by a configuration file, which a cached wheel may have recorded elsewhere)."""
    from petsc4py import PETSc
    lib = ctypes.CDLL(PETSc.__file__)
    if not hasattr(lib, "TSRKRegister"):  # pragma: no cover - an unusual petsc4py build
        lib = ctypes.CDLL(loaded_library_path() or "libpetsc.so")
    return lib


def loaded_library_path():
    """The file of the libpetsc this process has loaded (from /proc/self/maps), or None."""
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libpetsc.so"):
                    return os.path.realpath(path)
    except OSError:  # pragma: no cover - not Linux
        pass
    return None


# Thread-count setters of the BLAS libraries PETSc may be linked against.
_BLAS_SETTERS = (("openblas_set_num_threads", "openblas_get_num_threads"),
                 ("bli_thread_set_num_threads", "bli_thread_get_num_threads"))


def petsc_blas_libraries():
    """Paths of the loaded BLAS libraries libpetsc itself links (OpenBLAS or BLIS, as
    ``libopenblas*``/``libblas*``/``libblis*``), from /proc/self/maps; numpy's bundled
    ``libscipy_openblas`` is another library and not listed."""
    found = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                path = line.split()[-1]
                name = os.path.basename(path)
                if name.startswith(("libopenblas", "libblas.so", "libblis")) and path not in found:
                    found.append(path)
    except OSError:  # pragma: no cover - not Linux
        pass
    return found


def _blas_each(call):
    """``call(lib, setter, getter)`` for each BLAS library of PETSc's that has a known
    thread-count API; returns {path: what call returned}."""
    out = {}
    for path in petsc_blas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:  # pragma: no cover - listed but not loadable by name
            continue
        api = next(((getattr(lib, s), getattr(lib, g)) for s, g in _BLAS_SETTERS if hasattr(lib, s)), None)
        if api is not None:
            api[0].argtypes, api[1].restype = [ctypes.c_int], ctypes.c_int
            out[path] = call(*api)
    return out


def limit_blas_threads(environ=os.environ):
    """Run PETSc's BLAS on ``PNODE_BLAS_THREADS`` threads (default 1); returns the
    {library: threads} it set.

    PETSc's vector operations on a state of more than ~10^4 entries reach a threaded
    BLAS, whose worker threads then spin waiting for the next call; they take the cores
    torch's kernels run on (measured: a 10-step RK4 training step went from 104 ms to
    209 ms wall, 212 ms to 415 ms CPU). One thread is what PETSc recommends with MPI as
    well. A user who set ``OPENBLAS_NUM_THREADS`` has chosen already and is left alone.
    """
    want = environ.get("PNODE_BLAS_THREADS")
    if want is None and ("OPENBLAS_NUM_THREADS" in environ or "BLIS_NUM_THREADS" in environ):
        return {}
    n = int(want) if want else 1
    return _blas_each(lambda set_threads, _: (set_threads(n), n)[1])


def blas_threads():
    """{library: threads} of the BLAS libraries PETSc links (for :func:`pnode.info`)."""
    return _blas_each(lambda _, get_threads: int(get_threads()))


def _check(err, what):
    if err != 0:
        raise RuntimeError(f"{what} failed with PETSc error {err}")


def rk_has_embedded(ts):
    """Whether the RK tableau of ``ts`` (type ``rk``, set up) has an embedded error estimator."""
    bembed = ctypes.POINTER(ctypes.c_double)()
    _check(libpetsc().TSRKGetTableau(ctypes.c_void_p(ts.handle), None, None, None, None, ctypes.byref(bembed),
                                     None, None, None), "TSRKGetTableau")
    return bool(bembed)


def set_adapt_type(ts, name):
    """``TSAdaptSetType(TSGetAdapt(ts), name)`` (petsc4py has no TSAdapt)."""
    lib, adapt = libpetsc(), ctypes.c_void_p()
    _check(lib.TSGetAdapt(ctypes.c_void_p(ts.handle), ctypes.byref(adapt)), "TSGetAdapt")
    _check(lib.TSAdaptSetType(adapt, name.encode()), "TSAdaptSetType")

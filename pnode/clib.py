"""Every C function pnode calls through ctypes, declared once with its argument types.

petsc4py wraps neither ``TSRKRegister``/``TSARKIMEXRegister`` (pnode's extra tableaus)
nor ``TSRKGetTableau``; the BLAS libraries PETSc links have their
own thread-count setters; glibc's ``mallopt`` keeps freed graph memory in the process.
Every PETSc prototype takes its ``PetscInt``/``PetscReal`` from petsc4py's
``PETSc.IntType``/``RealType`` (:func:`petsc_ctypes`), so a PETSc built with 64-bit
indices gets 64-bit integers instead of silently truncated ones; a complex or
single-precision PETSc is refused (:func:`check_petsc_build`), since pnode's Vec views
and these prototypes assume real double scalars.
"""
import ctypes
import functools
import os

import numpy as np

_CTYPE_OF = {np.dtype(np.int32): ctypes.c_int32, np.dtype(np.int64): ctypes.c_int64,
             np.dtype(np.float64): ctypes.c_double, np.dtype(np.float32): ctypes.c_float}


def check_petsc_build(scalar_type, real_type):
    """Refuse a PETSc whose scalars are not real double precision (RuntimeError naming
    the build option to change)."""
    scalar, real = np.dtype(scalar_type), np.dtype(real_type)
    if scalar.kind == "c":
        raise RuntimeError(f"pnode needs a PETSc with real scalars, but this petsc4py's PETSc uses {scalar.name}: "
                           "build PETSc with --with-scalar-type=real (PETSC_DIR/PETSC_ARCH or scripts/install.sh)")
    if real != np.dtype(np.float64):
        raise RuntimeError(f"pnode needs a double-precision PETSc, but this petsc4py's PETSc uses {real.name}: "
                           "build PETSc with --with-precision=double")


def petsc_ctypes(int_type, real_type):
    """``(PetscInt, PetscReal)`` ctypes for PETSc's ``IntType`` and ``RealType``."""
    try:
        return _CTYPE_OF[np.dtype(int_type)], _CTYPE_OF[np.dtype(real_type)]
    except KeyError as e:
        raise RuntimeError(f"unsupported PETSc number type {e.args[0]}") from None


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


@functools.lru_cache(maxsize=1)
def petsc_functions():
    """PETSc's C functions pnode uses, with prototypes for this build's number types."""
    from petsc4py import PETSc
    pint, preal = petsc_ctypes(PETSc.IntType, PETSc.RealType)
    lib, ptr, cstr, err = libpetsc(), ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    reals = ctypes.POINTER(preal)
    protos = {
        # name, order, s, A, b, c, bembed, p (dense output order), binterp
        "TSRKRegister": [cstr, pint, pint, reals, reals, reals, reals, pint, reals],
        # name, order, s, At, bt, ct, A, b, c, bembedt, bembed, pinterp, binterpt, binterp
        "TSARKIMEXRegister": [cstr, pint, pint, reals, reals, reals, reals, reals, reals, reals, reals, pint, reals,
                              reals],
        # ts, s, A, b, c, bembed, p, binterp, FSAL
        "TSRKGetTableau": [ptr, ctypes.POINTER(pint)] + [ctypes.POINTER(reals)] * 4
                          + [ctypes.POINTER(pint), ctypes.POINTER(reals), ctypes.c_void_p],
    }
    out = {}
    for name, argtypes in protos.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, err
        out[name] = fn
    out["PetscInt"], out["PetscReal"] = pint, preal
    return out


def _check(code, what):
    if code != 0:
        raise RuntimeError(f"{what} failed with PETSc error {code}")


def _reals(values):
    real = petsc_functions()["PetscReal"]
    values = [float(x) for x in values]
    return (real * len(values))(*values)


def rk_register(name, order, A, b, c, bembed=None):
    """``TSRKRegister``: an explicit RK tableau (``A`` row-major ``s*s``) under ``name``."""
    fns = petsc_functions()
    s = len(b)
    _check(fns["TSRKRegister"](name.encode(), order, s, _reals(A), _reals(b), _reals(c),
                               _reals(bembed) if bembed is not None else None, 0, None), f"TSRKRegister({name!r})")


def dirk_register(name, order, A, b, c):
    """``TSARKIMEXRegister`` of a diagonally implicit tableau (the implicit part; the
    unused explicit part is zero with the same ``b`` and ``c``)."""
    fns = petsc_functions()
    s = len(b)
    _check(fns["TSARKIMEXRegister"](name.encode(), order, s, _reals(A), _reals(b), _reals(c), _reals([0.0] * (s * s)),
                                    _reals(b), _reals(c), None, None, 0, None, None), f"TSARKIMEXRegister({name!r})")


def rk_tableau(ts):
    """``(A, b, c, bembed)`` of the RK tableau of ``ts`` (type ``rk``, set up) as lists of
    floats (``A`` row-major ``s*s``; ``bembed`` None without an error estimator)."""
    fns = petsc_functions()
    s = fns["PetscInt"]()
    A, b, c, bembed = (ctypes.POINTER(fns["PetscReal"])() for _ in range(4))
    _check(fns["TSRKGetTableau"](ctypes.c_void_p(ts.handle), ctypes.byref(s), ctypes.byref(A), ctypes.byref(b),
                                 ctypes.byref(c), ctypes.byref(bembed), None, None, None), "TSRKGetTableau")
    n = s.value
    return ([A[i] for i in range(n * n)], [b[i] for i in range(n)], [c[i] for i in range(n)],
            [bembed[i] for i in range(n)] if bembed else None)


@functools.lru_cache(maxsize=None)
def rk_type_has_embedded(name):
    """Whether PETSc's RK tableau ``name`` (``-ts_rk_type``) has an embedded error
    estimator; True for a name PETSc does not know (its options check reports that)."""
    from petsc4py import PETSc
    ts = PETSc.TS().create(comm=PETSc.COMM_SELF)
    try:
        ts.setType("rk")
        ts.setRKType(name)
        return rk_tableau(ts)[3] is not None
    except PETSc.Error:
        return True
    finally:
        ts.destroy()


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
    """``call(setter, getter)`` for each BLAS library of PETSc's that has a known
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


def set_blas_threads(n):
    """Set every PETSc BLAS library's thread count to ``n``; returns {library: n}."""
    return _blas_each(lambda set_threads, _: (set_threads(n), n)[1])


def blas_threads():
    """{library: threads} of the BLAS libraries PETSc links (for :func:`pnode.info`)."""
    return _blas_each(lambda _, get_threads: int(get_threads()))


@functools.lru_cache(maxsize=1)
def glibc_mallopt():
    """glibc's ``mallopt(param, value)``, or None on another C library."""
    try:
        lib = ctypes.CDLL(None)
    except OSError:  # pragma: no cover - no C library to ask
        return None
    if not (hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "mallopt")):
        return None
    lib.mallopt.argtypes, lib.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return lib.mallopt

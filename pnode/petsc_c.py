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

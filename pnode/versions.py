"""``pnode.info()``: versions and build facts, for bug reports."""
import os
import platform
import sys

from . import runtime
from .clib import blas_threads, loaded_library_path


def info_dict():
    """The facts :func:`info` prints, as a dict."""
    import mpi4py
    import numpy
    import petsc4py
    import torch
    from mpi4py import MPI
    from petsc4py import PETSc

    from . import __version__

    major, minor, sub = PETSc.Sys.getVersion()
    try:
        conf = petsc4py.get_config()
    except Exception:  # pragma: no cover - depends on the PETSc install
        conf = {}
    try:
        import petsc.lib as _petsc_lib  # PyPI petsc
        configure = getattr(_petsc_lib, "get_config", lambda: {})()
    except Exception:
        configure = {}
    return {
        "pnode": __version__,
        "python": sys.version.split()[0] + " (" + platform.platform() + ")",
        "torch": torch.__version__ + (" (CUDA " + str(torch.version.cuda) + ")" if torch.version.cuda else " (CPU)"),
        "numpy": numpy.__version__,
        "petsc": f"{major}.{minor}.{sub}",
        "petsc_lib": loaded_library_path() or "(unknown)",
        "petsc_dir": _petsc_dir(conf),
        "petsc_arch": conf.get("PETSC_ARCH", ""),
        "petsc_configure": _configure_options(),
        "petsc_blas_threads": ", ".join(f"{os.path.basename(k)}: {v}" for k, v in blas_threads().items()) or "(not set)",
        "revolve": bool(PETSc.Sys.hasExternalPackage("revolve")),
        "cuda_petsc": bool(PETSc.Sys.hasExternalPackage("cuda")),
        "scalar_type": f"{numpy.dtype(PETSc.ScalarType).name}, {numpy.dtype(PETSc.IntType).name} indices",
        "petsc4py": f"{petsc4py.__version__} ({os.path.dirname(petsc4py.__file__)})",
        "mpi": MPI.Get_library_version().strip().splitlines()[0],
        "mpi4py": mpi4py.__version__,
        **{f"effect: {k}": v for k, v in runtime.effects().items()},
        **({"petsc_pkg_config": configure} if configure else {}),
    }


def _petsc_dir(conf):
    """Where the PETSc in use is installed: the PyPI ``petsc`` package's own location if
    that is what runs, else petsc4py's record (a cached wheel's record may name the
    environment that built it, so prefer the loaded library's directory)."""
    lib = loaded_library_path()
    try:
        import petsc
        here = petsc.get_petsc_dir()
        if lib is None or os.path.realpath(lib).startswith(os.path.realpath(here)):
            return here
    except Exception:
        pass
    if lib is not None:
        return os.path.dirname(os.path.dirname(lib))
    return conf.get("PETSC_DIR", "")


def _configure_options():
    try:
        conf = __import__("petsc4py").get_config()
        root = _petsc_dir(conf)
        path = os.path.join(root, conf.get("PETSC_ARCH", ""), "include", "petscconfiginfo.h")
        if not os.path.exists(path):
            path = os.path.join(root, "include", "petscconfiginfo.h")
        text = open(path).read()
        start = text.index('"') + 1
        return text[start:text.rindex('"')].strip()
    except Exception:
        return "(unknown)"


def info(file=None):
    """Print pnode, torch, PETSc (version, configure options, revolve, scalar type),
    petsc4py, MPI library and mpi4py versions, and every process-wide effect pnode
    applied (``effect: ...`` lines; :mod:`pnode.runtime` lists each one's opt-out)."""
    d = info_dict()
    d.pop("petsc_pkg_config", None)
    width = max(len(k) for k in d)
    for k, v in d.items():
        print(f"{k:<{width}}  {v}", file=file or sys.stdout)

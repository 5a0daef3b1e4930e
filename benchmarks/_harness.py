"""The benchmarks' harness: measurements in fresh worker processes, the machine they ran
on, and the memory of a process.

Worker protocol (every benchmark that measures in a subprocess uses it):

- the parent calls ``run_worker(script, kwargs, task=...)``; it runs
  ``python SCRIPT --worker SPEC`` (under ``launcher``, e.g. ``mpiexec -n 2``, when given)
  in a fresh process with one thread per BLAS/OpenMP pool and this checkout first on
  ``PYTHONPATH``. SPEC is JSON: ``{"task": name, "kwargs": {...}, "out": path}``;
- the script's ``main`` hands ``--worker SPEC`` to ``serve(SPEC, tasks)``, which calls
  ``tasks[task](**kwargs)`` and writes its JSON-serialisable result to ``out`` (a task
  that returns None writes nothing: under MPI only rank 0 returns its result);
- ``run_worker`` returns the parsed result, or raises ``WorkerError`` (with the tail of
  the worker's output) when the worker fails, times out or writes nothing.

The result travels in a file, not on stdout, so that nothing the libraries print
(PETSc, MPI, warnings) can be mistaken for it.

This module uses only the standard library: workers run under other interpreters too
(benchmarks/_diffrax.py, in a JAX venv).
"""
import ctypes
import importlib
import importlib.util
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# every thread pool a worker's libraries may start (OpenMP: torch; BLAS: PETSc, numpy)
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
TAIL = 3000  # characters of a failed worker's output quoted in the error


# ---------------------------------------------------------------------------- workers
class WorkerError(RuntimeError):
    """A worker process failed, timed out or returned no result."""


def worker_env(threads=1, extra=None):
    """The environment of a worker: ``threads`` threads per pool, this checkout importable
    first, plus ``extra`` (a dict of variables)."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _no_aslr():
    """In the child before exec: address-space layout randomisation off (setarch -R).

    With randomised addresses (and hash seeds) the order of the solver's allocations and
    frees changes from run to run, and so does the heap's fragmentation: pnode's peak at
    explicit.py's rk4-100 ranged over 63-102 MB. Fixed, the same worker measures the same
    peak.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.personality(libc.personality(0xFFFFFFFF) | 0x0040000)  # ADDR_NO_RANDOMIZE
    except (OSError, AttributeError):
        pass


# a reproducible heap: one malloc arena, a fixed hash seed (and no ASLR, see _no_aslr)
FIXED_HEAP_ENV = {"MALLOC_ARENA_MAX": "1", "PYTHONHASHSEED": "0"}


def _run(cmd, env, timeout, preexec_fn):
    """(exit code, stdout, stderr) of ``cmd``, exit code None when it timed out. The whole
    process group is killed on a timeout or an interrupt, so that no rank of an MPI launch
    outlives it."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          cwd=ROOT, start_new_session=True, preexec_fn=preexec_fn) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException as exc:  # a timeout, or Ctrl-C (which the worker's own session does not get)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                return None, out, err
            raise
        return proc.returncode, out, err


def run_worker(script, kwargs=None, task=None, *, threads=1, env=None, timeout=3600,
               launcher=(), python=None, fixed_heap=False):
    """Run ``task(**kwargs)`` of ``script`` in a fresh process; return its result.

    ``script``: path of the benchmark (its ``main`` passes ``--worker`` to ``serve``);
    ``task``: the name of one of its worker functions (None when it has one);
    ``threads``: threads per OpenMP/BLAS pool; ``env``: extra environment variables;
    ``timeout``: seconds; ``launcher``: argv prefix (``[mpiexec, "-n", "2"]``);
    ``python``: the interpreter (default: this one); ``fixed_heap``: one malloc arena,
    a fixed hash seed and no address randomisation, for reproducible memory peaks.
    Raises ``WorkerError`` when the worker fails, times out or writes no result.
    """
    fd, out = tempfile.mkstemp(prefix="pnode-bench-", suffix=".json")
    os.close(fd)
    spec = json.dumps({"task": task, "kwargs": kwargs or {}, "out": out})
    cmd = [*launcher, python or sys.executable, os.path.abspath(script), "--worker", spec]
    label = f"{os.path.basename(script)} {task or 'worker'} {json.dumps(kwargs or {})}"
    extra = dict(FIXED_HEAP_ENV, **(env or {})) if fixed_heap else env
    try:
        rc, stdout, stderr = _run(cmd, worker_env(threads, extra), timeout, _no_aslr if fixed_heap else None)
        tail = f"{stdout[-TAIL:]}\n{stderr[-TAIL:]}".strip()
        if rc is None:
            raise WorkerError(f"worker {label} timed out after {timeout} s:\n{tail}")
        if rc != 0:
            raise WorkerError(f"worker {label} failed (exit {rc}):\n{tail}")
        with open(out) as fh:
            text = fh.read()
        if not text:
            raise WorkerError(f"worker {label} wrote no result:\n{tail}")
        return json.loads(text)
    finally:
        os.unlink(out)


def serve(spec, tasks):
    """The worker side: run the task that ``spec`` (``--worker``'s JSON) names and write
    its result. ``tasks``: the script's worker function, or a dict name -> function."""
    spec = json.loads(spec)
    sys.argv = sys.argv[:1]  # PETSc reads sys.argv when pnode is imported: the spec is not its option
    fn = tasks if callable(tasks) else tasks[spec["task"]]
    result = fn(**spec["kwargs"])
    if result is not None:
        part = spec["out"] + ".part"
        with open(part, "w") as fh:
            json.dump(result, fh)
        os.replace(part, spec["out"])  # whole or absent: the parent never reads half a result
    return 0


# ---------------------------------------------------------------------------- output
def publish(text, path=None):
    """Print a benchmark's page (markdown) and, when ``path`` is given, write it there and
    say so on stderr."""
    print(text)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text.rstrip("\n") + "\n")
        print(f"wrote {os.path.relpath(path, ROOT)}", file=sys.stderr)


# ---------------------------------------------------------------------------- machine
def cpu_name():
    """The processor's model name (``/proc/cpuinfo``, else ``lscpu``, else the
    architecture)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:  # ARM's /proc/cpuinfo has no model name; lscpu knows it
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(where, *cmd):
    try:
        return subprocess.run(["git", "-C", where, *cmd], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def pnode_source():
    """pnode's version and the git commit of the checkout it is imported from, e.g.
    ``pnode 0.1.0 at commit ab12cd3 plus uncommitted changes to pnode/``.

    Reads ``pnode/_version.py`` without importing pnode: importing it initialises PETSc
    (and MPI), which a benchmark's parent process need not do.
    """
    spec = importlib.util.find_spec("pnode")
    if spec is None or not spec.origin:
        return "pnode (not importable)"
    package = os.path.dirname(os.path.abspath(spec.origin))
    where = os.path.dirname(package)
    about = importlib.util.spec_from_file_location("_pnode_version", os.path.join(package, "_version.py"))
    module = importlib.util.module_from_spec(about)
    about.loader.exec_module(module)
    version = f"pnode {getattr(module, '__version__', 'dev')}"
    commit = _git(where, "rev-parse", "--short", "HEAD")
    if not commit:
        return version
    dirty = " plus uncommitted changes to pnode/" if _git(where, "status", "--porcelain", "--", "pnode") else ""
    return f"{version} at commit {commit}{dirty}"


def version_of(name):
    """``"name version"`` of an importable package (``"PETSc"``: the library petsc4py wraps;
    ``"pnode"``: with its commit, see ``pnode_source``). Imports the package; one that is
    not installed reads ``"name (not installed)"``."""
    if name == "pnode":
        return pnode_source()
    try:
        if name == "PETSc":
            from petsc4py import PETSc
            return "PETSc " + ".".join(map(str, PETSc.Sys.getVersion()))
        return f"{name} {getattr(importlib.import_module(name), '__version__', '?')}"
    except ImportError:
        return f"{name} (not installed)"


def machine(packages=(), threads=None):
    """One line on where the numbers come from: CPU model, cores, Python, and the version
    of each of ``packages`` in that order; ``threads`` (e.g. ``"1 thread"``) follows torch.

    ``machine(("pnode", "torch"), threads="1 thread")`` gives e.g. ``AMD EPYC 7B13, 2 cores;
    Python 3.11.7; pnode 0.1.0 at commit ab12cd3; torch 2.13.0+cpu on 1 thread``.
    """
    parts = [f"{cpu_name()}, {os.cpu_count()} cores", f"Python {platform.python_version()}"]
    for name in packages:
        parts.append(version_of(name) + (f" on {threads}" if name == "torch" and threads else ""))
    return "; ".join(parts)


def load_average():
    """The 1-minute load average (NaN where the OS has none): above the core count, other
    jobs shared the machine and wall times are inflated."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


# ---------------------------------------------------------------------------- memory
def status_kb(field):
    """A memory field of ``/proc/self/status`` (``"VmRSS"``, ``"VmHWM"``, ``"RssAnon"``) in
    KiB, or None where there is no such file or field (not Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def maxrss_kb():
    """The process's lifetime peak resident memory (``ru_maxrss``) in KiB."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else peak  # macOS counts bytes


def rss_kb():
    """Resident memory of this process now, in KiB (``ru_maxrss`` where there is no
    ``/proc``: an upper bound)."""
    now = status_kb("VmRSS")
    return maxrss_kb() if now is None else now


def reset_peak():
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0); False
    where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory (KiB) while the ``with`` body runs: ``before`` (RSS at entry),
    ``peak``, and ``exact``: True when ``peak`` is VmHWM reset at entry, False when it is
    ``ru_maxrss``, the process's lifetime peak (no ``/proc/self/clear_refs``)."""

    def __enter__(self):
        self.before = rss_kb()
        self.exact = reset_peak()
        return self

    def __exit__(self, *exc):
        hwm = status_kb("VmHWM") if self.exact else None
        self.exact = hwm is not None
        self.peak = hwm if self.exact else maxrss_kb()


def anon_kb():
    """Anonymous resident memory (heap, tensors, PETSc Vecs) of this process, in KiB.

    File-backed pages (the code of libtorch and PETSc) are left out: they are not the
    solver's data, and the kernel may drop and re-read them at any time.
    """
    anon = status_kb("RssAnon")
    if anon is None:
        raise RuntimeError("no RssAnon in /proc/self/status")
    return anon


def trim_heap():
    """Give freed heap pages back to the OS, so the baseline is live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakSampler:
    """Peak of the anonymous RSS while the ``with`` body runs, sampled from a thread.

    Linux keeps no high-water mark for anonymous memory alone; the interpreter switches
    threads every 5 ms, far more often than a solve's memory changes shape. The sampler
    reads into one preallocated buffer, so that its own malloc calls do not land between
    the solver's at timing-dependent points and change the heap's fragmentation.
    """

    def __enter__(self):
        self._fd = os.open("/proc/self/status", os.O_RDONLY)
        self._buf = bytearray(8192)
        self.peak = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _read(self):
        n = os.preadv(self._fd, [self._buf], 0)
        i = self._buf.find(b"RssAnon:", 0, n)
        return int(self._buf[i + 8:self._buf.find(b"kB", i, n)])

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())
        os.close(self._fd)

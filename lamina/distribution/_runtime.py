"""The MPI world, the Keras-3 distribution objects, and the seam the training loops call.

Seam (each a no-op unless a DataParallel distribution is set and the world has more than one rank):
  begin(model)           at the start of fit/evaluate/predict: rank 0's random-generator states, weights and
                         optimizer state are broadcast to every rank;
  shard(batch)           the rank's contiguous slice of a global batch (and, until the step ends, random
                         draws of the noise stream are made for the global batch and sliced);
  reduce_loss(value)     the global mean loss of the step (so a NaN on any rank stops every rank);
  gradients(loss, vs)    lamina.grad, then the all-reduce of the sample-weighted gradients: one fused buffer,
                         or buckets (DataParallel(bucket_mb=...)), started during the backward pass (overlap);
  reduce_gradients(gs)   the same all-reduce, of gradients already computed (for a custom train_step);
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
from ..tensor import Tensor, Variable, grad

MPI_INSTALL_HINT = "lamina.distribution needs mpi4py and Open MPI: pip install 'lamina[mpi]'"

# environment variables set by the launchers: Open MPI's mpirun, MPICH/Intel MPI (PMI), PMIx, Slurm's srun
_LAUNCH_SIZE_VARS = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_LAUNCH_RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")

# gradient buckets of DataParallel (MB; None: one fused buffer per step), chosen by measurement: see
# docs/distributed.md, "Buckets and overlap"
DEFAULT_BUCKET_MB = 25.0

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
        bucket_mb: (lamina's, not Keras's) the gradients of a step are cut, in reverse layer order, into
            buckets of at most this many MB (a larger tensor makes a bucket alone), each all-reduced on its
            own; default 25. None: one all-reduce over one flat buffer after the backward pass.
        overlap: True (default): the default train_step starts each bucket's non-blocking all-reduce
            (MPI_Iallreduce) as soon as the backward pass has completed its gradients, while the sweep
            goes on, and waits for them all before the optimizer step. False: one blocking all-reduce per
            bucket after the backward pass (measured slower; kept for comparison).
    """

    def __init__(self, devices=None, device_mesh=None, auto_shard_dataset=True, *, bucket_mb=DEFAULT_BUCKET_MB,
                 overlap=True):
        if device_mesh is not None:
            raise ValueError("DataParallel: lamina builds its mesh from the MPI world; pass devices (or nothing).")
        initialize()
        super().__init__(devices)
        if len(self.devices) != process_count():
            raise ValueError(f"DataParallel: {len(self.devices)} devices given but the MPI world has "
                             f"{process_count()} ranks; lamina runs one rank per device (mpirun -n "
                             f"{len(self.devices)}).")
        self.auto_shard_dataset = auto_shard_dataset
        if bucket_mb is not None and not float(bucket_mb) > 0:
            raise ValueError(f"DataParallel: bucket_mb must be a positive number of MB or None (one fused buffer). "
                             f"Received: bucket_mb={bucket_mb!r}")
        self.bucket_mb = None if bucket_mb is None else float(bucket_mb)
        self.overlap = bool(overlap)

    def __repr__(self):
        return f"<DataParallel devices={self.devices} bucket_mb={self.bucket_mb} overlap={self.overlap}>"


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


def _array(g):
    return g.data if isinstance(g, Tensor) else g


def cuda_aware():
    """True when the MPI library takes device (CUDA) buffers: mpi4py's Query_cuda_support where it has
    one, else Open MPI's MPIX_Query_cuda_support from the loaded libmpi; False when neither answers."""
    global _CUDA_AWARE
    if _CUDA_AWARE is None:
        _CUDA_AWARE = False
        try:
            query = getattr(_MPI, "Query_cuda_support", None)
            if query is not None:
                _CUDA_AWARE = bool(query())
            else:
                import ctypes
                import re
                with open("/proc/self/maps") as f:
                    libs = sorted(set(re.findall(r"(/\S*libmpi\.so[.\d]*)", f.read())))
                for lib in libs:
                    fn = getattr(ctypes.CDLL(lib), "MPIX_Query_cuda_support", None)
                    if fn is not None:
                        fn.restype = ctypes.c_int
                        _CUDA_AWARE = fn() == 1
                        break
        except Exception:  # noqa: BLE001 - no answer (another MPI, no /proc): stage through the host
            _CUDA_AWARE = False
    return _CUDA_AWARE


_CUDA_AWARE = None


class _Buckets:
    """How a step's gradients are packed: buckets of parameter indices in reverse order (the order the
    backward pass completes them), each at most cap bytes (a larger tensor alone); one bucket when cap is
    None. Every rank builds the same plan from the same model."""

    def __init__(self, shapes, dtypes, cap):
        self.members, self.dtypes, self.sizes, self.slot, self.bucket_of = [], [], [], {}, {}
        current, nbytes = [], 0
        for i in reversed(range(len(shapes))):
            size = int(np.prod(shapes[i], dtype=np.int64))
            b = size * np.dtype(dtypes[i]).itemsize
            if current and cap is not None and nbytes + b > cap:
                self._close(current, shapes, dtypes)
                current, nbytes = [], 0
            current.append(i)
            nbytes += b
        if current:
            self._close(current, shapes, dtypes)

    def _close(self, members, shapes, dtypes):
        k, offset = len(self.members), 0
        for i in members:
            size = int(np.prod(shapes[i], dtype=np.int64))
            self.slot[i], self.bucket_of[i] = (offset, size), k
            offset += size
        self.members.append(members)
        self.dtypes.append(np.result_type(*[dtypes[i] for i in members]))
        self.sizes.append(offset)


class _BucketedReduce:
    """Packs gradients into the buckets' buffers as they come, all-reduces each full bucket (blocking, or
    non-blocking and in bucket order so that every rank issues the collectives in the same order), and
    unpacks the sums. Buffers live on the host (CuPy gradients are staged there), or on the device when
    the gradients are CuPy arrays and the MPI library is CUDA-aware."""

    def __init__(self, plan, weight, nonblocking, xp):
        self.plan, self.weight, self.nonblocking, self.xp = plan, weight, nonblocking, xp
        self.on_device = xp is not np and cuda_aware()
        self.bufs = [None] * len(plan.members)
        self.filled = [0] * len(plan.members)
        self.grads = {}
        self.requests, self.launched = [], 0

    def add(self, i, g):
        """Gradient i is complete (None: the loss does not reach it, the same on every rank)."""
        plan = self.plan
        k = plan.bucket_of[i]
        buf = self.bufs[k]
        if buf is None:
            buf = self.bufs[k] = (self.xp if self.on_device else np).empty(plan.sizes[k], plan.dtypes[k])
        offset, size = plan.slot[i]
        a = _array(g)
        self.grads[i] = a
        if a is None:
            buf[offset:offset + size] = 0
        else:
            buf[offset:offset + size] = a.ravel() if self.on_device else backend.to_numpy(a).ravel()
        self.filled[k] += 1
        while self.launched < len(plan.members) and self.filled[self.launched] == len(plan.members[self.launched]):
            self._launch(self.launched)
            self.launched += 1
        if self.requests:   # let MPI progress the collectives already started
            _MPI.Request.Testall(self.requests)

    def _launch(self, k):
        buf, w = self.bufs[k], self.weight
        if w != 1.0:
            buf *= buf.dtype.type(w)
            if w == 0.0:
                buf[...] = 0  # an empty slice's dummy sample may have made inf/NaN: it contributes nothing
        if self.on_device:   # MPI reads device memory directly: the kernels that wrote it must be done
            self.xp.cuda.get_current_stream().synchronize()
        if self.nonblocking:
            self.requests.append(_COMM.Iallreduce(_MPI.IN_PLACE, buf, op=_MPI.SUM))
        else:
            _COMM.Allreduce(_MPI.IN_PLACE, buf, op=_MPI.SUM)

    def finish(self, like):
        """The summed gradients, in the form of ``like`` (the list of gradients or variables)."""
        if self.requests:
            _MPI.Request.Waitall(self.requests)
        out = [None] * len(like)
        for i, a in self.grads.items():
            if a is None:
                continue
            k = self.plan.bucket_of[i]
            offset, size = self.plan.slot[i]
            part = self.bufs[k][offset:offset + size].reshape(a.shape).astype(a.dtype, copy=False)
            xp = backend.get_array_module(a)
            if xp is not np and not self.on_device:
                part = backend.to_device(part, xp)
            out[i] = Tensor(part) if isinstance(like[i], Tensor) else part
        return out


def _cap():
    mb = getattr(_DISTRIBUTION, "bucket_mb", None)
    return None if mb is None else int(mb * (1 << 20))


def reduce_gradients(grads):
    """The gradients summed over ranks, each weighted by its share of the global batch: one all-reduce
    over one flat buffer, or one blocking all-reduce per bucket with DataParallel(bucket_mb=..., overlap=
    False) (on CuPy, staged through the host unless MPI is CUDA-aware). Gradients already computed leave
    nothing to overlap with, so with overlap=True (the default) they go in one fused buffer: measured, the
    fewest collectives are fastest there."""
    if not active():
        return grads
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return grads
    arrays = [_array(grads[i]) for i in present]
    cap = None if getattr(_DISTRIBUTION, "overlap", True) else _cap()
    plan = _Buckets([a.shape for a in arrays], [a.dtype for a in arrays], cap)
    red = _BucketedReduce(plan, _weight(), False, backend.get_array_module(*arrays))
    for j, a in enumerate(arrays):
        red.add(j, a)
    summed = red.finish([grads[i] for i in present])
    out = list(grads)
    for j, i in enumerate(present):
        out[i] = summed[j]
    return out


def gradients(loss, variables):
    """lamina.grad(loss, variables), then reduce_gradients; with DataParallel(bucket_mb=..., overlap=True)
    each bucket's all-reduce starts during the backward pass, as soon as its gradients are complete."""
    if not active() or _cap() is None or not getattr(_DISTRIBUTION, "overlap", False):
        return reduce_gradients(grad(loss, variables))
    variables = list(variables)
    plan = _Buckets([v.shape for v in variables], [v.dtype for v in variables], _cap())
    red = _BucketedReduce(plan, _weight(), True, backend.get_array_module(*[v.data for v in variables]))
    grad(loss, variables, on_ready=red.add)
    return red.finish([None] * len(variables))


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
    """The numeric attributes of a metric (or loss tracker): name -> float or ndarray. A custom metric's
    variables (Keras's ``add_variable``, aggregation 'sum') count by their values."""
    state = {}
    for k, v in vars(obj).items():
        if isinstance(v, bool) or isinstance(v, np.bool_):
            continue
        if isinstance(v, (int, float, np.integer, np.floating)):
            state[k] = float(v)
        elif isinstance(v, np.ndarray) and v.dtype.kind in "fiu":
            state[k] = v.copy()
        elif (isinstance(v, Variable) and v.dtype.kind in "fiu"
              and getattr(v, "_metric_aggregation", None) == "sum"):
            state[k] = np.array(backend.to_numpy(v.data))
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
        current = getattr(obj, k)
        if isinstance(current, Variable):
            current.assign(total.astype(new.dtype))
        elif isinstance(new, np.ndarray):
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

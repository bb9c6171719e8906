"""How many threads lamina's BLAS (NumPy's OpenBLAS or MKL) runs with.

Why lamina chooses: a BLAS thread team is fastest on an idle machine with large matrices, and collapses
when a core it counts on is busy with another process (each GEMM waits for the descheduled thread: a 3-epoch
``lamina train`` went from ~1 s to ~10 s on a 2-core machine with one busy neighbour). Small matrices do not
gain from threads either. No static rule gets both right, so by default lamina measures: during ``fit`` the
:class:`Governor` times a few training steps with each candidate thread count (1 and all usable cores, and
half on larger machines), keeps the fastest, and re-checks now and then (less often while the choice holds),
so a neighbour that starts or stops mid-training moves the choice. On Linux it also reads how busy the other
processes keep its cores (/proc/stat, :func:`foreign_load`) and does not try a thread team those cores would
leave waiting.

A fixed count switches the governor off:

- ``lamina.config.set_num_threads(n)`` (``None`` or ``"auto"`` gives the choice back to lamina);
- the ``LAMINA_NUM_THREADS`` environment variable, or ``lamina train --threads N``;
- ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` / ``MKL_NUM_THREADS`` set in the environment: the user (or a
  test runner, or MPI launcher) already decided, and lamina keeps out of the way.

Each thread count gives the same numbers run after run, but not always the same as another count: with
NumPy 2.4's OpenBLAS 0.3.31 (Haswell kernels) a float32 product on one thread and on two differs in the last
bits in 2-30% of its entries for many shapes (e.g. (640, 256) x (256, 512): up to 4e-5 absolute), so a
training run whose governor picks another count rounds differently from then on. Thread counts are set
through threadpoolctl (a runtime dependency, pure Python); if no BLAS it knows is loaded, this module does
nothing.

Element-wise work on every core (:func:`split_width`, :func:`run_split`): NumPy runs an element-wise pass
on one core. Large passes with no product among them (an optimizer's update of every weight) are split
over as many threads as BLAS runs with, lamina's own. One obstacle stands in the way with OpenBLAS's
pthreads build: after every threaded product its worker threads busy-wait ~0.1 s for the next one (its
THREAD_TIMEOUT, 2^28 cycles; they never yield the core), so a thread of lamina's finds no core free. Before
such a split lamina stops OpenBLAS's team the way a fork does (``blas_thread_shutdown_``, what OpenBLAS's
own fork handler calls; the next threaded product starts the team afresh, ~30 us). It does so only while
no other Python thread that might run a product is alive (a Jupyter kernel's own threads do not count),
since a product in flight on another thread would lose its team.
"""
import contextlib
import os
import threading
import time

__all__ = ["get_num_threads", "set_num_threads", "usable_cores", "Governor", "governor", "foreign_load",
           "blas_info", "split_width", "split_rows", "split_products", "run_split", "ranges", "Overlap", "one_thread"]

_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_state = {"fixed": None, "controller": None, "checked_env": False}


def usable_cores():
    """Cores this process may run on (its CPU affinity, which containers and ``taskset`` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _controller():
    if _state["controller"] is None:
        try:
            from threadpoolctl import ThreadpoolController
            ctl = ThreadpoolController().select(user_api="blas")
        except Exception:  # pragma: no cover - threadpoolctl missing or unable to inspect the process
            ctl = None
        _state["controller"] = ctl if ctl is not None and ctl.lib_controllers else False
    return _state["controller"] or None


def _parse(value, source):
    try:
        n = int(value) if isinstance(value, str) or (not isinstance(value, bool) and value == int(value)) else 0
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{source} must be a positive integer or 'auto'. Received: {value!r}") from None
    if n < 1:
        raise ValueError(f"{source} must be a positive integer or 'auto'. Received: {value!r}")
    return n


def _read_env():
    if _state["checked_env"]:
        return
    _state["checked_env"] = True
    value = os.environ.get("LAMINA_NUM_THREADS", "").strip()
    if value and value.lower() != "auto":
        set_num_threads(_parse(value, "LAMINA_NUM_THREADS"))
    elif not value and any(os.environ.get(v, "").strip() for v in _ENV_VARS):
        _state["fixed"] = "env"


def set_num_threads(n):
    """Run BLAS with exactly ``n`` threads from now on (the governor stops choosing); ``None`` or ``"auto"``
    returns to the default (lamina chooses, unless a thread variable is set in the environment)."""
    if n is None or (isinstance(n, str) and n.lower() == "auto"):
        _state.update(fixed=None, checked_env=False)
        return
    _state["checked_env"] = True
    n = _parse(n, "num_threads")
    _state["fixed"] = n
    _apply(n)


def get_num_threads():
    """The number of threads BLAS runs with now."""
    ctl = _controller()
    if ctl is None:
        return 1
    return max(lc.num_threads for lc in ctl.lib_controllers)


def is_fixed():
    """Whether the thread count is the user's (set_num_threads, LAMINA_NUM_THREADS or a BLAS variable)."""
    _read_env()
    return _state["fixed"] is not None


def _apply(n):
    ctl = _controller()
    if ctl is not None:
        for lc in ctl.lib_controllers:
            lc.set_num_threads(n)


def one_thread():
    """A context in which BLAS (and its LAPACK) runs on one thread, the counts restored after (threadpoolctl's
    own limiter). For factorizations at the sizes of weight matrices: np.linalg.qr of (384, 128) float64 took
    3.0 ms on one OpenBLAS thread and 6.8 on two on a quiet 2-core machine ((1024, 1024) and (4096, 512): the
    same on both), and 4.6 s on two with the other core busy, where the team waits for a descheduled thread."""
    ctl = _controller()
    return contextlib.nullcontext() if ctl is None else ctl.limit(limits=1)


# ------------------------------------------------------------------ element-wise work split over threads
# The fewest elements a pass must cover to be split (callers whose passes cost more per element give less):
# stopping OpenBLAS's team (20-55 us), its restart at the next product (~27 us) and handing work to a thread
# and back (~50 us) cost ~0.1 ms a split on the machine measured, where Adam's update of 1 M float32 weights
# takes ~1.5 ms on one core (bench/README.md, issue 19 seventh round).
SPLIT_MIN_ELEMENTS = 1_000_000
_split = {"pool": None, "size": 0, "release": None, "busy": False}


def _team_release():
    """A function stopping the teams of the OpenBLAS pthreads builds loaded (NumPy's, and any other copy, e.g.
    SciPy's), each through its ``blas_thread_shutdown_``, or None when there is none: stopping a team is
    only known to be safe, and only needed, there (OpenMP builds, MKL: their runtimes own their threads)."""
    if _split["release"] is None:
        fns = []
        ctl = _controller()
        for lc in (ctl.lib_controllers if ctl is not None else ()):
            info = lc.info()
            if info.get("internal_api") == "openblas" and info.get("threading_layer") == "pthreads":
                try:
                    fn = getattr(lc.dynlib, "blas_thread_shutdown_")
                except (AttributeError, OSError):  # pragma: no cover - a build without the symbol
                    continue
                fn.restype, fn.argtypes = None, []
                fns.append(fn)
        _split["release"] = (lambda: [fn() for fn in fns]) if fns else False
    return _split["release"] or None


def _forget_pool():
    """In a forked child: the parent's pool threads do not exist there (a new pool starts on first use)."""
    _split["pool"], _split["size"], _split["busy"] = None, 0, False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _pool(n):
    """A pool of n threads (created once, grown when asked for more)."""
    if _split["pool"] is None or _split["size"] < n:
        from concurrent.futures import ThreadPoolExecutor
        if _split["pool"] is not None:
            _split["pool"].shutdown(wait=True)
        _split["pool"] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="lamina-split")
        _split["size"] = n
    return _split["pool"]


def _alone():
    """Whether every other Python thread is one of lamina's split threads (idle unless a split runs) or
    harmless, and no split is running (a split inside a split's part, on whichever thread, would stop the
    team while another part may be inside a product)."""
    if _split["busy"]:
        return False
    me = threading.current_thread()
    return all(t is me or t.name.startswith("lamina-split") or _harmless(t) for t in threading.enumerate())


# Packages whose threads never run a NumPy product: a Jupyter kernel's heartbeat, IOPub, control, shell
# channel, output-pipe and history threads are alive in every notebook, where lamina's learners work.
_HARMLESS_PACKAGES = frozenset({"ipykernel", "IPython", "zmq", "jupyter_client", "tornado"})


def _harmless(t):
    """Whether thread t is one of those: its class, or the function a plain Thread runs (IOPub's is a method
    of ipykernel's), comes from one of _HARMLESS_PACKAGES."""
    for obj in (type(t), getattr(t, "_target", None)):
        if (getattr(obj, "__module__", None) or "").split(".")[0] in _HARMLESS_PACKAGES:
            return True
    return False


def split_width(elements, min_elements=None):
    """How many threads a split element-wise pass over ``elements`` values should run on: 1 below
    ``min_elements`` (default SPLIT_MIN_ELEMENTS), when BLAS runs one thread (the governor or the user chose
    it: the other cores are busy or not ours), or when OpenBLAS's waiting team cannot be stopped safely; else
    BLAS's thread count, after stopping the team (so call it right before :func:`run_split`, with no product
    in between, and let no part call a threaded product)."""
    n, release = _width(elements, min_elements)
    if n > 1:
        release()
    return n


def _width(elements, min_elements):
    """(split_width's count, the function stopping OpenBLAS's team, not yet called: None for a count of 1)."""
    if elements < (SPLIT_MIN_ELEMENTS if min_elements is None else min_elements):
        return 1, None
    n = min(get_num_threads(), usable_cores())
    if n < 2:
        return 1, None
    release = _team_release()
    if release is None or not _alone():
        return 1, None
    return n, release


def ranges(n, width, align=1):
    """``width`` contiguous (start, stop) ranges covering range(n), about equally long, every start a multiple
    of ``align`` (so that blocks of ``align`` elements fall the same way on any number of threads)."""
    units = -(-n // align)
    cuts = [min(n, (units * k // width) * align) for k in range(width + 1)]
    return [(lo, hi) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]


def split_rows(body, n, elements, min_elements=None):
    """body(lo, hi) over rows 0..n of a NumPy pass over ``elements`` values, on as many threads as
    :func:`split_width` gives (each a contiguous run of rows), or once on this thread."""
    width = min(n, split_width(elements, min_elements)) if n > 1 else 1
    if width < 2:
        body(0, n)
        return
    run_split([lambda r=r: body(*r) for r in ranges(n, width)])


def split_products(body, n, work, min_work, align=1):
    """body(lo, hi) over rows 0..n of work that runs BLAS products of its own (a convolution's blocks of samples:
    each an im2col copy, its product and the bias): on as many of lamina's threads as :func:`split_width` gives,
    each a contiguous run of rows starting at a multiple of ``align``, with BLAS on one thread meanwhile (its count
    restored after), or once on this thread. Each core copies and multiplies its own blocks: a product's BLAS team
    instead shares each block's few-MB operands across the cores, and waits for both at every block (on the 2-core
    Zen 2 VM, a (64, 32, 32, 32) 3x3 convolution's forward: 19.7 ms with two BLAS threads, 19.5 with one, 9.9 split
    over two of lamina's threads; with the team stopped before the count was lowered, 19.3: see
    _one_thread_team_stopped)."""
    width, release = _width(work, min_work) if n > 1 else (1, None)
    width = min(width, -(-n // align))
    if width < 2:
        body(0, n)
        return
    count = _one_thread_team_stopped(release)
    try:
        run_split([lambda r=r: body(*r) for r in ranges(n, width, align)])
    finally:
        _apply(count)


def _one_thread_team_stopped(release):
    """BLAS's count lowered to one, then its waiting team stopped with ``release`` (split_width's); the count it had,
    for the caller to put back. In this order: setting the count starts a stopped team afresh, and its worker then
    busy-waits ~0.1 s on the core another of lamina's threads needs (Overlap's second thread ran its products at
    half speed; split_products' blocks gained nothing over one thread)."""
    count = get_num_threads()
    _apply(1)
    release()
    return count


def _callers_errstate(fn):
    """fn, to run on another thread under this thread's NumPy floating-point error handling. np.errstate is
    per thread (a context variable in NumPy 2, thread-local before), so the part of a split pass that runs on a
    worker would warn where the caller asked to ignore (an overflow to inf, an inf times 0 in its half of the
    array), or go on where the caller asked to raise: the same call would then behave by array size."""
    import numpy as np
    err = np.geterr()

    def run():
        with np.errstate(**err):
            return fn()
    return run


def run_split(parts):
    """Run the callables ``parts`` (independent, of similar cost) at once: the first on this thread, the
    others on lamina's split threads (under this thread's np.errstate); wait for all and re-raise the first
    exception."""
    if len(parts) <= 1:
        for part in parts:
            part()
        return
    busy, _split["busy"] = _split["busy"], True   # no split inside a part (see _alone)
    error = None
    try:
        futures = [_pool(len(parts) - 1).submit(_callers_errstate(part)) for part in parts[1:]]
        try:
            parts[0]()
        except BaseException as e:  # the others must finish before the caller sees the arrays again
            error = e
        for f in futures:
            try:
                f.result()
            except BaseException as e:
                error = error or e
    finally:
        _split["busy"] = busy
    if error is not None:
        raise error


class Overlap:
    """Large products on a second core while this thread works through a loop of small steps.

    A recurrent op's time loop (one small product and a dozen small element-wise passes a step) keeps one
    core busy while the other mostly waits, and its big products (the input projection of every step
    before the loop, the input gradient after it) wait for the loop. Cut into independent tasks (a chunk of
    steps each), those products can run on the idle core meanwhile: ``run(k)`` performs task k and writes
    only its own outputs.

    Use inside a ``with`` block: ``post(k)`` queues task k for the second thread (in the order it should
    run); ``need(k)`` returns once task k is done, running it here if it has not started; ``finish()`` runs
    the tasks still queued on both threads (this one takes them from the back) and waits for all. Leaving the
    block waits for the second thread, so no task outlives it, and re-raises a task's error.

    Active only where it is safe and a second core is ours: BLAS runs exactly two threads (the governor's or
    the user's choice, on a machine with two usable cores), OpenBLAS's waiting team can be stopped (see
    split_width) and no other Python thread is alive. While active, BLAS runs one thread on each side (the
    count is put back on leaving); the count is lowered BEFORE the team is stopped, since setting the count
    starts a stopped team afresh, and its worker then busy-waits ~0.1 s on the second core (the second
    thread's products ran at half speed that way). Otherwise nothing runs on another thread: ``post`` only
    records the task and ``need``/``finish`` run it here (callers then make the whole job one task)."""

    _QUEUED, _RUNNING, _DONE = 0, 1, 2

    def __init__(self, run, active=None):
        self._run = run
        self._active = overlap_ok() if active is None else bool(active)
        self._state = {}
        self._queue = []
        self._error = None
        self._cv = threading.Condition()
        self._closed = False
        self._saved = None

    @property
    def active(self):
        return self._active

    def __enter__(self):
        if self._active:
            self._saved = (_one_thread_team_stopped(_team_release()), _split["busy"])
            _split["busy"] = True  # no split inside (see _alone)
            self._helper = _pool(1).submit(_callers_errstate(self._serve))
        return self

    def __exit__(self, kind, error, tb):
        if not self._active:
            self._run = None  # no cycle through a bound method: the owner's buffers go with the owner
            return False
        with self._cv:
            if kind is not None:
                self._queue.clear()  # the caller failed: start nothing more
            self._closed = True
            self._cv.notify_all()
        try:
            self._helper.result()
        finally:
            threads_before, busy = self._saved
            _split["busy"] = busy
            _apply(threads_before)
            self._run = None
        if kind is None and self._error is not None:
            raise self._error
        return False

    def _serve(self):
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                k = self._queue.pop(0)
                self._state[k] = self._RUNNING
            self._perform(k)

    def _perform(self, k):
        try:
            if self._error is None:
                self._run(k)
        except BaseException as e:  # kept for the caller; the other tasks are skipped
            self._error = self._error or e
        finally:
            with self._cv:
                self._state[k] = self._DONE
                self._cv.notify_all()

    def post(self, k):
        with self._cv:
            self._state[k] = self._QUEUED
            self._queue.append(k)
            if self._active:
                self._cv.notify_all()

    def _claim(self, k):
        """Take task k from the queue for this thread (True), or say it is running or done elsewhere."""
        with self._cv:
            if self._state.get(k, self._QUEUED) != self._QUEUED:
                return False
            if k in self._queue:
                self._queue.remove(k)
            self._state[k] = self._RUNNING
            return True

    def need(self, k):
        if self._claim(k):
            self._perform(k)
        else:
            with self._cv:
                while self._state[k] != self._DONE:
                    self._cv.wait()
        if self._error is not None:
            raise self._error

    def finish(self):
        while True:
            with self._cv:
                if not self._queue:
                    break
                k = self._queue.pop() if self._active else self._queue.pop(0)
                self._state[k] = self._RUNNING
            self._perform(k)
        with self._cv:
            while any(s != self._DONE for s in self._state.values()):
                self._cv.wait()
        if self._error is not None:
            raise self._error


def overlap_ok():
    """Whether an :class:`Overlap` should run tasks on a second thread now (see there)."""
    if get_num_threads() != 2 or usable_cores() < 2:
        return False
    return _team_release() is not None and _alone()


def blas_info():
    """What bench/ and bug reports want to know: each BLAS library, its version, its kernel architecture
    (OpenBLAS's core type, e.g. Haswell on Zen, SkylakeX/Cooperlake on recent Xeons), and its thread count."""
    ctl = _controller()
    if ctl is None:
        return []
    return [{k: info.get(k) for k in ("internal_api", "version", "architecture", "threading_layer", "num_threads")}
            for info in ctl.info()]


class Governor:
    """Chooses the BLAS thread count from measured step times (see the module docstring).

    ``begin()`` before each training step sets the count it runs with; ``step(seconds)`` after it records its
    wall time. The first ``warmup`` steps run on one thread and are not counted (allocation, caches). Then
    the candidates are measured for ``probe`` steps each, fewest threads first, and the lowest median wins
    if it beats the current choice by more than ``margin``. Every ``interval`` seconds of training the best
    rival is measured again; a rival faster by more than ``margin`` takes over and the interval restarts at
    its minimum, otherwise the interval doubles up to ``max_interval`` (not after the first decision, made
    in the first second of training: the first re-check comes after ``interval``).

    The first step after the count changes is not recorded (``settle``): it pays for the change (OpenBLAS
    starts or stops its team, whose waiting worker holds the second core ~0.1 s after its last product) and
    measured 1.3-2x a settled step on a 2-core VM, enough to keep a wrong choice for the next re-check. A
    measurement stops early when a step already takes ``abort`` times the best median known (three times
    that for the settling step): on a busy machine a thread team can be many times slower, and one such
    step is all it costs to find out.

    With ``load`` (a function giving the CPU seconds other processes have used on this process's cores so far,
    as :func:`foreign_load` reads them from Linux; ``clock`` the seconds it is read against), a rival of more than
    one thread is measured
    only once ``window`` seconds have passed since the last look at the load, and not at all that time when
    the others kept busy more of the cores than it would leave them (``count`` threads need ``count - 0.5``
    cores free): its one step would only have found its team waiting on a taken core (a CNN's step 3 ms on one
    thread, 60 ms on two beside one busy process on the 2-core Zen 4). It is looked at again at the next
    re-check.
    """

    def __init__(self, candidates=None, warmup=1, probe=3, interval=4.0, max_interval=64.0, margin=0.08,
                 abort=1.5, settle=1, apply=None, load=None, clock=time.monotonic, cores=None, window=0.2):
        self._load, self._clock, self.window = load, clock, window
        self.cores = usable_cores() if cores is None else cores
        self._mark = None if load is None else (load(), clock())   # (others' CPU seconds, clock) at the last look
        self.skipped = []        # (step number, the rival not measured for the others' load)
        if candidates is None:
            top = usable_cores()
            current = get_num_threads()
            top = max(1, min(top, current)) if current > 1 else top
            candidates = sorted({1, max(1, top // 2), top})
        self.candidates = sorted(candidates)
        self.warmup, self.probe, self.margin, self.abort, self.settle = warmup, probe, margin, abort, settle
        self.min_interval, self.max_interval = interval, max_interval
        self._apply = apply or _apply
        self.choice = self.candidates[0]                # the safe count until measurements say otherwise
        self.times = {c: [] for c in self.candidates}   # recent step times per candidate
        self._queue = list(self.candidates)             # candidates still to measure, first first
        self._seen = 0
        self._trained = 0.0      # seconds of training since the last decision
        self._interval = interval
        self._trying = None      # the candidate being measured now
        self._applied = None     # the count the last step ran with
        self._settling = 0       # steps left before the count just applied is measured
        self._decisions = 0
        self.history = []        # (step number, thread count chosen) each time the choice changes

    @property
    def active(self):
        return len(self.candidates) > 1

    def begin(self):
        """Set the thread count the next step should run with."""
        if self._trying is None and self._queue and self._seen >= self.warmup and self._may_try(self._queue[0]):
            self._trying = self._queue.pop(0)
            self.times[self._trying] = []
        count = self._trying if self._trying is not None else self.choice
        if count != self._applied and self._applied is not None:
            self._settling = self.settle
        self._applied = count
        self._apply(count)

    def timed(self, fn, *args):
        """fn(*args) as one measured step: the thread count set before, its wall time recorded after (not
        when fn raises)."""
        self.begin()
        began = time.perf_counter()
        result = fn(*args)
        self.step(time.perf_counter() - began)
        return result

    def step(self, seconds):
        """Record one step's wall time (run with the count ``begin`` set)."""
        self._seen += 1
        if self._seen <= self.warmup:
            return
        c = self._trying
        if self._settling:
            self._settling -= 1
            if c is not None and self._beyond(c, seconds, 3 * self.abort):
                self._record(c, seconds)    # hopeless even for a first step: no need to settle
                self._end_probe()
            return
        if c is None:
            self._record(self.choice, seconds)
            self._trained += seconds
            if self._trained >= self._interval and self.active:
                rivals = [k for k in self.candidates if k != self.choice]
                self._queue = [min(rivals, key=lambda k: self._median(k, float("inf")))]
                self._trained = 0.0
            return
        self._record(c, seconds)
        if len(self.times[c]) >= self.probe or self._beyond(c, seconds, self.abort):
            self._end_probe()

    def _may_try(self, c):
        """Whether candidate c is measured now (always without ``load``, and for one thread). With it, a team
        waits until ``window`` seconds have passed since the last look (the others' load needs that long to read:
        /proc/stat counts in hundredths of a second), and is dropped from this round, the choice kept, when the
        others left fewer than c - 0.5 of the cores free meanwhile."""
        if self._load is None or c <= 1:
            return True
        now = self._clock()
        seconds = now - self._mark[1]
        if seconds < self.window:   # (the clock first: reading /proc/stat costs ~30 us)
            return False
        used = self._load()
        others = (used - self._mark[0]) / seconds
        self._mark = (used, now)
        if self.cores - others >= c - 0.5:
            return True
        self._queue.pop(0)
        self.skipped.append((self._seen, c))
        if not self._queue:
            self._decide()
        return False

    def _beyond(self, c, seconds, factor):
        """Whether a step of candidate c took over ``factor`` times the best median of the others measured."""
        known = [m for m in (self._median(k, None) for k in self.candidates if k != c) if m is not None]
        return bool(known) and seconds > factor * min(known)

    def _end_probe(self):
        self._trying = None
        if not self._queue:
            self._decide()

    def _record(self, c, seconds):
        t = self.times[c]
        t.append(seconds)
        del t[:-max(self.probe, 5)]

    def _median(self, c, default):
        t = sorted(self.times[c])
        return t[len(t) // 2] if t else default

    def _decide(self):
        best = min(self.candidates, key=lambda c: self._median(c, float("inf")))
        if best != self.choice and self._median(best, 0) < (1 - self.margin) * self._median(self.choice, float("inf")):
            self.choice = best
            self._interval = self.min_interval
            self.history.append((self._seen, best))
        elif self._decisions:
            self._interval = min(self._interval * 2, self.max_interval)
        self._decisions += 1
        self._trained = 0.0


_governor = {"g": None}


def foreign_load():
    """The CPU seconds that other processes and the host (steal) have used on this process's cores, counted from an
    arbitrary start (read it twice against time.monotonic for a rate): the busy time of those cores in /proc/stat
    less this process's own CPU time. None where /proc/stat cannot be read (not Linux)."""
    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        with open("/proc/stat", "rb") as f:
            lines = f.read().decode("ascii", "replace").splitlines()
    except (AttributeError, OSError):
        return None
    busy = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in cpus and len(parts) > 8:
            # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
            busy += sum(int(v) for v in parts[1:4]) + sum(int(v) for v in parts[6:9])
    own = os.times()
    return busy / _TICKS - (own.user + own.system)


try:
    _TICKS = os.sysconf("SC_CLK_TCK")
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _TICKS = 100


def governor():
    """The process's governor, or None when the thread count is fixed or there is nothing to choose. It reads the
    others' load (:func:`foreign_load`) where Linux gives it."""
    if is_fixed():
        return None
    if _governor["g"] is None:
        g = Governor(load=foreign_load if foreign_load() is not None else None)
        _governor["g"] = g if g.active else False
    return _governor["g"] or None

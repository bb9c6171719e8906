"""lamina/threads.py: the BLAS thread governor (driven by simulated step times, no clocks), the fixed-count
switches (set_num_threads, LAMINA_NUM_THREADS, BLAS variables, --threads) and its place in fit()."""
import numpy as np
import pytest

import lamina
from lamina import threads


class Machine:
    """A simulated machine: the step time of each thread count, changeable mid-run (a neighbour arrives)."""

    def __init__(self, cost):
        self.cost, self.current, self.applied = dict(cost), None, []

    def apply(self, n):
        self.current = n
        self.applied.append(n)

    def run(self, gov, steps):
        for _ in range(steps):
            gov.begin()
            gov.step(self.cost[self.current])


def test_picks_the_faster_count_on_a_quiet_machine_with_big_gemms():
    m = Machine({1: 0.010, 2: 0.006})
    g = threads.Governor(candidates=[1, 2], apply=m.apply)
    m.run(g, 20)
    assert g.choice == 2 and m.current == 2
    assert m.applied[:2] == [1, 1]  # the warm-up step, then the first measurement, run on one thread
    assert g.history == [(8, 2)]    # 1 warm-up, 3 steps on one thread, 1 settling + 3 on two, then the switch


class SwitchingMachine(Machine):
    """The first step after the count changes costs ``switch`` times a settled one (a thread team starting,
    or the old team's waiting worker still holding a core), as measured on a 2-core VM: 1.3-2x."""

    def __init__(self, cost, switch):
        super().__init__(cost)
        self.switch, self.last = switch, None

    def run(self, gov, steps):
        for _ in range(steps):
            gov.begin()
            first = self.last is not None and self.current != self.last
            self.last = self.current
            gov.step(self.cost[self.current] * (self.switch if first else 1.0))


@pytest.mark.parametrize("settle", [1, 0])
def test_the_step_after_a_switch_is_not_measured(settle):
    """Two threads 30% faster, but the first step on them 2x slower: counted, it made the median of three a
    coin toss on a noisy host (a quarter of the bench's transformer runs stayed on one thread, 1.5x slower)."""
    m = SwitchingMachine({1: 0.090, 2: 0.065}, switch=2.0)
    g = threads.Governor(candidates=[1, 2], apply=m.apply, probe=1, settle=settle)
    m.run(g, 12)
    assert (g.choice == 2) == bool(settle)   # probe=1 makes the transient decide alone when it is counted


def test_a_rival_loses_after_its_settling_step_when_it_is_slower():
    m = SwitchingMachine({1: 0.060, 2: 0.080}, switch=1.5)
    g = threads.Governor(candidates=[1, 2], apply=m.apply, interval=0.05, max_interval=0.05)
    m.run(g, 100)
    assert g.choice == 1 and g.history == []
    assert m.applied.count(2) > 4        # re-checked, settled and measured each time


def test_the_first_decision_is_rechecked_soon():
    """The first comparison is made in the first second of training; a choice it keeps is re-checked after
    the minimum interval, not twice that."""
    m = Machine({1: 0.010, 2: 0.020})
    g = threads.Governor(candidates=[1, 2], apply=m.apply, interval=0.1, max_interval=10.0)
    m.run(g, 9)
    assert g._decisions == 1 and g._interval == 0.1
    m.run(g, 40)
    assert g._decisions >= 2 and g._interval > 0.1


def test_picks_one_thread_when_threads_collapse():
    m = Machine({1: 0.010, 2: 0.100})  # a busy neighbour: the thread team waits on a descheduled thread
    g = threads.Governor(candidates=[1, 2], apply=m.apply)
    m.run(g, 20)
    assert g.choice == 1 and m.current == 1 and g.history == []
    assert m.applied.count(2) == 1     # one slow step was enough to rule the thread team out


def test_follows_a_neighbour_that_arrives_and_leaves():
    m = Machine({1: 0.010, 2: 0.006})
    g = threads.Governor(candidates=[1, 2], apply=m.apply, interval=0.05, max_interval=0.2)
    m.run(g, 30)
    assert g.choice == 2
    m.cost[2] = 0.080                 # contention starts: two threads now collapse
    m.run(g, 60)
    assert g.choice == 1
    m.cost[2] = 0.006                 # the neighbour leaves
    m.run(g, 200)
    assert g.choice == 2


def test_a_hopeless_rival_costs_one_step_per_recheck():
    m = Machine({1: 0.010, 2: 1.0})
    g = threads.Governor(candidates=[1, 2], apply=m.apply, interval=0.05, max_interval=0.05)
    m.run(g, 10)
    assert g.choice == 1
    before = m.applied.count(2)
    m.run(g, 50)   # 0.5 s of training: about ten rechecks of 2 threads, each stopped after one slow step
    rechecks = m.applied.count(2) - before
    assert 5 <= rechecks <= 12
    assert g.choice == 1


def test_small_differences_do_not_flip_the_choice():
    m = Machine({1: 0.0100, 2: 0.0097})  # within the 8% margin: keep the current choice (one thread)
    g = threads.Governor(candidates=[1, 2], apply=m.apply)
    m.run(g, 30)
    assert g.choice == 1 and g.history == []


def test_three_candidates_on_a_bigger_machine():
    m = Machine({1: 0.030, 4: 0.012, 8: 0.020})
    g = threads.Governor(candidates=[1, 4, 8], apply=m.apply)
    m.run(g, 30)
    assert g.choice == 4


class LoadedMachine(Machine):
    """A simulated machine whose other processes keep ``others`` cores busy: a clock that the steps advance, and
    the others' CPU seconds, which Governor's ``load`` reads."""

    def __init__(self, cost, others):
        super().__init__(cost)
        self.others, self.clock, self.used = others, 0.0, 0.0

    def load(self):
        return self.used

    def now(self):
        return self.clock

    def run(self, gov, steps):
        for _ in range(steps):
            gov.begin()
            seconds = self.cost[self.current]
            self.clock += seconds
            self.used += self.others * seconds
            gov.step(seconds)


def test_a_team_is_not_tried_while_the_others_hold_the_cores_it_needs():
    """One core of two busy with another process: two threads would only wait on it (the simulated 0.1 s), so the
    governor never runs a step on them, at the first decision or at any re-check, and keeps one thread; it notes
    each skip."""
    m = LoadedMachine({1: 0.010, 2: 0.100}, others=1.0)
    g = threads.Governor(candidates=[1, 2], apply=m.apply, load=m.load, clock=m.now, cores=2, interval=0.05,
                         max_interval=0.05)
    m.run(g, 150)   # 1.5 s of training: a re-check each time the 0.2 s load window has passed
    assert g.choice == 1 and 2 not in m.applied
    assert len(g.skipped) >= 5 and all(c == 2 for _, c in g.skipped)


def test_a_team_is_tried_once_the_others_leave_and_a_window_has_passed():
    """Quiet from the start: the two-thread team is measured only after the load window (0.2 s: /proc/stat counts
    hundredths), then chosen; after a neighbour arrives it is dropped, and measured again once the neighbour
    leaves."""
    m = LoadedMachine({1: 0.010, 2: 0.006}, others=0.0)
    g = threads.Governor(candidates=[1, 2], apply=m.apply, load=m.load, clock=m.now, cores=2, interval=0.05,
                         max_interval=0.05)
    m.run(g, 15)
    assert 2 not in m.applied and m.clock >= 0.1   # 0.15 s of training: still on one thread
    m.run(g, 30)
    assert g.choice == 2 and g.skipped == []
    m.cost[2], m.others = 0.080, 1.2    # a neighbour: two threads now collapse
    m.run(g, 80)
    assert g.choice == 1
    tries = m.applied.count(2)
    m.run(g, 100)
    assert m.applied.count(2) == tries and g.skipped   # (while it stays, no step on two threads)
    m.cost[2], m.others = 0.006, 0.0    # it leaves
    m.run(g, 200)
    assert g.choice == 2


def test_half_a_core_of_load_leaves_a_team_of_two_its_try():
    """Others using less than half a core leave two threads 1.5 cores: the team is measured (and here wins)."""
    m = LoadedMachine({1: 0.010, 2: 0.006}, others=0.4)
    g = threads.Governor(candidates=[1, 2], apply=m.apply, load=m.load, clock=m.now, cores=2)
    m.run(g, 60)
    assert g.choice == 2 and g.skipped == []


def test_foreign_load_sees_a_busy_process():
    """lamina's reading of the others' load (Linux /proc/stat less this process's own CPU time): a child process
    spinning for 0.6 s shows as at least half a core (more when something else runs too)."""
    import subprocess
    import sys
    import time
    if threads.foreign_load() is None:
        pytest.skip("no /proc/stat here")
    child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 2: pass"])
    try:
        time.sleep(0.3)
        used0, t0 = threads.foreign_load(), time.monotonic()
        time.sleep(0.6)
        used1, t1 = threads.foreign_load(), time.monotonic()
    finally:
        child.kill()
        child.wait()
    assert t1 - t0 >= 0.55 and (used1 - used0) / (t1 - t0) > 0.5


@pytest.fixture
def fresh_state(monkeypatch):
    saved = dict(threads._state), dict(threads._governor)
    for var in ("LAMINA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    threads._state.update(fixed=None, checked_env=False)
    threads._governor["g"] = None
    before = threads.get_num_threads()
    yield
    threads._state.clear()
    threads._state.update(saved[0])
    threads._governor.clear()
    threads._governor.update(saved[1])
    threads._apply(before)


def test_set_num_threads_fixes_the_count(fresh_state):
    lamina.config.set_num_threads(1)
    assert lamina.config.get_num_threads() == 1
    assert threads.is_fixed() and threads.governor() is None
    lamina.config.set_num_threads("auto")
    assert not threads.is_fixed()
    for bad in (0, -2, "many", 1.5):
        with pytest.raises(ValueError, match="positive integer"):
            lamina.config.set_num_threads(bad)


def test_environment_variables(fresh_state, monkeypatch):
    monkeypatch.setenv("LAMINA_NUM_THREADS", "1")
    assert threads.is_fixed() and threads.get_num_threads() == 1
    threads._state.update(fixed=None, checked_env=False)
    monkeypatch.setenv("LAMINA_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="LAMINA_NUM_THREADS"):
        threads.is_fixed()
    threads._state.update(fixed=None, checked_env=False)
    monkeypatch.delenv("LAMINA_NUM_THREADS")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")  # the user or a launcher chose: lamina keeps out of the way
    assert threads.is_fixed() and threads.governor() is None


def test_fit_runs_under_the_governor(fresh_state, monkeypatch):
    seen = []
    real = threads.Governor

    class Spy(real):
        def step(self, seconds):
            seen.append(seconds)
            super().step(seconds)

    made = []
    monkeypatch.setattr(threads, "Governor", lambda **kw: made.append(kw) or Spy(candidates=[1, 2], **kw))
    model = lamina.Sequential([lamina.Input((4,)), lamina.layers.Dense(3)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, x[:, :3], batch_size=8, epochs=2, verbose=0)
    assert len(seen) == 16 and all(s > 0 for s in seen)
    assert threads.get_num_threads() in (1, 2)
    assert made == [{"load": threads.foreign_load}]   # (Linux: the others' load read from /proc/stat)


def test_cli_threads_option(fresh_state, tmp_path, monkeypatch):
    from lamina import cli
    monkeypatch.chdir(tmp_path)
    model = lamina.Sequential([lamina.Input((3,)), lamina.layers.Dense(2)])
    model.save("m.lamina")
    np.save("x.npy", np.ones((2, 3), np.float32))
    assert cli.main(["predict", "m.lamina", "x.npy", "--threads", "1"]) == 0
    assert threads.is_fixed() and threads.get_num_threads() == 1


def test_blas_info_names_the_kernels():
    info = threads.blas_info()
    assert info and all(i["num_threads"] >= 1 for i in info)
    assert any(i["internal_api"] in ("openblas", "mkl", "blis") for i in info)


def test_timed_runs_one_measured_step():
    m = Machine({1: 0.0, 2: 0.0})
    g = threads.Governor(candidates=[1, 2], apply=m.apply)
    assert g.timed(lambda a, b: a + b, 2, 3) == 5
    assert m.applied == [1] and g._seen == 1
    with pytest.raises(RuntimeError):
        g.timed(lambda: (_ for _ in ()).throw(RuntimeError("x")))
    assert g._seen == 1            # a step that raised is not measured


# ------------------------------------------------------------------ element-wise work split over threads
def test_split_width_rules(monkeypatch):
    """Split only large passes, only with more than one BLAS thread and core, only when OpenBLAS's waiting
    team can be stopped, and only while no other Python thread could be inside a product."""
    released = []
    monkeypatch.setattr(threads, "_team_release", lambda: lambda: released.append(1))
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    big = threads.SPLIT_MIN_ELEMENTS
    assert threads.split_width(big - 1) == 1 and not released
    assert threads.split_width(big) == 2 and released == [1]
    monkeypatch.setattr(threads, "usable_cores", lambda: 1)
    assert threads.split_width(big) == 1
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "get_num_threads", lambda: 1)   # the governor or the user chose one thread
    assert threads.split_width(big) == 1
    monkeypatch.setattr(threads, "get_num_threads", lambda: 4)
    assert threads.split_width(big) == 4
    monkeypatch.setattr(threads, "_team_release", lambda: None)  # MKL, an OpenMP build: the team stays
    assert threads.split_width(big) == 1
    monkeypatch.setattr(threads, "_team_release", lambda: lambda: released.append(1))
    import threading
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert threads.split_width(big) == 1   # a user's thread might be inside a product
    finally:
        stop.set()
        other.join()
    assert threads.split_width(big) == 4 and len(released) == 3


def test_run_split_runs_every_part_and_reraises():
    import threading
    ran = []
    threads.run_split([lambda i=i: ran.append((i, threading.current_thread().name)) for i in range(3)])
    assert sorted(i for i, _ in ran) == [0, 1, 2]
    assert ran[0][1] == threading.current_thread().name or any(n.startswith("lamina-split") for _, n in ran)
    assert all(n.startswith("lamina-split") for i, n in ran if i > 0)
    done = []

    def slow():
        import time
        time.sleep(0.05)
        done.append(1)
    with pytest.raises(ZeroDivisionError):
        threads.run_split([lambda: 1 / 0, slow])
    assert done == [1]   # the other part finished before the error reached the caller
    with pytest.raises(KeyError):
        threads.run_split([lambda: None, lambda: {}["x"]])


def test_blas_products_after_the_team_is_stopped():
    """Stopping OpenBLAS's team (what a fork does) leaves products exact: the next one starts a new team."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((200, 400)).astype(np.float32)
    with threadpool_limits(2):
        want = a @ b
        release = threads._team_release()
        if release is None:
            pytest.skip("NumPy's BLAS is not OpenBLAS with pthreads: lamina never stops its team")
        for _ in range(3):
            release()
            np.testing.assert_array_equal(a @ b, want)
        release()
        release()   # twice in a row: nothing to stop the second time
        np.testing.assert_array_equal(a @ b, want)


@pytest.mark.parametrize("cls,kw", [(lamina.optimizers.Adam, {}), (lamina.optimizers.Adam, {"amsgrad": True}),
                                    (lamina.optimizers.AdamW, {"weight_decay": 0.01})])
def test_adam_split_over_threads_is_the_same_update(cls, kw, monkeypatch):
    """Adam's update spread over threads by blocks (Optimizer._update_all) gives the serial update's numbers
    bit for bit, for a large variable (a partial last block), middling and tiny ones; its parts run on the
    split threads."""
    import threading
    from lamina.optimizers import adam
    monkeypatch.setattr(adam, "_BLOCK", 1000)
    monkeypatch.setattr(adam._blocks, "__defaults__", (1000, 16))
    rng = np.random.default_rng(5)
    shapes = [(40, 123), (7, 100), (3,), (2500,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    results, real = [], adam._adam_block
    for width in (1, 2, 3):
        names = set()

        def noting(*a, **k):
            names.add(threading.current_thread().name)
            return real(*a, **k)
        monkeypatch.setattr(adam, "_adam_block", noting)
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        var = [lamina.Variable(w.copy()) for w in w0]
        opt = cls(learning_rate=0.01, **kw)
        for g in grads:
            opt.apply(g, var)
        results.append([np.asarray(v.numpy()) for v in var])
        assert any(n.startswith("lamina-split") for n in names) == (width > 1)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(results[0][0], w0[0])


def test_a_subclass_with_its_own_update_step_is_not_split(monkeypatch):
    class Mine(lamina.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            variable.data -= learning_rate * gradient
    monkeypatch.setattr(threads, "split_width", lambda *a: 2)
    var = lamina.Variable(np.ones(10, np.float32))
    Mine(learning_rate=0.5).apply([np.ones(10, np.float32)], [var])
    np.testing.assert_array_equal(var.numpy(), np.full(10, 0.5, np.float32))


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu"])
def test_chained_activations_split_over_threads_are_the_same(name, monkeypatch):
    """The in-cache chains of GELU (both forms) and SiLU spread over threads: the same numbers, values and
    gradients, as on one thread (a partial last block; 2 and 3 threads)."""
    from lamina.ops import activations as A
    fn = {"gelu": lambda t: lamina.ops.gelu(t, approximate=False),
          "gelu_tanh": lambda t: lamina.ops.gelu(t, approximate=True), "silu": lamina.ops.silu}[name]
    x = np.random.default_rng(1).standard_normal(3 * A._CHAIN_BLOCK + 77).astype(np.float32) * 4
    gy = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        t = lamina.Variable(x)
        y = fn(t)
        (g,) = lamina.grad(lamina.ops.sum(y * gy), [t])
        got.append((np.asarray(y), np.asarray(g)))
    for y, g in got[1:]:
        np.testing.assert_array_equal(y, got[0][0])
        np.testing.assert_array_equal(g, got[0][1])


def test_split_parts_run_under_the_callers_errstate():
    """A part on a split thread follows the caller's np.errstate (per thread in NumPy): an inf times 0 in its
    half raises under errstate(invalid='raise'), stays silent under 'ignore', warns under 'warn'; the Overlap's
    tasks likewise."""
    import warnings
    inf = np.full(4, np.inf, np.float32)

    def bad():
        return inf * np.float32(0)
    with np.errstate(invalid="raise"):
        with pytest.raises(FloatingPointError):
            threads.run_split([lambda: None, bad])
    for mode, expected in (("ignore", 0), ("warn", 1)):
        with warnings.catch_warnings(record=True) as caught, np.errstate(invalid=mode):
            warnings.simplefilter("always")
            threads.run_split([lambda: None, bad])
        assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == expected, mode
    with np.errstate(invalid="raise"):
        with pytest.raises(FloatingPointError):
            with threads.Overlap(lambda k: bad(), active=True) as ov:
                ov.post(0)
                ov.finish()


def test_a_split_activation_keeps_the_callers_errstate(monkeypatch):
    """End to end: GELU's NumPy chain split over threads, the inf times 0 of a -inf input in the worker's part,
    warns nothing under np.errstate(all='ignore'), as on one thread."""
    import warnings
    from lamina.ops import activations as A
    from lamina.ops import kernels as K
    monkeypatch.setitem(K._state, "mode", "numpy")
    monkeypatch.setattr(threads, "split_width", lambda *a: 2)
    x = np.ones(4 * A._CHAIN_BLOCK, np.float32)
    x[-3] = -np.inf                      # in the last part: the split thread's
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")
        y = np.asarray(lamina.activations.gelu(lamina.Variable(x)))
    assert np.isnan(y[-3]) and not [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_ranges_cover_and_align():
    for n, width, align in [(10, 3, 1), (1000, 2, 64), (65, 4, 64), (7, 8, 1), (0, 2, 4)]:
        r = threads.ranges(n, width, align)
        assert [i for lo, hi in r for i in range(lo, hi)] == list(range(n))
        assert all(lo % align == 0 for lo, _ in r) and len(r) <= width


def test_split_products_pins_blas_to_one_thread_before_stopping_its_team(monkeypatch):
    """A split of work that runs products: BLAS at one thread during the parts, its count back after (also when a
    part fails), and the team stopped only after the count went to one (stopped first, OpenBLAS starts it again
    when the count changes, and its waiting thread takes a core from the split); parts start on multiples of
    ``align``; small work, or one core, runs once here at the old count."""
    events = []
    monkeypatch.setattr(threads, "_team_release", lambda: lambda: events.append("release"))
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_apply", lambda n: events.append(("apply", n)))
    seen = []
    threads.split_products(lambda lo, hi: seen.append((lo, hi)), 10, 100, 100, align=3)
    assert sorted(seen) == [(0, 6), (6, 10)]
    assert events == [("apply", 1), "release", ("apply", 2)]
    events.clear()
    seen.clear()
    threads.split_products(lambda lo, hi: seen.append((lo, hi)), 10, 99, 100)
    assert seen == [(0, 10)] and events == []
    threads.split_products(lambda lo, hi: seen.append((lo, hi)), 2, 100, 100, align=4)   # one block: no split
    assert seen[-1] == (0, 2) and events == []

    def fail(lo, hi):
        raise ValueError(lo)
    with pytest.raises(ValueError):
        threads.split_products(fail, 10, 100, 100)
    assert events[-1] == ("apply", 2)


def _conv_grads(layer, x, gy):
    t = lamina.Tensor(x, requires_grad=True)
    y = layer(t, training=True)
    gs = lamina.grad(y, [t] + list(layer.trainable_weights), grad_output=lamina.Tensor(gy))
    return [np.asarray(y)] + [np.asarray(g) for g in gs]


@pytest.mark.parametrize("layer,shape", [
    (lambda: lamina.layers.Conv2D(24, 3, padding="same"), (7, 9, 10, 20)),     # wide blocks, dx as a convolution
    (lambda: lamina.layers.Conv2D(24, 3, strides=2, padding="same"), (7, 9, 10, 20)),   # col2im (the gather)
    (lambda: lamina.layers.Conv2D(24, 3), (7, 9, 10, 20)),
    (lambda: lamina.layers.Conv2DTranspose(16, 3, strides=2, padding="same"), (7, 5, 6, 20)),
    (lambda: lamina.layers.Conv2D(40, 3, padding="same", activation="relu"), (7, 9, 10, 3)),   # the thin layout
    (lambda: lamina.layers.Conv2D(40, 3, strides=2), (7, 9, 10, 3))])
def test_convolution_blocks_split_over_threads_are_the_same(layer, shape, monkeypatch):
    """A convolution's blocks of samples (im2col and product, the kernel gradient's rebuilt columns, dx as a
    convolution of dy, the gathered col2im, the transposed convolution's backward; a thin input's transposed
    blocks and their col2im) shared over 2 and 3 threads: the one-thread values bit for bit (products on one BLAS
    thread either way; the kernel gradient's block products added in block order), blocks of 2 samples so that
    parts start on block boundaries."""
    from lamina.ops import convolution, kernels
    monkeypatch.setattr(kernels, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(kernels._state, "mode", "auto")
    monkeypatch.setitem(kernels._state, "pending", 0)
    monkeypatch.setattr(convolution, "_KEEP_COLS_BYTES", 0)       # the kernel gradient rebuilds its columns
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(np.float32)
    conv = layer()
    y = conv(x)
    c = shape[-1]
    per = ((y.shape[1] * y.shape[2] if isinstance(conv, lamina.layers.Conv2D) else shape[1] * shape[2])
           * (9 * c + (c < 8)) * 4)
    monkeypatch.setattr(convolution, "_BLOCK_BYTES_CPU", 2 * per)  # (2 samples a block: 4 blocks of 7 samples)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    parts, real = [], threads.run_split
    monkeypatch.setattr(threads, "run_split", lambda ps: (parts.append(len(ps)), real(ps))[1])
    got = []
    for width in (1, 2, 3):
        # (one width for every split, but none inside a part, as _alone() keeps it)
        monkeypatch.setattr(threads, "_width",
                            lambda *a, width=width: (1, None) if threads._split["busy"] else (width, lambda: None))
        with threads.one_thread():
            got.append(_conv_grads(conv, x, gy))
    assert parts and set(parts) == {2, 3}
    for other in got[1:]:
        for u, v in zip(other, got[0]):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("pool,strides,padding", [(2, 2, "valid"), (3, 2, "same"), (3, 1, "valid")])
def test_max_pooling_split_over_samples_is_the_same(pool, strides, padding, monkeypatch):
    """MaxPool2D forward and backward spread over threads by samples (ties included: the first maximum in
    window order gets the gradient): the same outputs and gradients as on one thread."""
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, (7, 11, 10, 5)).astype(np.float32)   # small integers: many ties
    gy = None
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        t = lamina.Variable(x)
        y = lamina.ops.max_pool(t, pool, strides, padding)
        if gy is None:
            gy = rng.standard_normal(y.shape).astype(np.float32)
        (g,) = lamina.grad(lamina.ops.sum(y * gy), [t])
        got.append((np.asarray(y), np.asarray(g)))
    for y, g in got[1:]:
        np.testing.assert_array_equal(y, got[0][0])
        np.testing.assert_array_equal(g, got[0][1])
    assert np.count_nonzero(got[0][1]) > 0


@pytest.mark.parametrize("case", ["plain", "batch_mask", "causal_dropout", "weights"])
def test_attention_split_over_the_batch_is_the_same(case, monkeypatch):
    """Fused attention spread over threads by its first batch axis (masks per sample or shared, causal,
    dropout drawn once for the whole batch, returned weights with a gradient): the same outputs and
    gradients as on one thread."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((5, 2, 6, 4)).astype(np.float32) for _ in range(3))
    mask = (rng.random((5, 2, 6, 6)) > 0.3) if case == "batch_mask" else None
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        tq, tk, tv = (lamina.Variable(a) for a in (q, k, v))
        dropping = case == "causal_dropout"
        out = lamina.ops.scaled_dot_product_attention(
            tq, tk, tv, mask=mask, is_causal=dropping, dropout_rate=0.3 if dropping else 0.0, training=True,
            rng=np.random.default_rng(1), return_weights=case == "weights")
        if case == "weights":
            loss = lamina.ops.sum(out[0] * out[0]) + lamina.ops.sum(out[1] * 3.0)
        else:
            loss = lamina.ops.sum(out * out)
        grads = lamina.grad(loss, [tq, tk, tv])
        y = out[0] if case == "weights" else out
        got.append([np.asarray(y)] + [np.asarray(g) for g in grads])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)


def test_relu_passes_split_over_threads_are_the_same(monkeypatch):
    """ReLU (alone, fused into Conv2D and Dense) forward and backward split by rows: the one-thread numbers,
    NaN passing through as the ReLU op passes it."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 8, 8, 4)).astype(np.float32)   # 1536 values: rows of 16 for relu_into
    x[0, 0, 0, :2] = np.nan
    kernel = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    dense = rng.standard_normal((4, 16)).astype(np.float32)
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        tx, tk, td = (lamina.Variable(a) for a in (x, kernel, dense))
        ys = [lamina.ops.relu(tx), lamina.ops.convolution.conv2d(tx, tk, padding="same", activation="relu"),
              lamina.ops.math.linear(tx, td, None, activation="relu")]
        loss = sum(lamina.ops.sum(y * np.float32(i + 1.5)) for i, y in enumerate(ys))
        got.append([np.asarray(y) for y in ys] + [np.asarray(g) for g in lamina.grad(loss, [tx, tk, td])])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)
    assert np.isnan(got[0][0][0, 0, 0, 0])


@pytest.mark.parametrize("strides,multiplier", [(1, 1), (2, 1), (1, 2)])
def test_depthwise_split_over_blocks_is_the_same(strides, multiplier, monkeypatch):
    """DepthwiseConv's flat forward and backward spread over threads by blocks (the input gradient gathered
    by output blocks, the kernel gradient's block sums added in block order): the one-thread output and
    gradients bit for bit."""
    from lamina.ops import nn_kernels
    monkeypatch.setattr(nn_kernels, "_FLAT_ROW", 64)     # small blocks: several per thread
    monkeypatch.setattr(nn_kernels, "_FLAT_BLOCK", 512)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 17, 15, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, multiplier)).astype(np.float32)
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        tx, tw = lamina.Variable(x), lamina.Variable(w)
        y = lamina.ops.depthwise_conv(tx, tw, strides=strides, padding="same")
        got.append([np.asarray(y)] + [np.asarray(g) for g in lamina.grad(lamina.ops.sum(y * y), [tx, tw])])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_split_over_rows_is_the_same(training, monkeypatch):
    """BatchNormalization's per-channel passes (rows_op) split by rows: the one-thread outputs, gradients
    and moving statistics bit for bit."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 10, 10, 24)).astype(np.float32) * 3 + 1
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        lamina.utils.set_random_seed(0)
        layer = lamina.layers.BatchNormalization()
        tx = lamina.Variable(x)
        y = layer(tx, training=training)
        grads = lamina.grad(lamina.ops.sum(y * y), [tx] + layer.trainable_weights)
        got.append([np.asarray(y)] + [np.asarray(g) for g in grads] + [np.asarray(w.numpy()) for w in layer.weights])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_pool_of_its_own():
    """A process forked after lamina's split threads exist (multiprocessing's default on Linux) must not hand
    work to the parent's threads, which do not exist in the child: it would wait forever."""
    import os
    import signal
    import time
    threads.run_split([lambda: None, lambda: None])   # the pool exists now
    pid = os.fork()
    if pid == 0:  # the child: split work, exit 0 if it came back
        code = 1
        try:
            got = []
            threads.run_split([lambda: got.append(1), lambda: got.append(2)])
            code = 0 if sorted(got) == [1, 2] else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's split never finished")


@pytest.mark.parametrize("scale,center", [(True, True), (False, True), (True, False), (False, False)])
def test_layer_norm_split_over_rows_is_the_same(scale, center, monkeypatch):
    """LayerNormalization's row-by-row passes split over threads (its matrix-vector products outside the
    split): the one-thread outputs and gradients bit for bit."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 7, 24)).astype(np.float32) * 2 + 0.5
    gy = rng.standard_normal(x.shape).astype(np.float32)
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        layer = lamina.layers.LayerNormalization(scale=scale, center=center)
        tx = lamina.Variable(x)
        y = layer(tx)
        grads = lamina.grad(lamina.ops.sum(y * gy), [tx] + layer.trainable_weights)
        got.append([np.asarray(y)] + [np.asarray(g) for g in grads])
    for other in got[1:]:
        for a, b in zip(got[0], other):
            np.testing.assert_array_equal(a, b)


def test_no_split_inside_a_split(monkeypatch):
    """A part that itself asks for a split runs on one thread (stopping the team from a part could pull it
    from under the other parts' products)."""
    monkeypatch.setattr(threads, "_team_release", lambda: lambda: None)
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    big = threads.SPLIT_MIN_ELEMENTS
    widths = []
    threads.run_split([lambda: widths.append(("first", threads.split_width(big))),
                       lambda: widths.append(("second", threads.split_width(big)))])
    assert dict(widths) == {"first": 1, "second": 1}   # asked from inside a split, on either thread
    assert threads.split_width(big) == 2                 # and after it, again


def test_a_notebook_kernels_own_threads_do_not_stop_splits(monkeypatch):
    """Threads of a Jupyter kernel's packages (heartbeat, IOPub, ...) never run a product: splits go on beside
    them; any other thread (a user's, a data loader's) still keeps the passes on one core."""
    import threading
    monkeypatch.setattr(threads, "_team_release", lambda: lambda: None)
    monkeypatch.setattr(threads, "get_num_threads", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    Kernelish = type("Heartbeat", (threading.Thread,), {"__module__": "ipykernel.heartbeat"})
    stop = threading.Event()

    def iopub_loop():  # a plain Thread running a kernel package's function, as ipykernel's IOPub thread
        stop.wait()
    iopub_loop.__module__ = "ipykernel.iostream"
    for make, expected in ((lambda: Kernelish(target=stop.wait, daemon=True), 2),
                           (lambda: threading.Thread(target=iopub_loop, daemon=True), 2),
                           (lambda: threading.Thread(target=stop.wait, daemon=True), 1)):
        t = make()
        t.start()
        try:
            assert threads.split_width(threads.SPLIT_MIN_ELEMENTS) == expected
        finally:
            stop.set()
            t.join()
            stop.clear()


def test_overlap_runs_every_task_once_on_both_threads():
    """threads.Overlap, active: queued tasks run on lamina's split thread while the caller works, need()
    waits for (or runs) one, finish() the rest; BLAS's count and the split flag are back afterwards."""
    import threading
    import time
    ran = []
    helped = threading.Event()

    def run(k):
        ran.append((k, threading.current_thread().name))
        time.sleep(0.002)
        if threading.current_thread().name.startswith("lamina-split"):
            helped.set()
    before = threads.get_num_threads()
    with threads.Overlap(run, active=True) as ov:
        assert ov.active and threads._split["busy"]
        for k in range(8):
            ov.post(k)
        ov.need(0)
        # the caller's own work: the second thread takes queued tasks meanwhile (waited for, not slept
        # for: how soon a busy machine runs that thread is the scheduler's choice)
        helped.wait(10.0)
        ov.need(7)
        ov.finish()
    assert sorted(k for k, _ in ran) == list(range(8))
    assert any(name.startswith("lamina-split") for _, name in ran)
    assert threads.get_num_threads() == before and not threads._split["busy"]


def test_overlap_inactive_runs_every_task_here_in_order():
    import threading
    ran = []
    with threads.Overlap(lambda k: ran.append((k, threading.current_thread().name)), active=False) as ov:
        for k in (2, 0, 1, 3):
            ov.post(k)
        ov.need(1)
        assert [k for k, _ in ran] == [1]
        ov.finish()
    assert [k for k, _ in ran] == [1, 2, 0, 3]
    assert {name for _, name in ran} == {threading.current_thread().name}


def test_overlap_task_error_reaches_the_caller():
    def run(k):
        if k == 2:
            raise ValueError("chunk 2 failed")
    for active in (True, False):
        with pytest.raises(ValueError, match="chunk 2"):
            with threads.Overlap(run, active=active) as ov:
                for k in range(5):
                    ov.post(k)
                ov.finish()
        assert not threads._split["busy"]


def test_overlap_stops_queued_tasks_when_the_caller_fails():
    """An error in the caller's loop: tasks not yet started are dropped, and none runs after the block."""
    import time
    ran = []

    def run(k):
        time.sleep(0.01)
        ran.append(k)
    with pytest.raises(RuntimeError):
        with threads.Overlap(run, active=True) as ov:
            for k in range(50):
                ov.post(k)
            raise RuntimeError("the loop failed")
    count = len(ran)
    time.sleep(0.05)
    assert count < 50 and len(ran) == count and not threads._split["busy"]


def test_orthogonal_initializer_factorises_on_one_blas_thread(monkeypatch):
    """QR at weight sizes gains nothing from a second BLAS thread and collapses when a core is busy: the
    Orthogonal initializer runs it under threads.one_thread, which restores the count afterwards."""
    if threads._controller() is None:
        pytest.skip("no BLAS that threadpoolctl can control")
    seen = []
    real = np.linalg.qr
    monkeypatch.setattr(np.linalg, "qr", lambda a: seen.append(threads.get_num_threads()) or real(a))
    before = threads.get_num_threads()
    threads._apply(2)
    try:
        w = lamina.initializers.Orthogonal(seed=1)((6, 4))
        assert threads.get_num_threads() == 2
    finally:
        threads._apply(before)
    assert seen == [1]
    np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-5)

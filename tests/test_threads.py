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
    assert g.history == [(7, 2)]    # 1 warm-up + 3 steps of each count, then the switch


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

    monkeypatch.setattr(threads, "Governor", lambda: Spy(candidates=[1, 2]))
    model = lamina.Sequential([lamina.Input((4,)), lamina.layers.Dense(3)])
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, x[:, :3], batch_size=8, epochs=2, verbose=0)
    assert len(seen) == 16 and all(s > 0 for s in seen)
    assert threads.get_num_threads() in (1, 2)


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

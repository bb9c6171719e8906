"""One step of every benchmark workload in both frameworks: the benchmark itself stays runnable, and
its backward passes make the loss go down. Timings are not checked here (they live in bench/)."""
import pytest

from bench import worker
from bench.workloads import WORKLOADS


@pytest.mark.parametrize("workload", WORKLOADS)
@pytest.mark.parametrize("framework", ["lamina", "torch"])
def test_workload_one_step(framework, workload):
    if framework == "torch":
        pytest.importorskip("torch")
    r = worker.run(framework, workload, min_steps=2, min_time=0.0, warmup=1)
    assert r["steps"] == 2 and r["median_ms"] > 0
    if workload != "cnn_infer":
        assert r["loss_decreased"], f"{framework} {workload}: loss went from {r['loss_first']} to {r['loss_last']}"

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


def test_ab_compares_a_revision_with_the_working_tree(monkeypatch):
    """bench.ab times the mlp in a worktree of HEAD and in the working tree, one pair, and removes the
    worktree afterwards. Both workers run NumPy's element-wise code (LAMINA_KERNELS=numpy): the fresh worktree
    has no numba cache, and compiling the kernels there and loading numba in both workers (~4 s of the
    test's ~5) checked nothing this test is about (tests/test_kernels.py checks the kernels)."""
    import os
    import shutil
    import subprocess

    from bench import ab
    if shutil.which("git") is None or not os.path.exists(os.path.join(ab.ROOT, ".git")):   # (a file in a worktree)
        pytest.skip("needs a git checkout")
    monkeypatch.setenv("LAMINA_KERNELS", "numpy")
    before = subprocess.run(["git", "worktree", "list"], cwd=ab.ROOT, capture_output=True, text=True).stdout
    lines = []
    res = ab.compare("HEAD", ["mlp"], pairs=1, steps=2, warmup=1, report=lines.append)
    (base, new), = res.values()
    assert len(base) == len(new) == 1 and base[0] > 0 and new[0] > 0 and lines[0].startswith("mlp")
    after = subprocess.run(["git", "worktree", "list"], cwd=ab.ROOT, capture_output=True, text=True).stdout
    assert after == before
    with pytest.raises(SystemExit):
        ab.main(["--workloads", "nope"])


def test_openblas_rows_set_the_kernel_variables_together():
    """A 'lamina+NAME' row: 'native' drops the machine's OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE (OpenBLAS
    then detects the CPU), another NAME forces those kernels and drops the L2 size set for the machine's;
    the rest of the environment is untouched. (Only the variables: no test process runs with them changed.)"""
    from bench.__main__ import _kernels_env
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512", "PATH": "/bin"}
    env = dict(base)
    _kernels_env(env, "native")
    assert env == {"PATH": "/bin"}
    env = dict(base)
    _kernels_env(env, "SkylakeX")
    assert env == {"OPENBLAS_CORETYPE": "SkylakeX", "PATH": "/bin"}


def test_torch_malloc_rows_set_lamina_s_allocator_thresholds():
    """A 'torch+malloc' row runs PyTorch with glibc's thresholds at the values lamina sets for itself with
    mallopt at import (through glibc's environment variables), and nothing else changed."""
    from bench.__main__ import _malloc_env
    from lamina.backend import MALLOC_MMAP_THRESHOLD, MALLOC_TRIM_THRESHOLD
    env = {"PATH": "/bin"}
    _malloc_env(env)
    assert env == {"PATH": "/bin", "MALLOC_MMAP_THRESHOLD_": str(MALLOC_MMAP_THRESHOLD),
                   "MALLOC_TRIM_THRESHOLD_": str(MALLOC_TRIM_THRESHOLD)}
    assert MALLOC_MMAP_THRESHOLD == 32 << 20 and MALLOC_TRIM_THRESHOLD == 256 << 20


def test_layer_bench_runs_every_case_in_both_frameworks(tmp_path):
    """bench.layers: each case's lamina layer and torch module take the same batch (each in its own layout)
    and back-propagate; the JSON records the machine and one row per case. --smoke shrinks every batch (the
    benchmark's sizes took ~10 s here), keeping the channels and features each layer was built for."""
    pytest.importorskip("torch")
    import json

    from bench import layers
    out = tmp_path / "layers.json"
    assert layers.main(["--smoke", "--reps", "1", "--steps", "1", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["case"] for r in data["rows"]] == list(layers.CASES)
    assert all(r["lamina_ms"] > 0 and r["torch_ms"] > 0 for r in data["rows"]) and "cpus" in data["machine"]
    assert all(r["shape"][0] == 2 for r in data["rows"])
    with pytest.raises(SystemExit):
        layers.main(["--cases", "nope"])


def test_only_a_full_default_run_replaces_the_results_file(monkeypatch):
    """python -m bench writes bench/results.json (the table bench/README.md cites) only for a full default
    run; a partial or otherwise changed run (NumPy's code forced by LAMINA_KERNELS=numpy too) goes where --json
    says, or nowhere."""
    from argparse import Namespace

    from bench.__main__ import DEFAULT_JSON, _json_path
    full = dict(json=None, workloads=",".join(WORKLOADS), frameworks="lamina,torch", threads=2, contention=0,
                size="base", device="cpu", smoke=False)
    monkeypatch.delenv("LAMINA_KERNELS", raising=False)
    assert _json_path(Namespace(**full)) == DEFAULT_JSON
    for change in [dict(workloads="lstm"), dict(frameworks="lamina"), dict(threads="auto"), dict(contention=1),
                   dict(size="large"), dict(device="cuda"), dict(smoke=True)]:
        assert _json_path(Namespace(**dict(full, **change))) is None, change
        assert _json_path(Namespace(**dict(full, json="x.json", **change))) == "x.json"
    monkeypatch.setenv("LAMINA_KERNELS", "auto")
    assert _json_path(Namespace(**full)) == DEFAULT_JSON
    monkeypatch.setenv("LAMINA_KERNELS", "NumPy")
    assert _json_path(Namespace(**full)) is None
    assert _json_path(Namespace(**dict(full, json="x.json"))) == "x.json"


def test_a_run_the_hypervisor_stole_from_is_measured_again_and_left_out_of_the_table(monkeypatch):
    """A run during which the VM's host took cores away ('steal' in /proc/stat) is repeated, for either
    framework, and kept in the JSON marked as discarded, out of the table's medians."""
    from argparse import Namespace

    import bench.__main__ as runner
    steals = {"lamina": [0.38, 0.01, 0.5, 0.4, 0.3], "torch": [0.0, 0.02]}   # in the order the runs come

    def fake(fw, w, threads, extra, root=None):
        steal = steals[fw].pop(0)
        return {"framework": fw, "workload": w, "median_ms": 100.0 if steal > runner.STEAL_LIMIT else 60.0,
                "steal_cpu": steal, "peak_rss_mb": 10.0, "gflops": 1.0, "loss_decreased": True}

    monkeypatch.setattr(runner, "_run_worker", fake)
    runs = []
    runner._measure(Namespace(smoke=False, device="none", reps=2, no_idle_wait=True, threads=2),
                    ["lamina", "torch"], ["mlp"], [], runs)
    assert not steals["lamina"] and not steals["torch"]
    lamina_runs = [r for r in runs if r["framework"] == "lamina"]
    assert [r["rep"] for r in lamina_runs] == [0, 0, 1, 1, 1]
    assert [bool(r.get("discarded")) for r in lamina_runs] == [True, False, True, True, False]  # two repeats at most
    table = runner.summarise(runs, ["mlp"], ["lamina", "torch"])
    row = next(line for line in table.splitlines() if line.startswith("mlp"))
    assert "80.00 (60.0-100.0)" in row and "60.00 (60.0-60.0)" in row   # the kept runs' medians only


def test_an_auto_threads_run_records_the_governor_s_choices(monkeypatch):
    """With --threads auto a lamina run's JSON says when the governor changed the thread count (None where the
    count is fixed, as it is in a test worker): a run that ended on one thread can then be told from a slow one."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    r = worker.run("lamina", "mlp", min_steps=2, min_time=0.0, warmup=1)
    assert r["threads"] == "auto" and "governor_history" in r
    from lamina import threads
    gov = threads.governor()
    assert r["governor_history"] == (None if gov is None else gov.history)


_AMD = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
flags\t\t: fpu sse2 avx fma avx2 avx512f avx512dq avx512_bf16 avx512_vnni

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
"""

_INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 2
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""


def test_the_machine_record_names_the_core_behind_a_generic_cpu_name():
    """'AMD EPYC' covers Zen 3 and Zen 4, 'Xeon' Sapphire and Emerald Rapids: the record keeps the family and
    model numbers (of the first processor only) and the core they name, which is what the ratios depend on."""
    from bench.__main__ import cpu_identity, describe_cpu
    amd = cpu_identity(_AMD)
    assert amd == dict(cpu="AMD EPYC", vendor="AuthenticAMD", family=25, model=17, stepping=1, core="Zen 4",
                       isa=["avx2", "avx512f", "avx512_bf16"])
    assert describe_cpu(amd) == "AMD EPYC (Zen 4: family 25, model 17; avx2 avx512f avx512_bf16)"
    intel = cpu_identity(_INTEL)
    assert (intel["core"], intel["isa"]) == ("Emerald Rapids", ["avx2", "avx512f", "avx512_bf16", "amx_tile"])
    assert cpu_identity(_INTEL.replace(": 207", ": 143"))["core"] == "Sapphire Rapids"
    unknown = cpu_identity(_AMD.replace(": 17", ": 200", 1))
    assert unknown["core"] is None and describe_cpu(unknown).startswith("AMD EPYC (family 25, model 200;")
    arm = cpu_identity("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\n")
    assert arm == {"cpu": None} and describe_cpu(arm) == "?"


def test_gpu_profile_times_each_op_and_puts_every_method_back(monkeypatch):
    """bench.gpu_profile on CuPy's CPU stand-in (a no-op synchronize): every op's forward and backward and the
    optimizer get a row, the rows add up to no more than the synchronised step, and the wrapped methods are the
    originals again afterwards."""
    import sys
    import types

    import fake_cupy
    from bench import gpu_profile
    from lamina.optimizers.base import Optimizer
    from lamina.registry import subclasses
    from lamina.tensor import Op

    module = fake_cupy.make_module()
    syncs = []
    module.cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(synchronize=lambda: syncs.append(1)))
    monkeypatch.setitem(sys.modules, "cupy", module)
    before = {(c, a): c.__dict__[a] for c in subclasses(Op) for a in ("forward", "backward") if a in c.__dict__}
    before[Optimizer, "apply_gradients"] = Optimizer.__dict__["apply_gradients"]
    try:
        plain, synced, rows = gpu_profile.profile("mlp", "base", steps=2, warmup=1)
    finally:
        import lamina
        lamina.set_device("cpu")
    names = {name for _, _, name in rows}
    assert {"Linear.fwd", "Linear.bwd", "SparseCategoricalCrossentropy.fwd", "optimizer.apply_gradients"} <= names
    assert all(calls > 0 and ms >= 0 for ms, calls, _ in rows)
    assert sum(ms for ms, _, _ in rows) <= synced * 1.01 and plain > 0
    assert {name: calls for _, calls, name in rows}["Linear.fwd"] == 3   # three Dense layers a step
    assert syncs   # the device was synchronised around each call
    after = {(c, a): c.__dict__[a] for c in subclasses(Op) for a in ("forward", "backward") if a in c.__dict__}
    after[Optimizer, "apply_gradients"] = Optimizer.__dict__["apply_gradients"]
    assert after == before

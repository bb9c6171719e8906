"""Every public function of Keras 3.15's keras.ops and of keras.ops.{nn, numpy, linalg, image} exists in
lamina's namespace, is callable and takes Keras's parameters (names, order, kinds, defaults), as listed
in tests/data/keras_ops_signatures.json (written by tools/keras_ops_names.py from the installed Keras)."""
import ast
import inspect
import json
import pathlib

import numpy as np
import pytest

import lamina.ops

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "keras_ops_signatures.json").read_text())
NAMESPACES = {"ops": lamina.ops, "nn": lamina.ops.nn, "numpy": lamina.ops.numpy, "linalg": lamina.ops.linalg,
              "image": lamina.ops.image}
# the top-level functions that live in no namespace: lamina.ops.core, this branch's part of the issue
CORE = sorted(set(DATA["ops"]) - set(DATA["nn"]) - set(DATA["numpy"]) - set(DATA["linalg"]) - set(DATA["image"]))



def parse_signature(text):
    """[(name, kind, default)] from a signature string such as "(x, axis=None, *args, **kwargs)"."""
    fn = ast.parse(f"def f{text}: pass").body[0].args
    out = []
    positional = fn.posonlyargs + fn.args
    defaults = [None] * (len(positional) - len(fn.defaults)) + list(fn.defaults)
    for a, d in zip(positional, defaults):
        kind = "positional_only" if a in fn.posonlyargs else "positional_or_keyword"
        out.append((a.arg, kind, inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    if fn.vararg:
        out.append((fn.vararg.arg, "var_positional", inspect.Parameter.empty))
    for a, d in zip(fn.kwonlyargs, fn.kw_defaults):
        out.append((a.arg, "keyword_only", inspect.Parameter.empty if d is None else ast.literal_eval(d)))
    if fn.kwarg:
        out.append((fn.kwarg.arg, "var_keyword", inspect.Parameter.empty))
    return out


def signature_of(fn):
    return [(p.name, p.kind.name.lower(), p.default) for p in inspect.signature(fn).parameters.values()]


def problems(ns, names):
    """What is wrong with lamina's version of each Keras function: missing, not callable, other
    parameters, no docstring. Empty when all is well."""
    module = NAMESPACES[ns]
    out = []
    for name in names:
        where = f"lamina.ops{'' if ns == 'ops' else '.' + ns}.{name}"
        fn = getattr(module, name, None)
        if fn is None:
            out.append(f"{where}: missing")
        elif not callable(fn):
            out.append(f"{where}: not callable")
        elif signature_of(fn) != parse_signature(DATA[ns][name]):
            out.append(f"{where}{inspect.signature(fn)}: Keras has {DATA[ns][name]}")
        elif not (inspect.getdoc(fn) or "").strip():
            out.append(f"{where}: no docstring (docs/ops.md takes its first line)")
    return out


def test_ops_core_functions():
    """The 46 top-level functions outside the four namespaces (lamina.ops.core): this branch's part."""
    bad = problems("ops", CORE)
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("ns", list(NAMESPACES))
def test_namespace_complete(ns):
    """Every function of keras.ops (flat) and of each namespace, strictly."""
    bad = problems(ns, sorted(DATA[ns]))
    assert not bad, f"{len(bad)} of {len(DATA[ns])} functions of {ns}:\n" + "\n".join(bad)


def test_core_is_exactly_the_top_level_rest():
    assert sorted(lamina.ops.core.__all__) == CORE


def test_parse_signature():
    assert parse_signature("(x, axis=None, *args, k=(1, 2), **kw)") == [
        ("x", "positional_or_keyword", inspect.Parameter.empty), ("axis", "positional_or_keyword", None),
        ("args", "var_positional", inspect.Parameter.empty), ("k", "keyword_only", (1, 2)),
        ("kw", "var_keyword", inspect.Parameter.empty)]

    def f(x, axis=None, *args, k=(1, 2), **kw):
        pass
    assert signature_of(f) == parse_signature("(x, axis=None, *args, k=(1, 2), **kw)")


def test_parity_tool_runs_and_reports():
    """tools/ops_parity.py compares values and gradients with Keras and reports missing names."""
    import io
    import os
    import types
    os.environ.setdefault("KERAS_BACKEND", "torch")
    from repo_scripts import load_script
    tool = load_script("tools/ops_parity.py")
    out = io.StringIO()
    rows, summary = tool.run(["ops"], only={"logsumexp", "top_k", "segment_max", "while_loop", "stft"}, out=out)
    assert {name: status for _, name, status, _ in rows} == dict.fromkeys(
        ["logsumexp", "segment_max", "stft", "top_k", "while_loop"], "equal"), out.getvalue()
    assert "5/5 equal (100.0%)" in out.getvalue()
    from keras import ops as kops
    status, _ = tool.compare_one("ops", "logsumexp", DATA["ops"]["logsumexp"], types.SimpleNamespace(), kops,
                                 tool._samples())
    assert status == "missing"
    # a wrong result is caught: rsqrt standing in for logsumexp
    fake = types.SimpleNamespace(logsumexp=lambda x, axis=None, keepdims=False: lamina.ops.core.rsqrt(x))
    status, _ = tool.compare_one("ops", "logsumexp", DATA["ops"]["logsumexp"], fake, kops, tool._samples())
    assert status in ("differs", "shape")


AXIS_OPS = ["cumsum", "cumprod", "nancumsum", "nancumprod", "diff", "trapezoid", "logsumexp", "norm", "normalize",
            "softmax", "log_softmax", "unstack", "sum", "mean", "max", "argmax", "sort", "moments", "median"]


@pytest.mark.parametrize("name", AXIS_OPS)
@pytest.mark.parametrize("axis", [2, -3])
def test_an_axis_the_input_lacks_raises_instead_of_wrapping(name, axis):
    """NumPy and Keras refuse an axis beyond the rank; several ops once took it modulo the rank and silently
    worked along another axis (softmax(x, axis=-3) of a 2-D x ran over its last axis)."""
    x = np.arange(1, 7, dtype=np.float32).reshape(2, 3) / 7
    fn = getattr(lamina.ops, name)
    with pytest.raises(ValueError, match="out of"):
        fn(x, axes=[axis]) if name == "moments" else fn(x, axis=axis)


def test_axes_a_0d_input_has_still_work():
    """The checks refuse only axes the input lacks: a 0-d value takes axis 0 or -1 as NumPy's reductions do
    (softmax of a scalar is 1, its cumsum one value), and array-likes still come in as lists."""
    from lamina.ops import activations
    assert float(lamina.ops.softmax(np.float32(2.0), axis=-1).numpy()) == 1.0
    np.testing.assert_array_equal(lamina.ops.cumsum(np.float32(2.0), axis=-1).numpy(), [2.0])
    np.testing.assert_allclose(activations.softmax([1.0, 2.0]).numpy(), [0.26894142, 0.73105858], rtol=1e-6)

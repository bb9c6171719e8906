"""Parity run of lamina.ops against keras.ops (torch backend), function by function.

For every function of keras.ops and its nn / numpy / linalg / image namespaces (the list in
tests/data/keras_ops_signatures.json) it builds small inputs (a table of sample arguments, else
guessed from the parameter names), calls Keras and lamina, and compares the results (values, shapes,
dtypes) and, where both results are float, the gradients of sum_i <w_i, out_i> for fixed random w
(torch autograd against lamina's backward). It prints one row per function and the share that agrees.
Functions lamina lacks are reported as missing, functions without a sample as "no sample".

    KERAS_BACKEND=torch python tools/ops_parity.py [--ns ops,numpy] [--only name1,name2] [--failures]
"""
import argparse
import json
import os
import pathlib
import sys
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

SIGNATURES = ROOT / "tests" / "data" / "keras_ops_signatures.json"
NAMESPACES = ("ops", "nn", "numpy", "linalg", "image")
FLOAT_NAMES = {"x", "x1", "x2", "y", "a", "b", "inputs", "target", "output", "data", "tensor", "array", "values",
               "query", "key", "value", "mean", "variance", "m", "v", "elems", "predictions", "logits", "labels"}
# functions of square matrices, wherever they appear (linalg, and flat in ops / numpy)
_SQUARE = set(json.loads(SIGNATURES.read_text())["linalg"]) | {"slogdet", "det", "inv", "trace"} \
    if SIGNATURES.exists() else set()
# results that cannot be compared by value: uninitialised memory, random draws, unspecified order
SHAPE_ONLY = {"empty": "uninitialised memory", "empty_like": "uninitialised memory",
              "elastic_transform": "random displacements", "argpartition": "order inside the parts is unspecified"}
# only the first output is unique (eigenvectors have free signs / order among equal eigenvalues)
FIRST_ONLY = {"eig": "eigenvectors are unique only up to sign", "eigh": "eigenvectors are unique only up to sign"}
INT_FUNCTIONS = {"bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "bitwise_invert", "bitwise_left_shift",
                 "bitwise_right_shift", "left_shift", "right_shift", "gcd", "lcm", "bincount", "invert"}


def _f(rng, *shape, lo=0.5, hi=1.5):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def _spd(rng, n=3):
    a = rng.standard_normal((n, n)).astype(np.float32)
    return (a @ a.T + n * np.eye(n)).astype(np.float32)


def _samples():
    """name (or 'namespace.name') -> function(rng) -> (args, kwargs). Callables are passed to both
    libraries as factories taking the ops module."""
    S = {}
    # conversion and dtypes
    S["cast"] = lambda r: ((_f(r, 2, 3), "float16"), {})
    S["saturate_cast"] = lambda r: ((_f(r, 4, lo=-300, hi=300), "int8"), {})
    S["convert_to_tensor"] = lambda r: ((_f(r, 3),), {})
    S["convert_to_numpy"] = lambda r: ((_f(r, 3),), {})
    # control flow (bodies written with the library's own ops: see _call)
    S["cond"] = lambda r: ((True, lambda ops, x: ops.exp(x), lambda ops, x: ops.square(x)), {"_fn_args": (_f(r, 3),)})
    S["switch"] = lambda r: ((1, [lambda ops, x: ops.exp(x), lambda ops, x: ops.square(x)], _f(r, 3)), {})
    S["while_loop"] = lambda r: ((lambda ops, i, v: i < 3, lambda ops, i, v: (i + 1, v * 1.5), (0, _f(r, 3))), {})
    S["fori_loop"] = lambda r: ((0, 3, lambda ops, i, v: v * v + i, _f(r, 3)), {})
    S["scan"] = lambda r: ((lambda ops, c, x: (c * 0.5 + x, ops.exp(c) * x), _f(r, 2), _f(r, 4, 2)), {})
    S["associative_scan"] = lambda r: ((lambda ops, a, b: a + b, _f(r, 5, 2)), {})
    S["map"] = lambda r: ((lambda ops, x: ops.logsumexp(x) * x, _f(r, 3, 4)), {})
    S["vectorized_map"] = S["map"]
    S["stop_gradient"] = lambda r: ((_f(r, 3),), {})
    # segments, scatter, slices
    for k in ("sum", "max", "min", "prod"):
        S["segment_" + k] = lambda r: ((_f(r, 5, 2), np.array([0, 0, 1, 2, 2])), {"num_segments": 3})
    S["scatter"] = lambda r: ((np.array([[0, 1], [2, 0]]), _f(r, 2), (3, 2)), {})
    S["scatter_update"] = lambda r: ((_f(r, 4, 3), np.array([[0], [2]]), _f(r, 2, 3)), {})
    S["slice"] = lambda r: ((_f(r, 4, 5), [1, 2], [2, 3]), {})
    S["slice_update"] = lambda r: ((_f(r, 4, 5), [1, 2], _f(r, 2, 3)), {})
    S["top_k"] = lambda r: ((r.permutation(12).reshape(2, 6).astype(np.float32), 3), {})
    S["in_top_k"] = lambda r: ((np.array([0, 4]), r.permutation(12).reshape(2, 6).astype(np.float32), 2), {})
    S["unstack"] = lambda r: ((_f(r, 3, 2),), {})
    S["logsumexp"] = lambda r: ((_f(r, 3, 4),), {"axis": 1})
    S["erfinv"] = lambda r: ((_f(r, 5, lo=-0.9, hi=0.9),), {})
    S["logdet"] = lambda r: ((_spd(r),), {})
    S["cdist"] = lambda r: ((_f(r, 4, 3), _f(r, 5, 3)), {})
    S["extract_sequences"] = lambda r: ((_f(r, 2, 12), 4, 3), {})
    S["rearrange"] = lambda r: ((_f(r, 2, 6, 4), "a (h w) c -> (w a) c h"), {"h": 2})
    S["fft"] = lambda r: (((_f(r, 2, 8), _f(r, 2, 8)),), {})
    S["fft2"] = lambda r: (((_f(r, 2, 4, 4), _f(r, 2, 4, 4)),), {})
    S["ifft2"] = S["fft2"]
    S["rfft"] = lambda r: ((_f(r, 2, 8),), {})
    S["irfft"] = lambda r: (((_f(r, 2, 5), _f(r, 2, 5)),), {})
    S["stft"] = lambda r: ((_f(r, 2, 32), 8, 4, 8), {})
    S["istft"] = lambda r: (((_f(r, 2, 9, 5), _f(r, 2, 9, 5)), 8, 4, 8), {})
    S["view_as_complex"] = lambda r: ((_f(r, 3, 2),), {})
    S["view_as_real"] = lambda r: (((_f(r, 3) + 1j * _f(r, 3)).astype(np.complex64),), {})

    def log1pexp(ops, x):  # Keras's documented example
        e = ops.exp(x)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.multiply(upstream, 1.0 - 1.0 / ops.add(1.0, e))
        return ops.log(1.0 + e), grad
    S["custom_gradient"] = lambda r: ((log1pexp,), {"_then": (_f(r, 4),)})
    # a few common numpy / nn shapes
    S["reshape"] = lambda r: ((_f(r, 2, 6), (3, 4)), {})
    S["broadcast_to"] = lambda r: ((_f(r, 1, 3), (2, 3)), {})
    S["expand_dims"] = lambda r: ((_f(r, 2, 3), 1), {})
    S["moveaxis"] = lambda r: ((_f(r, 2, 3, 4), 0, 2), {})
    S["swapaxes"] = lambda r: ((_f(r, 2, 3, 4), 0, 2), {})
    S["repeat"] = lambda r: ((_f(r, 2, 3), 2), {})
    S["tile"] = lambda r: ((_f(r, 2, 3), (2, 1)), {})
    S["roll"] = lambda r: ((_f(r, 2, 5), 2), {})
    S["take"] = lambda r: ((_f(r, 4, 3), np.array([0, 2, 2])), {"axis": 0})
    S["take_along_axis"] = lambda r: ((_f(r, 3, 4), np.array([[0], [3], [1]])), {"axis": 1})
    S["one_hot"] = lambda r: ((np.array([0, 2, 1]), 4), {})
    S["pad"] = lambda r: ((_f(r, 2, 3), ((1, 0), (0, 2))), {})
    S["clip"] = lambda r: ((_f(r, 2, 3), 0.7, 1.2), {})
    S["full"] = lambda r: (((2, 3), 1.5), {})
    S["full_like"] = lambda r: ((_f(r, 2, 3), 1.5), {})
    for n in ("ones", "zeros", "empty"):
        S["numpy." + n] = S["ops." + n] = lambda r: (((2, 3),), {})
    S["arange"] = lambda r: ((1, 7), {})
    S["linspace"] = lambda r: ((0.0, 1.0), {"num": 5})
    S["eye"] = S["tri"] = lambda r: ((3,), {})
    S["identity"] = lambda r: ((3,), {})
    S["einsum"] = lambda r: (("ij,jk->ik", _f(r, 2, 3), _f(r, 3, 4)), {})
    S["matmul"] = lambda r: ((_f(r, 2, 3), _f(r, 3, 4)), {})
    S["dot"] = S["matmul"]
    S["tensordot"] = lambda r: ((_f(r, 2, 3), _f(r, 3, 4)), {"axes": 1})
    S["where"] = lambda r: ((_f(r, 2, 3) > 1.0, _f(r, 2, 3), _f(r, 2, 3)), {})
    S["concatenate"] = lambda r: (([_f(r, 2, 3), _f(r, 1, 3)],), {})
    for n in ("stack", "hstack", "vstack", "dstack"):
        S[n] = lambda r: (([_f(r, 2, 3), _f(r, 2, 3)],), {})
    for n in ("split", "array_split", "hsplit", "vsplit", "dsplit"):
        S[n] = lambda r: ((_f(r, 4, 4, 2), 2), {})
    S["quantile"] = S["nanquantile"] = lambda r: ((_f(r, 2, 5), 0.3), {})
    S["percentile"] = S["nanpercentile"] = lambda r: ((_f(r, 2, 5), 30.0), {})
    S["searchsorted"] = lambda r: ((np.sort(_f(r, 6)), _f(r, 3)), {})
    S["digitize"] = lambda r: ((_f(r, 5), np.array([0.7, 1.0, 1.3], np.float32)), {})
    S["argpartition"] = lambda r: ((_f(r, 6), 2), {})
    S["diff"] = lambda r: ((_f(r, 2, 5),), {})
    S["select"] = lambda r: (([_f(r, 4) > 1.0, _f(r, 4) > 0.8], [_f(r, 4), _f(r, 4)]), {})
    S["rot90"] = lambda r: ((_f(r, 3, 4),), {})
    S["polar"] = lambda r: ((_f(r, 3), _f(r, 3)), {})
    S["threshold"] = lambda r: ((_f(r, 2, 3), 1.0, 0.0), {})
    S["moments"] = lambda r: ((_f(r, 2, 3), [0]), {})
    S["batch_normalization"] = lambda r: ((_f(r, 2, 3), _f(r, 3), _f(r, 3), -1), {})
    S["depth_to_space"] = lambda r: ((_f(r, 1, 2, 2, 8), 2), {})
    S["space_to_depth"] = lambda r: ((_f(r, 1, 4, 4, 2), 2), {})
    S["binary_crossentropy"] = lambda r: ((_f(r, 2, 3, lo=0, hi=1), _f(r, 2, 3, lo=0.1, hi=0.9)), {})
    S["categorical_crossentropy"] = lambda r: ((np.eye(3, dtype=np.float32)[[0, 2]], _f(r, 2, 3, lo=0.1, hi=0.9)), {})
    S["sparse_categorical_crossentropy"] = lambda r: ((np.array([0, 2]), _f(r, 2, 3, lo=0.1, hi=0.9)), {})
    S["max_pool"] = S["average_pool"] = lambda r: ((_f(r, 1, 4, 4, 2), 2), {})
    S["conv"] = lambda r: ((_f(r, 1, 5, 5, 2), _f(r, 3, 3, 2, 4)), {})
    S["depthwise_conv"] = lambda r: ((_f(r, 1, 5, 5, 2), _f(r, 3, 3, 2, 1)), {})
    S["separable_conv"] = lambda r: ((_f(r, 1, 5, 5, 2), _f(r, 3, 3, 2, 1), _f(r, 1, 1, 2, 4)), {})
    S["conv_transpose"] = lambda r: ((_f(r, 1, 4, 4, 2), _f(r, 3, 3, 4, 2)), {})
    S["dot_product_attention"] = lambda r: ((_f(r, 1, 4, 2, 8), _f(r, 1, 5, 2, 8), _f(r, 1, 5, 2, 8)), {})
    for n in ("solve", "lstsq", "solve_triangular"):
        S["linalg." + n] = S["ops." + n] = lambda r: ((_spd(r), _f(r, 3, 2)), {})
    S["image.resize"] = lambda r: ((_f(r, 1, 6, 6, 3), (4, 4)), {})
    S["image.extract_patches"] = lambda r: ((_f(r, 1, 6, 6, 3), 2), {})
    S["image.crop_images"] = lambda r: ((_f(r, 1, 6, 6, 3),), {"top_cropping": 1, "left_cropping": 1,
                                                                 "target_height": 3, "target_width": 3})
    S["image.pad_images"] = lambda r: ((_f(r, 1, 4, 4, 3),), {"top_padding": 1, "left_padding": 1,
                                                               "target_height": 6, "target_width": 6})
    for n in ("bartlett", "blackman", "hamming", "hanning"):
        S[n] = lambda r: ((6,), {})
    S["bincount"] = lambda r: ((np.array([0, 1, 1, 3, 1]),), {})
    S["cholesky_inverse"] = lambda r: ((np.linalg.cholesky(_spd(r)).astype(np.float32),), {})
    S["get_item"] = lambda r: ((_f(r, 3, 4), 1), {})
    S["glu"] = lambda r: ((_f(r, 2, 4),), {})
    S["histogram"] = S["vander"] = lambda r: ((_f(r, 6),), {})
    S["imag"] = S["real"] = S["conj"] = S["conjugate"] = S["angle"] = \
        lambda r: (((_f(r, 3) + 1j * _f(r, 3)).astype(np.complex64),), {})
    S["ldexp"] = lambda r: ((_f(r, 3), np.array([1, 2, 3], np.int32)), {})
    S["meshgrid"] = lambda r: ((_f(r, 3), _f(r, 2)), {})
    S["multi_hot"] = lambda r: ((np.array([[0, 2], [1, 3]]),), {"num_classes": 4})
    S["vdot"] = lambda r: ((_f(r, 3), _f(r, 3)), {})
    S["arccos"] = S["arcsin"] = S["arctanh"] = lambda r: ((_f(r, 2, 3, lo=-0.9, hi=0.9),), {})
    S["arccosh"] = lambda r: ((_f(r, 2, 3, lo=1.1, hi=3.0),), {})
    S["correlate"] = S["convolve"] = lambda r: ((_f(r, 6), _f(r, 3)), {})
    S["adaptive_average_pool"] = S["adaptive_max_pool"] = lambda r: ((_f(r, 1, 6, 6, 2), (3, 3)), {})
    S["unfold"] = lambda r: ((_f(r, 1, 2, 5, 5), 3), {})
    S["fold"] = lambda r: ((_f(r, 1, 18, 9), (5, 5), 3), {})
    S["geomspace"] = S["logspace"] = lambda r: ((1.0, 3.0), {"num": 5})
    S["kaiser"] = lambda r: ((6, 2.0), {})
    S["psnr"] = lambda r: ((_f(r, 2, 4, 4, 1, lo=0, hi=1), _f(r, 2, 4, 4, 1, lo=0, hi=1), 1.0), {})
    S["unravel_index"] = lambda r: ((np.array([1, 5, 7]), (2, 4)), {})
    S["vectorize"] = lambda r: ((lambda ops, a, b: a * b + 1.0,), {"_then": (_f(r, 3), _f(r, 3))})
    S["jvp"] = lambda r: ((lambda ops, x: ops.exp(x) * x, (_f(r, 3),), (_f(r, 3),)), {})
    S["ctc_loss"] = lambda r: ((np.array([[1, 2, 0], [2, 2, 1]]), _f(r, 2, 6, 4), np.array([2, 3]), np.array([6, 5])), {})
    S["ctc_decode"] = lambda r: ((_f(r, 2, 6, 4), np.array([6, 4])), {})
    S["image.affine_transform"] = lambda r: ((_f(r, 1, 6, 6, 3), np.array([[1.1, 0.1, -0.5, 0.05, 0.9, 0.3, 0, 0]],
                                                                              np.float32)), {})
    S["image.extract_patches_3d"] = lambda r: ((_f(r, 1, 4, 4, 4, 2), 2), {})
    S["image.map_coordinates"] = lambda r: ((_f(r, 5, 5), r.uniform(0, 4, (2, 3, 3)).astype(np.float32), 1), {})
    S["image.perspective_transform"] = lambda r: ((_f(r, 1, 6, 6, 3), np.array([[[0, 0], [5, 0], [0, 5], [5, 5]]], np.float32),
                                                   np.array([[[0, 1], [5, 0], [1, 5], [4, 4]]], np.float32)), {})
    S["image.scale_and_translate"] = lambda r: ((_f(r, 1, 6, 6, 3), (1, 9, 9, 3), np.array([1.5, 1.5], np.float32),
                                                 np.array([0.0, 0.0], np.float32), (1, 2), "bilinear"), {})
    S["image.ssim"] = lambda r: ((_f(r, 1, 16, 16, 1, lo=0, hi=1), _f(r, 1, 16, 16, 1, lo=0, hi=1)), {"filter_size": 5})
    return S


def _guess(ns, name, sig_params, rng):
    """(args, kwargs) from the parameter names, or None when a required one cannot be guessed."""
    args = []
    for pname, default_missing in sig_params:
        if not default_missing:
            break
        if name in INT_FUNCTIONS and pname in FLOAT_NAMES:
            args.append(rng.integers(1, 9, (2, 3)).astype(np.int32))
        elif (ns == "linalg" or name in _SQUARE) and pname in ("x", "a"):
            args.append(_spd(rng))
        elif pname == "images":
            args.append(_f(rng, 1, 6, 6, 3, lo=0.0, hi=1.0))
        elif pname in FLOAT_NAMES:
            args.append(_f(rng, 2, 3))
        elif pname == "xs":
            args.append([_f(rng, 2, 3), _f(rng, 2, 3)])
        elif pname == "condition":
            args.append(_f(rng, 2, 3) > 1.0)
        else:
            return None
    return tuple(args), {}


def _required(sig):
    import ast
    fn = ast.parse(f"def f{sig}: pass").body[0].args
    pos = fn.posonlyargs + fn.args
    n_req = len(pos) - len(fn.defaults)
    return [(a.arg, i < n_req) for i, a in enumerate(pos)]


def _wrap_callables(value, ops):
    """Sample callables take the ops module first: bind it."""
    if callable(value) and not isinstance(value, np.ndarray):
        return lambda *a, _f=value: _f(ops, *a)
    if isinstance(value, list) and value and all(callable(v) for v in value):
        return [_wrap_callables(v, ops) for v in value]
    return value


def _to(lib, value, grad):
    """NumPy inputs -> lamina Tensors or torch tensors (float ones requiring grad); nested too."""
    if isinstance(value, np.ndarray):
        want = grad and value.dtype.kind == "f"
        if lib == "lamina":
            import lamina
            return lamina.Tensor(value, requires_grad=want)
        import torch
        return torch.tensor(value, requires_grad=want)
    if isinstance(value, tuple):
        return tuple(_to(lib, v, grad) for v in value)
    if isinstance(value, list):
        return [_to(lib, v, grad) for v in value]
    return value


def _leaves_of(x):
    if isinstance(x, (tuple, list)):
        return [leaf for v in x for leaf in _leaves_of(v)]
    if isinstance(x, dict):
        return [leaf for k in sorted(x) for leaf in _leaves_of(x[k])]
    return [x]


def _np(x):
    import torch
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.numpy() if str(x.dtype) != "torch.bfloat16" else x.float().numpy()
    if hasattr(x, "numpy"):
        return x.numpy()
    return np.asarray(x)


def _call(lib, fn, args, kwargs, ops, grad):
    args = [_wrap_callables(a, ops) for a in args]
    fn_args = kwargs.pop("_fn_args", None)
    then = kwargs.pop("_then", None)
    if then is not None:  # a decorator: decorate, then call the result
        extra = [_to(lib, a, grad) for a in then]
        return fn(*args, **kwargs)(*extra), extra
    inputs = [_to(lib, a, grad) for a in args]
    kw = {k: _to(lib, v, grad) for k, v in kwargs.items()}
    if fn_args is not None:  # cond: branches take arguments through a closure
        extra = [_to(lib, a, grad) for a in fn_args]
        inputs = [inputs[0], (lambda f: lambda: f(*extra))(inputs[1]), (lambda f: lambda: f(*extra))(inputs[2])]
        return fn(*inputs, **kw), extra
    return fn(*inputs, **kw), [v for v in _leaves_of(inputs) + _leaves_of(list(kw.values()))]


def compare_one(ns, name, sig, lamina_mod, keras_mod, samples, rtol=1e-4, atol=1e-5):
    """(status, detail) for one function."""
    import lamina
    import torch
    from keras import ops as kops
    if not hasattr(lamina_mod, name):
        return "missing", ""
    rng = np.random.default_rng(0)
    maker = samples.get(f"{ns}.{name}") or samples.get(name)
    sample = maker(rng) if maker else _guess(ns, name, _required(sig), rng)
    if sample is None:
        return "no sample", ""
    args, kwargs = sample
    try:
        k_out, k_in = _call("torch", getattr(keras_mod, name), args, dict(kwargs), kops, grad=True)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        try:
            k_out, k_in = _call("torch", getattr(keras_mod, name), args, dict(kwargs), kops, grad=False)
        except Exception:
            return "keras error", f"{type(e).__name__}: {str(e)[:80]}"
    try:
        l_out, l_in = _call("lamina", getattr(lamina_mod, name), args, dict(kwargs), lamina.ops, grad=True)
    except Exception as e:  # noqa: BLE001
        return "lamina error", f"{type(e).__name__}: {str(e)[:100]}"
    kl, ll = _leaves_of(k_out), _leaves_of(l_out)
    if len(kl) != len(ll):
        return "differs", f"{len(ll)} outputs, Keras {len(kl)}"
    if name in FIRST_ONLY:
        kl, ll = kl[:1], ll[:1]
    for a, b in zip(ll, kl):
        a, b = _np(a), _np(b)
        if a.shape != b.shape:
            return "shape", f"{a.shape} vs Keras {b.shape}"
        if a.dtype != b.dtype:
            return "dtype", f"{a.dtype} vs Keras {b.dtype}"
        if name in SHAPE_ONLY:
            continue
        if a.dtype.kind in "fc":
            if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                return "differs", f"max |diff| {np.nanmax(np.abs(a.astype(np.complex128) - b)):.3g}"
        elif not np.array_equal(a, b):
            return "differs", "integer/bool values"
    # gradients of sum_i <w_i, out_i> over the float outputs
    pairs = [(a, b) for a, b in zip(ll, kl) if isinstance(a, lamina.Tensor) and a.dtype.kind == "f"
             and isinstance(b, torch.Tensor) and b.is_floating_point()]
    if name in SHAPE_ONLY:
        return "equal", f"shapes and dtypes ({SHAPE_ONLY[name]})"
    if not pairs or not any(getattr(b, "requires_grad", False) for _, b in pairs):
        return "equal", "values" + (f" (first output: {FIRST_ONLY[name]})" if name in FIRST_ONLY else "")
    if name in FIRST_ONLY:
        return "equal", f"values of the first output ({FIRST_ONLY[name]})"
    ws = [rng.standard_normal(tuple(b.shape)) for _, b in pairs]
    try:
        ksum = sum((b * torch.tensor(w, dtype=b.dtype)).sum() for (_, b), w in zip(pairs, ws) if b.requires_grad)
        ksum.backward()
    except Exception as e:  # noqa: BLE001
        return "equal", f"values (Keras gradient failed: {type(e).__name__})"
    lts = [(a, w) for (a, _), w in zip(pairs, ws) if a.requires_grad]
    if not lts:
        k_grads = [b.grad for b in k_in if isinstance(b, torch.Tensor) and b.requires_grad and b.grad is not None]
        if all(not bool(torch.any(g != 0)) for g in k_grads):
            return "equal", "values (Keras's gradient is zero, lamina records none)"
        return "grad differs", "lamina records no gradient, Keras does"
    try:
        lsum = sum((a * lamina.Tensor(w.astype(a.dtype))).sum() for a, w in lts)
        lsum.backward()
    except Exception as e:  # noqa: BLE001
        return "grad differs", f"lamina backward failed: {type(e).__name__}: {str(e)[:80]}"
    for a, b in zip(l_in, k_in):
        if isinstance(a, lamina.Tensor) and isinstance(b, torch.Tensor) and b.requires_grad:
            kg = np.zeros(tuple(b.shape)) if b.grad is None else b.grad.numpy()
            lg = np.zeros(a.shape) if a.grad is None else np.asarray(a.grad)
            if not np.allclose(lg, kg, rtol=rtol * 10, atol=atol * 10, equal_nan=True):
                return "grad differs", f"max |diff| {np.abs(lg - kg).max():.3g}"
    return "equal", "values and gradients"


def run(namespaces=NAMESPACES, only=None, failures_only=False, out=sys.stdout):
    import keras  # noqa: F401
    from keras import ops as kops

    import lamina.ops as lops
    data = json.loads(SIGNATURES.read_text())
    samples = _samples()
    k_ns = {"ops": kops, "nn": kops.nn, "numpy": kops.numpy, "linalg": kops.linalg, "image": kops.image}
    l_ns = {"ops": lops, "nn": getattr(lops, "nn", None), "numpy": getattr(lops, "numpy", None),
            "linalg": getattr(lops, "linalg", None), "image": getattr(lops, "image", None)}
    summary = {}
    rows = []
    for ns in namespaces:
        counts = {}
        for name in sorted(data[ns]):
            if only and name not in only:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    status, detail = compare_one(ns, name, data[ns][name], l_ns[ns], k_ns[ns], samples)
                except Exception as e:  # noqa: BLE001 - the run goes on
                    status, detail = "tool error", f"{type(e).__name__}: {str(e)[:80]}"
            counts[status] = counts.get(status, 0) + 1
            rows.append((ns, name, status, detail))
        summary[ns] = counts
    width = max((len(f"{ns}.{n}") for ns, n, _, _ in rows), default=10)
    print(f"{'function':<{width}}  {'status':<13} detail", file=out)
    for ns, name, status, detail in rows:
        if failures_only and status == "equal":
            continue
        print(f"{ns + '.' + name:<{width}}  {status:<13} {detail}", file=out)
    print("", file=out)
    total_equal = total = 0
    for ns, counts in summary.items():
        n = sum(counts.values())
        eq = counts.get("equal", 0)
        total_equal, total = total_equal + eq, total + n
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{ns:<7} {eq}/{n} equal ({100.0 * eq / max(n, 1):.1f}%): {parts}", file=out)
    print(f"all     {total_equal}/{total} equal ({100.0 * total_equal / max(total, 1):.1f}%)", file=out)
    return rows, summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ns", default=",".join(NAMESPACES), help="namespaces, comma-separated")
    p.add_argument("--only", default="", help="function names, comma-separated")
    p.add_argument("--failures", action="store_true", help="list only the functions that are not equal")
    a = p.parse_args(argv)
    run([n for n in a.ns.split(",") if n], only=set(filter(None, a.only.split(","))) or None,
        failures_only=a.failures)


if __name__ == "__main__":
    main()

"""The ``lamina`` command: train ready-made models, evaluate, predict with and inspect model files.

    lamina train                      # the default CNN on the bundled digits, into ./runs/cnn
    lamina train --model mlp --epochs 20 --batch-size 64 --out runs/mlp --seed 1
    lamina evaluate runs/cnn/model.lamina
    lamina predict runs/cnn/model.lamina images.npy --output probabilities.npy
    lamina summary runs/cnn/model.lamina
    lamina export runs/cnn/model.lamina --format onnx
    lamina models
    lamina train mlp --workers 2      # data-parallel over 2 MPI ranks (pip install 'lamina[mpi]')
    mpirun -n 2 lamina train mlp      # the same, started by your own mpirun

Exit status: 0 on success, 2 for a usage error (from argparse), 1 for any other problem (a missing or
corrupt file, a failed download, input of the wrong shape), reported on one line without a traceback.
"""
import argparse
import json
import os
import sys
import time

__all__ = ["main"]

MODEL_FILE, RUN_FILE, HISTORY_FILE, PLOT_FILE = "model.lamina", "run.json", "history.json", "history.png"


_ARGV = None  # the arguments main() was given (lamina train --workers re-runs them under mpirun)


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _score(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a score from 0 to 1, got {text!r}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or value >= 2 ** 32:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**32 - 1, got {text!r}")
    return value


def _say(*args):
    print(*args, flush=True)


# ------------------------------------------------------------------------------------------ train
def _plot(history, path):
    """Loss and accuracy curves as a PNG; returns False when matplotlib is not installed."""
    try:
        from .plotting import plot_history
        plot_history(history, path, keys=["loss", "accuracy"], val_label="test")
    except ImportError:
        return False
    return True


def _write_json(path, obj):
    from .io import atomic_write
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def _launch_workers(n):
    """Run this same command under mpirun -n N (the ranks see they were launched and train together)."""
    import subprocess
    from .distribution import launcher
    try:
        cmd = launcher.mpirun_command(n)
    except RuntimeError as e:
        raise UserError(str(e)) from None
    argv = sys.argv[1:] if _ARGV is None else list(_ARGV)
    # Open MPI's run-as-root opt-in goes only into the children's environment
    return subprocess.call(cmd + [sys.executable, "-m", "lamina"] + argv, env=launcher.child_environment())


def _join_workers(args):
    """Under mpirun/srun: join the world and train data-parallel. Returns the number of ranks."""
    from . import distribution
    from .distribution import _runtime
    if not _runtime.launched_by_mpi():
        return 1
    try:
        distribution.initialize()
    except ImportError as e:
        raise UserError(str(e)) from None
    if args.workers and args.workers != distribution.process_count():
        raise UserError(f"--workers {args.workers} but mpirun started {distribution.process_count()} ranks")
    distribution.set_distribution(distribution.DataParallel())
    return distribution.process_count()


def cmd_train(args):
    import numpy as np
    from . import backend
    from .zoo import catalog
    from .distribution import _runtime
    if args.workers and args.workers > 1 and not _runtime.launched_by_mpi():
        return _launch_workers(args.workers)
    workers = _join_workers(args)
    chief = _runtime.is_chief()
    if args.name and args.model and args.name != args.model:
        sys.stderr.write(f"lamina train: error: two models given: {args.name!r} and --model {args.model!r}\n")
        return 2
    args.model = args.name or args.model or catalog.DEFAULT
    recipe = catalog.get(args.model)
    if getattr(recipe, "train", None) is not None:  # recipes with their own data and loop (e.g. translation)
        if workers > 1:
            raise UserError(f"'{recipe.name}' has its own training loop: --workers is not supported for it")
        # a recipe's verbose: 1 prints results only, 2 adds one line per epoch
        recipe.train(epochs=args.epochs, batch_size=args.batch_size, out=args.out, seed=args.seed,
                     verbose=1 if args.quiet else 2, plot=not args.no_plot)
        return 0
    epochs = args.epochs or recipe.epochs
    batch_size = args.batch_size or recipe.batch_size
    out = args.out or os.path.join("runs", recipe.name)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the output folder {out}: {e.strerror or e}") from e
    backend.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = catalog.load_dataset(recipe.dataset)
    model = recipe.compile(recipe.build(input_shape=x_train.shape[1:], num_classes=int(y_train.max()) + 1))
    if chief:
        _say(f"Training '{recipe.name}' ({recipe.description}) on {recipe.dataset}: {len(x_train)} training and "
             f"{len(x_test)} test samples, {epochs} epochs, batch size {batch_size}, seed {args.seed}"
             + (f", data-parallel on {workers} ranks." if workers > 1 else "."))
    verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=verbose,
                        validation_data=(x_test, y_test)).history
    seconds = time.perf_counter() - start
    if len(history.get("val_loss", ())) == epochs:
        # the last epoch's validation was the test split through the final weights: no second pass over it
        loss, accuracy = history["val_loss"][-1], history["val_accuracy"][-1]
    else:  # training stopped early (a non-finite loss): measure the weights it left
        loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    if not chief:
        return 0  # data-parallel: rank 0 reports and writes the files
    _say(f"Test accuracy: {accuracy:.4f} (loss {loss:.4f}) after {seconds:.1f} s of training.")
    model_path = os.path.join(out, MODEL_FILE)
    model.save(model_path)
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    _write_json(os.path.join(out, HISTORY_FILE), history)
    from . import __version__
    _write_json(os.path.join(out, RUN_FILE), {
        "model": recipe.name, "dataset": recipe.dataset, "epochs": epochs, "batch_size": batch_size,
        "seed": args.seed, "test_accuracy": float(accuracy), "test_loss": float(loss),
        "train_seconds": round(seconds, 2), "lamina_version": __version__, "workers": workers,
        "params": int(sum(int(np.prod(w.shape)) for w in model.weights))})
    _say(f"Saved {model_path}")
    plot_path = os.path.join(out, PLOT_FILE)
    if not args.no_plot:
        if not history.get("loss"):   # stopped in its first epoch (a non-finite loss): no curve to draw
            _say("(No epoch finished: no training curves to draw.)")
        elif _plot(history, plot_path):
            _say(f"Saved {plot_path}")
        else:
            _say("(Install matplotlib, e.g. pip install 'lamina[plot]', for a PNG of the training curves.)")
    return 0


# ------------------------------------------------------------------------- model file commands
def _latest_run(name):
    """The newest model file that `lamina train NAME` wrote under ./runs (run.json names the model), or None."""
    candidates = []
    root = "runs"
    if os.path.isdir(root):
        for entry in os.scandir(root):
            model_path = os.path.join(entry.path, MODEL_FILE)
            if entry.is_dir() and os.path.isfile(model_path) and _run_info(model_path).get("model") == name:
                candidates.append((os.path.getmtime(model_path), model_path))
    return max(candidates)[1] if candidates else None


def _resolve_model_file(given):
    """A model file path, or a catalog name standing for the latest run of that model under ./runs."""
    if os.path.exists(given):
        return given
    from .zoo import catalog
    if given in catalog.RECIPES:
        found = _latest_run(given)
        if found is None:
            raise UserError(f"{given!r} is a catalog model but no trained run of it was found under ./runs; "
                            f"train one with 'lamina train {given}', or give a model file path")
        print(f"Using {found} (the latest run of '{given}').", file=sys.stderr, flush=True)
        return found
    raise UserError(f"{given}: no such file (give a model file, e.g. runs/cnn/{MODEL_FILE}, or a catalog name "
                    f"from 'lamina models' after training it)")


def _load(path, compile=True):
    from .models import load_model
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file")
    return load_model(path, compile=compile)


def _run_info(model_path):
    """The run.json written beside a model file by `lamina train`, as a dict ({} if absent or unreadable)."""
    run = os.path.join(os.path.dirname(os.path.abspath(model_path)), RUN_FILE)
    try:
        with open(run, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _dataset_of(model_path, given):
    """The data set a model was trained on: --data, else the run.json written beside it by `lamina train`."""
    from .zoo import catalog
    if given:
        return given
    name = _run_info(model_path).get("dataset")
    return name if name in catalog.DATASETS else None


def cmd_evaluate(args):
    from .zoo import catalog
    args.model_file = _resolve_model_file(args.model_file)
    recipe = _run_info(args.model_file).get("model")
    if recipe in catalog.RECIPES and getattr(catalog.RECIPES[recipe], "train", None) is not None and not args.data:
        raise UserError(f"{args.model_file} comes from the '{recipe}' recipe, which measures itself with its own "
                        f"metrics: see {RUN_FILE} beside it (or pass --data NAME to evaluate it as a classifier)")
    dataset = _dataset_of(args.model_file, args.data)
    if dataset is None:
        raise UserError(f"cannot tell which data set {args.model_file} was trained on (no {RUN_FILE} beside it); "
                        f"pass --data NAME ({', '.join(catalog.DATASETS)})")
    model = _load(args.model_file)
    if not getattr(model, "compiled", False):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, (x_test, y_test) = catalog.load_dataset(dataset)
    try:
        logs = model.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0, return_dict=True)
    except ValueError as e:
        raise UserError(f"{args.model_file} does not fit the {dataset} data: {e}") from e
    parts = [f"{k} {v:.4f}" for k, v in logs.items()]
    _say(f"{args.model_file} on the {dataset} test set ({len(x_test)} samples): " + ", ".join(parts))
    return 0


def _check_output_path(path):
    """Refuse an --output that cannot be written before any work is done."""
    if os.path.isdir(path):
        raise UserError(f"--output {path}: is a folder; give a file name such as {os.path.join(path, 'out.npy')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"--output {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"--output {path}: the folder {folder} is not writable")


def _load_npy(path):
    """An .npy file as an array of numbers, read without pickle; its header is checked before any allocation."""
    import numpy as np
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a regular file")
    size = os.path.getsize(path)
    from .io.limits import open_regular
    try:
        with open_regular(path, ".npy file") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f, max_header_size=10000)
            header_end = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise UserError(f"{path}: not a NumPy .npy array file ({' '.join(str(e).split())})") from e
    if dtype.hasobject or dtype.kind not in "biuf":
        raise UserError(f"{path}: expected an array of numbers, got dtype {dtype}")
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if needed != size - header_end:
        raise UserError(f"{path}: its header declares shape {tuple(shape)} of {dtype} ({needed:,} bytes) but the "
                        f"file holds {size - header_end:,} bytes of data (truncated or corrupt)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a NumPy .npy array file of numbers ({e})") from e


def cmd_predict(args):
    import numpy as np
    from .zoo import catalog
    args.model_file = _resolve_model_file(args.model_file)
    if args.output:
        _check_output_path(args.output)
    boxes = args.boxes or _run_info(args.model_file).get("model") == "detection"
    draw = args.draw or (os.path.splitext(args.input)[0] + ".boxes.png" if boxes else None)
    if draw:
        _check_output_path(draw)
    model = _load(args.model_file, compile=False)
    if args.input.lower().endswith(IMAGE_EXTENSIONS):
        x = _load_image(args.input, getattr(model, "input_shape", None))
    else:
        x = _load_npy(args.input)
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        raise UserError(f"{args.input}: expected an array of numbers, got {getattr(x, 'dtype', type(x))}")
    dataset = _dataset_of(args.model_file, args.data)
    if x.dtype.kind in "biu" and dataset is not None:
        x = catalog.preprocess(dataset, x)       # raw images as the data set loader returns them
    x = x.astype("float32", copy=False)
    expected = getattr(model, "input_shape", None)
    if isinstance(expected, tuple) and expected:
        if x.ndim == len(expected) - 1 and expected[-1] == 1 and x.shape[1:] == tuple(expected[1:-1]):
            x = x[..., None]                     # grey images without their channel axis
        if x.ndim == len(expected) - 1 and x.shape == tuple(expected[1:]):
            x = x[None]                          # one sample without its batch axis
        if len(expected) != x.ndim or any(e is not None and e != g for e, g in zip(expected[1:], x.shape[1:])):
            raise UserError(f"{args.input} holds an array of shape {x.shape}, but the model expects "
                            f"{tuple(expected)} (None = any size)")
    try:
        y = model.predict(x, batch_size=args.batch_size, verbose=0)
    except ValueError as e:
        raise UserError(f"{args.input} does not fit the model: {e}") from e
    y = np.asarray(y)
    if args.output:
        from .io import atomic_write
        atomic_write(args.output, lambda f: np.save(f, y, allow_pickle=False))
    if boxes:
        return _report_detections(x, y, args, draw)
    if y.ndim == 2 and y.shape[1] > 1:
        classes = y.argmax(axis=1)
        for i in range(min(len(y), args.show)):
            _say(f"{i}: class {int(classes[i])} (p={float(y[i, classes[i]]):.3f})")
        if len(y) > args.show:
            _say(f"... {len(y) - args.show} more")
    else:
        with np.printoptions(precision=4, threshold=50):
            _say(y[:args.show])
    _say(f"Predicted {len(y)} sample(s); output shape {y.shape}"
         + (f", saved to {args.output}" if args.output else "") + ".")
    return 0


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _load_image(path, input_shape):
    """One image file as a (1, H, W, C) float array in [0, 1], resized and converted to the model's input."""
    from .utils import image_utils
    size = channels = None
    if isinstance(input_shape, tuple) and len(input_shape) == 4:
        size = tuple(input_shape[1:3]) if None not in input_shape[1:3] else None
        channels = input_shape[3]
    mode = {1: "grayscale", 4: "rgba"}.get(channels, "rgb")
    try:
        img = image_utils.load_img(path, color_mode=mode, target_size=size, interpolation="bilinear")
    except ImportError as e:
        raise UserError(f"reading image files needs Pillow: pip install 'lamina[image]' ({e})") from None
    except Exception as e:  # a hostile or broken file: Pillow's own error, in one line
        raise UserError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return (image_utils.img_to_array(img, dtype="float32") / 255.0)[None]


def _report_detections(x, y, args, draw):
    """The detection grid decoded into boxes: printed per image, and drawn over the images into a PNG."""
    from .zoo import detection
    if y.ndim != 4 or y.shape[-1] != detection.CHANNELS:
        raise UserError(f"--boxes: the model's output {y.shape} is not a detection grid (N, rows, cols, "
                        f"{detection.CHANNELS})")
    found = detection.decode_predictions(y, args.score_threshold)
    for i, dets in enumerate(found[:args.show]):
        listed = ", ".join(f"{detection.class_name(c)} {s:.2f} at [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]"
                           for c, s, x1, y1, x2, y2 in dets)
        _say(f"{i}: {len(dets)} object(s)" + (f": {listed}" if dets else ""))
    if len(found) > args.show:
        _say(f"... {len(found) - args.show} more")
    shown = min(len(x), 16)
    if detection.draw_detections(x[:shown], found[:shown], draw):
        _say(f"Drew the boxes of {shown} image(s) into {draw}")
    else:
        _say("No picture: matplotlib is not installed (pip install 'lamina[plot]').")
    _say(f"Detected {sum(len(d) for d in found)} object(s) in {len(found)} image(s) (score >= {args.score_threshold})"
         + (f"; raw grid saved to {args.output}" if args.output else "") + ".")
    return 0


def cmd_summary(args):
    model = _load(_resolve_model_file(args.model_file), compile=False)
    model.summary()
    return 0


def cmd_export(args):
    model_file = _resolve_model_file(args.model_file)
    output = args.output or os.path.splitext(model_file)[0] + "." + args.format
    _check_output_path(output)
    model = _load(model_file, compile=False)
    try:
        model.export(output, format=args.format, verbose=False)
    except ImportError as e:
        raise UserError(str(e)) from None
    except NotImplementedError as e:
        raise UserError(f"{model_file}: {e}") from None
    _say(f"Exported {model_file} to {output} ({args.format}).")
    return 0


def cmd_kernels(args):
    """Build the compiled kernels ahead of time for this machine, or say where they stand (ops/kernels_aot.py)."""
    import importlib.util
    from .ops import kernels, kernels_aot
    if args.status:
        paths = kernels_aot.module_paths()
        numba = importlib.util.find_spec("numba") is not None
        _say(f"kernel mode: {kernels.mode()} (LAMINA_KERNELS)")
        _say(f"numba: {'installed' if numba else 'not installed'}")
        if paths:
            _say("built for this machine:")
            for p in paths:
                _say(f"  {p}")
        else:
            _say("built for this machine: no" + (" (lamina kernels builds them)" if numba else ""))
            state, detail = kernels_aot.build_status()
            if state == "running":
                _say(f"an automatic build is running (process {detail})")
            elif state == "failed":
                _say(f"the automatic build failed ({detail}); lamina kernels shows the compiler's messages")
        return 0
    _say("building lamina's compiled kernels for this machine (numba and a C compiler; ~20 s)...")
    try:
        paths = kernels_aot.build()
    except ImportError as e:
        raise UserError(str(e)) from None
    except Exception as e:   # the C compiler missing or failing (distutils' and numba's own error types)
        raise UserError(f"building the kernels failed ({type(e).__name__}: {e}); it needs numba and a C compiler "
                        "(gcc or cc). Without them lamina runs numba's in-process compilation or NumPy's code"
                        ) from None
    for p in paths:
        _say(p)
    return 0


def cmd_models(args):
    from .zoo import catalog
    wn = max(len("name"), *(len(n) for n in catalog.RECIPES))
    wd = max(len("data set"), *(len(r.dataset) for r in catalog.RECIPES.values()))
    _say(f"{'name':<{wn}}  {'data set':<{wd}}  {'epochs':>6}  description")
    for r in catalog.RECIPES.values():
        mark = " (default)" if r.name == catalog.DEFAULT else ""
        _say(f"{r.name:<{wn}}  {r.dataset:<{wd}}  {r.epochs:>6}  {r.description}{mark}")
    _say("\nData sets:")
    described = {name: info[3] for name, info in catalog.DATASETS.items()}
    described.update((k, v) for k, v in catalog.OTHER_DATASETS.items() if k not in described)
    wk = max(len(k) for k in described)
    for name, description in described.items():
        _say(f"  {name:<{wk}}  {description}")
    return 0


# ------------------------------------------------------------------------------------------ parser
def _add_device_option(p):
    p.add_argument("--device", choices=("cpu", "cuda"), help="where to compute (default: $LAMINA_DEVICE or cpu; "
                   "cuda needs CuPy: pip install 'lamina[gpu]')")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="BLAS threads (default: $LAMINA_NUM_THREADS, else lamina times steps and picks the fastest)")


def build_parser():
    from . import __version__
    from .zoo import catalog
    parser = argparse.ArgumentParser(
        prog="lamina", description="lamina: train ready-made models, evaluate, predict with and inspect model "
                                   "files. Run 'lamina COMMAND --help' for each command.")
    parser.add_argument("--version", action="version", version=f"lamina {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="train a ready-made model (default: the CNN on the bundled digits)",
                       description="Train a model from the catalog ('lamina models' lists them), print its "
                                   "test accuracy and save model.lamina, run.json, history.json and (with "
                                   "matplotlib) history.png into --out.")
    p.add_argument("name", nargs="?", choices=list(catalog.RECIPES), metavar="NAME",
                   help="model to train, as 'lamina train NAME' (same as --model NAME)")
    p.add_argument("--model", choices=list(catalog.RECIPES), metavar="NAME",
                   help=f"model to train: {', '.join(catalog.RECIPES)} (default: {catalog.DEFAULT})")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=_positive_int, metavar="B", help="batch size (default: the recipe's)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: ./runs/NAME)")
    p.add_argument("--seed", type=_seed, default=0, metavar="S", help="random seed (default: 0)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    p.add_argument("--no-plot", action="store_true",
                   help="draw no pictures (history.png, a recipe's figures): matplotlib's import and drawing take "
                        "~0.7 s of CPU, more than a short run of a small model")
    p.add_argument("--workers", type=_positive_int, metavar="N",
                   help="train data-parallel on N MPI ranks: starts mpirun -n N (Open MPI from "
                        "pip install 'lamina[mpi]'); --batch-size stays the global batch")
    _add_device_option(p)
    p.set_defaults(func=cmd_train)

    data_help = f"data set ({', '.join(catalog.DATASETS)}); default: the one in run.json beside the model file"
    p = sub.add_parser("evaluate", help="loss and accuracy of a model file on its data set's test split",
                       description="Evaluate a model file on the test split of the data set it was trained on.")
    p.add_argument("model_file", metavar="MODEL", help="model file (from 'lamina train' or model.save), or a catalog "
                   "name for its latest run under ./runs")
    p.add_argument("--data", choices=list(catalog.DATASETS), metavar="NAME", help=data_help)
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="B")
    _add_device_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="run a model file on an array from a .npy file (or an image file)",
                       description="Predict with a model file on INPUT.npy. Integer arrays (raw images as the "
                                   "data set loaders return them) are scaled like the training data; float "
                                   "arrays are used as they are; an image file (.png, .jpg, ...) is read, "
                                   "resized to the model's input and scaled to [0, 1]. Prints the predicted "
                                   "class of each sample, or, for a detector, its boxes, and draws them.")
    p.add_argument("model_file", metavar="MODEL", help="model file, or a catalog name for its latest run under ./runs")
    p.add_argument("input", metavar="INPUT.npy", help="input array, samples on the first axis, or an image file")
    p.add_argument("--output", metavar="OUT.npy", help="save the model's outputs here")
    p.add_argument("--data", choices=list(catalog.DATASETS), metavar="NAME", help=data_help)
    p.add_argument("--batch-size", type=_positive_int, default=256, metavar="B")
    p.add_argument("--show", type=int, default=10, metavar="K", help="print at most K predictions (default 10)")
    p.add_argument("--boxes", action="store_true", help="decode the output as a detection grid and print boxes "
                   "(automatic for models from 'lamina train detection')")
    p.add_argument("--draw", metavar="OUT.png", help="with boxes: where to draw them over the images "
                   "(default: INPUT with .boxes.png)")
    p.add_argument("--score-threshold", type=_score, default=0.3, metavar="S",
                   help="with boxes: keep detections scoring at least S (default 0.3)")
    _add_device_option(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("summary", help="print the layers, output shapes and parameter counts of a model file",
                       description="Print the summary table of a model file.")
    p.add_argument("model_file", metavar="MODEL", help="model file, or a catalog name for its latest run under ./runs")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("export", help="write a model file as an ONNX inference graph",
                       description="Export a model file to ONNX (needs: pip install 'lamina[onnx]'). The batch axis "
                                   "is dynamic; inputs and outputs keep the model's names.")
    p.add_argument("model_file", metavar="MODEL", help="model file, or a catalog name for its latest run under ./runs")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    p.add_argument("--output", metavar="OUT", help="output file (default: MODEL with the format's extension)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("kernels", help="build the compiled kernels for this machine (pip install 'lamina[fast]')",
                       description="Compile lamina's kernels (LayerNorm, BatchNorm, bias + ReLU, the LSTM and GRU "
                                   "steps, Adam, attention's softmax, pooling, col2im, the embedding's gradient) "
                                   "ahead of time into extension modules for this machine's CPU, so that later "
                                   "processes load them in milliseconds without numba and LLVM (~125 MB less "
                                   "memory). Needs "
                                   "numba and a C compiler once; without a build, numba compiles them in each "
                                   "process that uses them.")
    p.add_argument("--status", action="store_true", help="say whether they are built, and where; build nothing")
    p.set_defaults(func=cmd_kernels)

    p = sub.add_parser("models", help="list the models 'lamina train' can train",
                       description="List the ready-made models and data sets.")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv=None):
    """Entry point of the ``lamina`` command. Returns the exit status."""
    global _ARGV
    _ARGV = None if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from .io import ModelFileError
    from .utils.data_utils import DownloadError
    try:
        if getattr(args, "threads", None):
            from . import threads
            threads.set_num_threads(args.threads)
        if getattr(args, "device", None):
            from . import backend
            try:
                backend.set_device(args.device)
            except RuntimeError as e:  # cuda without CuPy
                raise UserError(str(e)) from None
        return args.func(args)
    except KeyboardInterrupt:
        print("lamina: interrupted", file=sys.stderr)
        return 130
    except (UserError, ModelFileError, DownloadError, OSError, ValueError) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"lamina: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

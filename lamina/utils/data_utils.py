"""Array helpers with Keras's names (to_categorical, pad_sequences, split_dataset, normalize) and get_file,
the verified, cached, atomic downloader the data sets use.

Downloads use only the standard library (urllib): files land in a cache under ``$LAMINA_HOME`` (default
``~/.lamina``), are written to a ``.part`` file first (resumed with an HTTP Range request when the server
allows it, else restarted), checked against their SHA-256 and only then renamed into place. No pickle.
"""
import hashlib
import os
import time

import numpy as np

from .. import backend

__all__ = ["to_categorical", "pad_sequences", "split_dataset", "normalize", "get_file", "get_files", "lamina_home",
           "DownloadError"]


# ----------------------------------------------------------------------------------------- arrays
def to_categorical(x, num_classes=None):
    """One-hot encode integer class labels, as ``keras.utils.to_categorical``.

    Args:
        x: array-like of integer labels in [0, num_classes), any shape. A trailing axis of size 1 is dropped
            (labels shaped (n, 1) give (n, num_classes)).
        num_classes: number of classes; default ``max(x) + 1``.
    Returns: float32 array of shape ``x.shape + (num_classes,)``.

    >>> to_categorical([0, 2], 3).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    x = np.asarray(x)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        if not np.all(np.equal(np.mod(x, 1), 0)):
            raise ValueError(f"to_categorical: labels must be integers. Received dtype {x.dtype} with "
                             f"non-integer values such as {x[np.mod(x, 1) != 0].ravel()[0]!r}")
    x = x.astype("int64")
    shape = x.shape
    if len(shape) > 1 and shape[-1] == 1:
        shape = shape[:-1]
    x = x.reshape(-1)
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    num_classes = int(num_classes)
    if x.size and (x.min() < 0 or x.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes}). "
                         f"Received labels from {int(x.min())} to {int(x.max())}.")
    out = np.zeros((x.size, num_classes), dtype=backend.floatx())
    out[np.arange(x.size), x] = 1.0
    return out.reshape(shape + (num_classes,))


def normalize(x, axis=-1, order=2):
    """Scale x so that each slice along ``axis`` has unit ``order``-norm (zero slices stay zero),
    as ``keras.utils.normalize``. Float inputs keep their dtype; others become float32."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(backend.floatx())
    norm = np.linalg.norm(x, ord=order, axis=axis, keepdims=True)
    return x / np.where(norm == 0, 1, norm).astype(x.dtype)


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Pad (or cut) a list of sequences to one length, as ``keras.utils.pad_sequences``.

    Args:
        sequences: list of sequences (lists or arrays; each item a scalar or a fixed-shape array).
        maxlen: output length; default the longest sequence.
        dtype: output dtype ('int32'; use 'object' or a str dtype for strings).
        padding: 'pre' or 'post': where the padding goes.
        truncating: 'pre' or 'post': which end is cut from sequences longer than maxlen.
        value: the padding value.
    Returns: array of shape (len(sequences), maxlen) + item shape.

    >>> pad_sequences([[1, 2, 3], [4]], maxlen=2).tolist()
    [[2, 3], [0, 4]]
    """
    if not hasattr(sequences, "__len__"):
        raise ValueError("pad_sequences: `sequences` must be iterable with a length. "
                         f"Received: {type(sequences).__name__}")
    if padding not in ("pre", "post"):
        raise ValueError(f'pad_sequences: padding must be "pre" or "post". Received: padding={padding!r}')
    if truncating not in ("pre", "post"):
        raise ValueError(f'pad_sequences: truncating must be "pre" or "post". Received: truncating={truncating!r}')
    lengths, sample_shape, found = [], (), False
    for i, s in enumerate(sequences):
        try:
            lengths.append(len(s))
        except TypeError as e:
            raise ValueError(f"pad_sequences: `sequences` must be a list of iterables. Found non-iterable "
                             f"{s!r} at index {i}.") from e
        if not found and len(s):
            sample_shape, found = np.asarray(s).shape[1:], True
    if maxlen is None:
        maxlen = max(lengths) if lengths else 0
    maxlen = int(maxlen)
    is_text = np.issubdtype(np.dtype(dtype), np.str_) or np.dtype(dtype) == np.dtype(object)
    if isinstance(value, str) and not is_text:
        raise ValueError(f"pad_sequences: dtype {dtype!r} cannot hold the padding value {value!r}; "
                         "use dtype=object or a str dtype for text.")
    out = np.full((len(lengths), maxlen) + sample_shape, value, dtype=dtype)
    # One copy per sequence: sequences have ragged lengths, so this loop over samples cannot be one array op.
    for i, s in enumerate(sequences):
        if not len(s) or maxlen == 0:
            continue
        trunc = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        trunc = np.asarray(trunc, dtype=dtype)
        if trunc.shape[1:] != sample_shape:
            raise ValueError(f"pad_sequences: shape of sample {trunc.shape[1:]} of sequence at index {i} "
                             f"differs from the expected shape {sample_shape}.")
        if padding == "post":
            out[i, :len(trunc)] = trunc
        else:
            out[i, maxlen - len(trunc):] = trunc
    return out


def _split_sizes(n, left_size, right_size):
    def as_count(size, name):
        if size is None:
            return None
        if isinstance(size, bool) or not isinstance(size, (int, float, np.integer, np.floating)):
            raise TypeError(f"split_dataset: {name} must be an int, a float or None. Received {size!r}")
        if isinstance(size, (float, np.floating)):
            if not 0 < size < 1:
                raise ValueError(f"split_dataset: a float {name} must be in (0, 1). Received {size}")
            return int(round(size * n))
        if not 0 < size <= n:
            raise ValueError(f"split_dataset: an int {name} must be in [1, {n}] (the data set has {n} samples). "
                             f"Received {size}")
        return int(size)

    left, right = as_count(left_size, "left_size"), as_count(right_size, "right_size")
    if left is None and right is None:
        left = int(round(0.5 * n))
        right = n - left
    elif left is None:
        left = n - right
    elif right is None:
        right = n - left
    if left + right > n:
        raise ValueError(f"split_dataset: left_size + right_size = {left + right} exceeds the "
                         f"{n} samples of the data set.")
    if left == 0 or right == 0:
        raise ValueError(f"split_dataset: both sides must get at least one sample. Received sizes "
                         f"{left} and {right} for {n} samples.")
    return left, right


def split_dataset(dataset, left_size=None, right_size=None, shuffle=False, seed=None, preferred_backend=None):
    """Split an array (or a tuple/list/dict of arrays with the same first axis) into two parts.

    Args:
        dataset: array, or tuple/list/dict of arrays with equal length.
        left_size, right_size: float in (0, 1) (a fraction) or int (a count); either may be None (the rest);
            both None means half and half.
        shuffle: shuffle the samples before splitting; seed: seed for that shuffle (default lamina's RNG).
    Returns: (left, right), each of the same structure as ``dataset``.

    Unlike Keras (which returns tf.data datasets), lamina returns arrays; ``preferred_backend`` (Keras's
    choice between tf.data and torch datasets) is accepted and ignored.
    """
    if isinstance(dataset, dict):
        keys = list(dataset)
        arrays = [np.asarray(dataset[k]) for k in keys]
    elif isinstance(dataset, (tuple, list)):
        arrays = [np.asarray(a) for a in dataset]
    else:
        arrays = [np.asarray(dataset)]
    if not arrays or any(a.ndim == 0 for a in arrays):
        raise ValueError("split_dataset: dataset must be an array or a tuple/list/dict of arrays.")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"split_dataset: all arrays must have the same length. Received lengths "
                         f"{[len(a) for a in arrays]}")
    left, right = _split_sizes(n, left_size, right_size)
    order = np.arange(n)
    if shuffle:
        gen = np.random.default_rng(seed) if seed is not None else backend.rng("shuffle")
        order = gen.permutation(n)
    li, ri = order[:left], order[left:left + right]

    def pack(idx):
        parts = [a[idx] for a in arrays]
        if isinstance(dataset, dict):
            return dict(zip(keys, parts))
        if isinstance(dataset, (tuple, list)):
            return type(dataset)(parts)
        return parts[0]

    return pack(li), pack(ri)


# -------------------------------------------------------------------------------------- downloads
class DownloadError(OSError):
    """A file could not be fetched or failed its checksum. The message says what to do about it."""


def lamina_home():
    """The cache root: ``$LAMINA_HOME`` or ``~/.lamina``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("LAMINA_HOME") or os.path.join("~", ".lamina")))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url, part, timeout):
    """Download url into the file part, resuming from its current size when the server honours Range."""
    import http.client, urllib.error, urllib.request   # noqa: E401 (see _download_one)
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lamina"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range starts at the end: the previous attempt got everything
            return
        raise
    with response:
        status = getattr(response, "status", 200)
        mode = "ab" if (have and status == 206) else "wb"   # 200 means the server ignored Range: start over
        length = response.headers.get("Content-Length")
        got = 0
        with open(part, mode) as f:
            for block in iter(lambda: response.read(1 << 16), b""):
                f.write(block)
                got += len(block)
            f.flush()
            os.fsync(f.fileno())
        # http.client reports a connection closed early as a normal end of data: check the length ourselves.
        if length is not None and got < int(length):
            raise http.client.IncompleteRead(b"", int(length) - got)


def _download_one(url, part, timeout, retries, verbose):
    """Fetch url into part. Returns None on success, else why it failed (one line). A connection cut
    mid-file is retried, resuming; an HTTP error, a timeout or an unreachable host moves on at once."""
    # The network stack (urllib, http.client, ssl, email: ~20 ms of CPU) loads with the first download, not with
    # `import lamina`: most processes never download, and the test suite alone starts ~150 of them.
    import http.client, urllib.error   # noqa: E401
    reason = None
    for attempt in range(retries):
        try:
            if verbose and attempt == 0:
                print(f"lamina: downloading {url}")
            _fetch(url, part, timeout)   # a retry resumes the .part file where the last attempt stopped
            return None
        except urllib.error.HTTPError as e:
            return f"HTTP {e.code} {e.reason}"
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, cut connections
            cause = e.reason if isinstance(e, urllib.error.URLError) else e
            if isinstance(cause, TimeoutError):   # socket.timeout is TimeoutError (Python 3.10)
                return f"no answer within {timeout:g} s"
            reason = " ".join(str(cause).split()) or type(cause).__name__
            if isinstance(e, urllib.error.URLError):   # refused, unknown host, no route: no point in retrying
                return reason
            if attempt + 1 < retries:
                time.sleep(min(0.5 * 2 ** attempt, 4.0))
    return f"{reason} (after {retries} attempts)"


def _fetch_verified(fname, origins, file_hash, path, retries, timeout, verbose):
    """Download to path through the mirrors in turn. Returns None, or the list of 'url: reason' failures."""
    part = path + ".part"
    errors = []
    for url in origins:
        reason = _download_one(url, part, timeout, retries, verbose)
        if reason is None and file_hash is not None:
            got = _sha256(part)
            if got != file_hash.lower():
                os.remove(part)   # never keep or resume from bytes that failed the check
                reason = f"the file is corrupt: SHA-256 {got}, expected {file_hash.lower()}; the download was deleted"
        if reason is None:
            os.replace(part, path)   # atomic: the cache never holds a half-written or unverified file
            return None
        errors.append(f"{url}: {reason}")
    return errors


def _cached(path, file_hash, force_download, verbose):
    if os.path.exists(path) and not force_download:
        if file_hash is None or _sha256(path) == file_hash.lower():
            return True
        if verbose:
            print(f"lamina: {path} does not match its SHA-256; downloading it again.")
        os.remove(path)
    return False


def _check_fname(fname):
    if os.sep in fname or (os.altsep and os.altsep in fname) or fname in ("", ".", ".."):
        raise ValueError(f"get_file: fname must be a plain file name. Received {fname!r}")


def _missing_message(missing):
    """One message for files that could not be fetched: each file once, with its URLs and reasons, where to
    place it by hand, and its SHA-256."""
    lines = [f"Could not download {len(missing)} file(s) (are you offline?). To use them offline, download each "
             "by hand and place it at the path given:"]
    for fname, path, file_hash, errors in missing:
        lines.append(f"- {fname} -> {path}" + (f" (SHA-256 {file_hash.lower()})" if file_hash else ""))
        lines.extend(f"    {e}" for e in errors)
    return "\n".join(lines)


def get_file(fname, origin, file_hash=None, cache_subdir="datasets", hash_algorithm="sha256", cache_dir=None,
             force_download=False, retries=3, timeout=10, verbose=True):
    """Return the local path of ``fname``, downloading it from ``origin`` into the cache if needed.

    Args:
        fname: file name in the cache.
        origin: URL, or a list of mirror URLs tried in order.
        file_hash: expected SHA-256 (hex). A cached file that does not match is fetched again; a download
            that does not match is deleted and the next mirror tried.
        cache_subdir: folder under the cache root; cache_dir: the cache root (default ``lamina_home()``).
        force_download: fetch even if the file is cached.
        retries: attempts per mirror when a connection is cut mid-file (each resumes the partial file).
        timeout: seconds to wait for a connection or for data before giving up on a mirror.
    Raises: DownloadError naming each URL tried with its reason, the path where the file can be placed by
    hand, and its SHA-256.
    """
    return get_files({fname: (origin, file_hash)}, cache_subdir=cache_subdir, hash_algorithm=hash_algorithm,
                     cache_dir=cache_dir, force_download=force_download, retries=retries, timeout=timeout,
                     verbose=verbose)[fname]


def get_files(files, cache_subdir="datasets", hash_algorithm="sha256", cache_dir=None, force_download=False,
              retries=3, timeout=10, verbose=True):
    """``get_file`` for several files: ``files`` maps each file name to (origin URL or mirror list, SHA-256).
    Returns {name: local path}. Every file is attempted; if any cannot be had, one DownloadError lists each
    missing file once (its URLs with reasons, the path to place it at, its SHA-256)."""
    if hash_algorithm not in ("sha256", "auto"):
        raise ValueError(f"get_file: only sha256 is supported. Received hash_algorithm={hash_algorithm!r}")
    folder = os.path.join(cache_dir or lamina_home(), cache_subdir)
    paths, missing = {}, []
    for fname, (origin, file_hash) in files.items():
        _check_fname(fname)
        path = os.path.join(folder, fname)
        paths[fname] = path
        if _cached(path, file_hash, force_download, verbose):
            continue
        os.makedirs(folder, exist_ok=True)
        origins = [origin] if isinstance(origin, str) else list(origin)
        errors = _fetch_verified(fname, origins, file_hash, path, retries, timeout, verbose)
        if errors:
            missing.append((fname, path, file_hash, errors))
    if missing:
        raise DownloadError(_missing_message(missing))
    return paths

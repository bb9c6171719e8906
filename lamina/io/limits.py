"""What a file may make lamina do: only regular files are opened, and a model rebuilt from a file may
allocate no more weight memory than the file actually stores.

``open_regular(path)`` opens without blocking (a FIFO cannot hang the reader) and refuses anything that
is not a regular file (FIFOs, character and block devices such as /dev/zero, sockets, directories).

``weight_budget(nbytes, path)`` is a context in which ``charge_weight`` (called by ``Layer.add_weight``
before it allocates anything) counts the bytes every new weight needs and raises ``ModelFileError`` as soon
as the config asks for more than the file holds: a config with ``Dense(units=20_000_000)`` fails before a
byte of its kernel exists.
"""
import contextlib
import contextvars
import os
import stat

from .errors import ModelFileError

__all__ = ["open_regular", "weight_budget", "charge_weight", "BUDGET_SLACK_BYTES"]

BUDGET_SLACK_BYTES = 1 << 20   # layers may create small weights a file does not store (counters, seeds)
_budget = contextvars.ContextVar("lamina_weight_budget", default=None)


def open_regular(path, what="file"):
    """A binary file object for path, which must be an existing regular file (after symlinks).

    Raises FileNotFoundError when it does not exist, ``ModelFileError`` when it is a directory, a FIFO, a
    device or a socket. The open never blocks (O_NONBLOCK), and the type is checked on the opened
    descriptor, so the check and the read concern the same file."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"No such file: {path}") from e
    except IsADirectoryError as e:
        raise ModelFileError(path, f"is a directory, not a {what}.") from e
    except OSError as e:
        raise ModelFileError(path, f"cannot be opened ({e.strerror or e}).") from e
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ModelFileError(path, f"is a directory, not a {what}.")
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                    else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "not a regular file")
            raise ModelFileError(path, f"is {kind}; lamina reads only regular files.")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _Budget:
    def __init__(self, nbytes, path):
        self.left, self.limit, self.path = int(nbytes), int(nbytes), path


@contextlib.contextmanager
def weight_budget(nbytes, path):
    """Within this context, new weights may add up to nbytes (+ BUDGET_SLACK_BYTES) at most."""
    token = _budget.set(_Budget(int(nbytes) + BUDGET_SLACK_BYTES, path))
    try:
        yield
    finally:
        _budget.reset(token)


def charge_weight(shape, itemsize, where):
    """Count a weight about to be created against the current budget. Returns True inside weight_budget (the
    weight's values will come from the file), False outside it (nothing counted)."""
    budget = _budget.get()
    if budget is None:
        return False
    n = 1
    for d in shape:
        n *= int(d)
    nbytes = n * int(itemsize)
    budget.left -= nbytes
    if budget.left < 0:
        raise ModelFileError(budget.path, f"the config asks for weight {where} of shape {tuple(shape)} "
                                          f"({nbytes} bytes), beyond the {budget.limit - BUDGET_SLACK_BYTES} "
                                          "bytes of weights the file stores; refused before allocating it.")
    return True

"""Run a command in a pseudo-terminal of a given width and return what a person would see on screen."""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run(argv, columns, env=None, cwd=None, timeout=300):
    """(exit status, screen lines) of argv run with stdout and stderr on a pty `columns` wide (0: a
    terminal that reports no width). Screen lines: each output line as it stands after carriage returns
    redraw it, ANSI codes removed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise TimeoutError(f"{argv} printed nothing for {timeout} s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    status = proc.wait(timeout=timeout)
    return status, screen(b"".join(chunks).decode("utf-8", "replace"))


def screen(text):
    lines = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        shown = ""
        for part in raw.split("\r"):            # each \r returns to column 0 and the text overwrites
            clean = _ANSI.sub("", part)
            shown = clean if "\x1b[K" in part else clean + shown[len(clean):]   # ESC[K erases the rest
        lines.append(shown)
    return lines

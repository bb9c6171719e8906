"""``keras.utils.Progbar``: a progress bar that fits the terminal.

On a terminal the bar redraws one line in place: ``12/45 ━━━━━━━━━━━━━━━━━━━━ 1s 3ms/step - loss: 0.3012``.
The line never runs past the terminal's width: the bar shrinks, then goes, and if the metrics still do
not fit, the live line shows the counter alone and the final line puts the metrics on lines of their
own, so every metric of the epoch stays on screen. Elsewhere (a pipe, a log file, a terminal that
reports no width) it prints one plain line when the work is done.
"""
import os
import sys
import time

import numpy as np

__all__ = ["Progbar", "format_time", "format_logs", "terminal_columns"]


def format_time(seconds):
    """'3s', '250ms', '12us': Keras's short durations."""
    if seconds >= 1:
        return f"{seconds:.0f}s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms"
    return f"{seconds * 1e6:.0f}us"


def _format_value(v):
    if isinstance(v, (float, int, np.floating, np.integer)) and not isinstance(v, bool):
        v = float(v)
        return f"{v:.4f}" if v == 0 or abs(v) > 1e-3 else f"{v:.4e}"
    return str(v)


def format_logs(logs):
    """'loss: 0.3012 - accuracy: 0.9120' from a dict of metric values."""
    return " - ".join(f"{k}: {_format_value(v)}" for k, v in logs.items())


def terminal_columns(stream):
    """The width of the terminal stream writes to, or 0 when it is not a terminal or reports no width.
    A Jupyter notebook's output redraws lines like a terminal: it counts as 120 columns wide."""
    try:
        if not (hasattr(stream, "isatty") and stream.isatty()):
            return 120 if "ipykernel" in sys.modules and stream in (sys.stdout, sys.stderr) else 0
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


def _wrap(parts, width):
    """Join the metric strings into lines of at most width characters, breaking between metrics."""
    lines, line = [], ""
    for p in parts:
        piece = p if not line else " - " + p
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = p
        else:
            line += piece
    if line:
        lines.append(line)
    return lines


class Progbar:
    """Displays a progress bar (Keras's ``keras.utils.Progbar``).

    Args:
        target: total number of steps, or None if unknown.
        width: the bar's width in characters (it shrinks to fit a narrow terminal).
        verbose: 0 silent, 1 live bar (one plain line when not on a terminal), 2 one line at the end.
        interval: minimum seconds between redraws.
        stateful_metrics: names of metrics shown as given; the others are averaged over the steps seen.
        unit_name: what a step is called ('step' or 'sample').
        stream: where to write (default sys.stdout).
    """

    def __init__(self, target, width=20, verbose=1, interval=0.05, stateful_metrics=None, unit_name="step",
                 stream=None):
        self.target, self.width, self.verbose, self.interval = target, width, verbose, interval
        self.unit_name = unit_name
        self.stateful_metrics = set(stateful_metrics or ())
        self.stream = stream
        self._values, self._order = {}, []
        self._seen = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = False
        self._finalized = False

    @property
    def _out(self):
        return self.stream or sys.stdout

    def add(self, n, values=None):
        """Advance by n steps."""
        self.update(self._seen + n, values)

    def update(self, current, values=None, finalize=None):
        """Set the step counter to current and record (name, value) pairs for the step(s) since the last call."""
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        for k, v in (values or []):
            if k not in self._order:
                self._order.append(k)
            if k in self.stateful_metrics or finalize:
                self._values[k] = [v, 1]
            else:
                steps = max(current - self._seen, 1)
                total, count = self._values.get(k, [0.0, 0])
                self._values[k] = [total + v * steps, count + steps]
        self._seen = current
        if self.verbose == 0 or self._finalized:
            return
        now = time.perf_counter()
        columns = terminal_columns(self._out) if self.verbose == 1 else 0
        if finalize:
            self._finalized = True
            self._final(now, columns)
        elif columns > 0 and now - self._last_draw >= self.interval:
            self._last_draw = now
            self._live(now, columns)

    # ----- drawing
    def _metrics(self):
        out = []
        for k in self._order:
            total, count = self._values[k]
            out.append(f"{k}: {_format_value(total / max(count, 1))}")
        return out

    def _per_step(self, now):
        return (now - self._start) / max(self._seen, 1)

    def _counter(self):
        if self.target is None:
            return f"{self._seen}/Unknown"
        digits = len(str(self.target))
        return f"{self._seen:>{digits}}/{self.target}"

    def _bar(self, room):
        """The bar at most room characters wide ('' when too narrow to be useful)."""
        if self.target is None or not self.target:
            return ""
        width = min(self.width, room)
        if width < 5:
            return ""
        done = int(width * min(self._seen / self.target, 1.0))
        return "━" * done + "─" * (width - done)

    def _line(self, counter, timing, metrics, columns):
        """counter [bar] timing[ - metrics] fitted to columns - 1 characters; None if the metrics do not fit."""
        limit = columns - 1
        tail = timing + ("".join(" - " + m for m in metrics))
        room = limit - len(counter) - 1 - len(tail)
        bar = self._bar(room - 1)
        line = f"{counter} {bar} {tail}" if bar else f"{counter} {tail}"
        return line if len(line) <= limit else None

    def _live(self, now, columns):
        eta = self._per_step(now) * (self.target - self._seen) if self.target else now - self._start
        timing = f"{format_time(eta)} {format_time(self._per_step(now))}/{self.unit_name}"
        line = self._line(self._counter(), timing, self._metrics(), columns)
        if line is None:  # metrics do not fit on one line: the live line shows the progress alone
            line = self._line(self._counter(), timing, [], columns) or self._counter()[:columns - 1]
        self._out.write("\r" + line + "\x1b[K")
        self._out.flush()
        self._drawn = True

    def _final(self, now, columns):
        elapsed = now - self._start
        metrics = self._metrics()
        if columns <= 0:  # a pipe or a terminal without a width: one plain line
            parts = [f"{self._seen}/{self.target or self._seen}", f"{elapsed:.0f}s",   # Keras: whole seconds
                     f"{format_time(self._per_step(now))}/{self.unit_name}"] + metrics
            self._out.write(" - ".join(parts) + "\n")
            self._out.flush()
            return
        timing = f"{elapsed:.0f}s {format_time(self._per_step(now))}/{self.unit_name}"
        line = self._line(self._counter(), timing, metrics, columns)
        if line is not None:
            text = line
        else:  # the progress on its line, then the metrics wrapped onto lines of their own
            head = self._line(self._counter(), timing, [], columns) or self._counter()
            text = "\n".join([head] + _wrap(metrics, columns - 1))
        self._out.write(("\r" if self._drawn else "") + text.replace("\n", "\x1b[K\n") + "\x1b[K\n")
        self._out.flush()

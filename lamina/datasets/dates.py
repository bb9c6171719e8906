"""Dates written in many human formats, paired with their ISO 8601 form: a seeded, offline translation task.

    >>> from lamina.datasets import dates
    >>> (x_train, y_train), (x_test, y_test) = dates.load_data(num_train=5, num_test=2, seed=0)
    >>> len(x_train), len(y_test[0])
    (5, 10)

Every sample is a calendar date between 1950-01-01 and 2049-12-31 written in one of ``FORMATS``
(with month and day names in title, lower or upper case), for example

    "3 March 1998"  "03/03/98"  "Tuesday, March 3, 1998"  "1998-3-3"  "the 3rd of March, 1998"

and the target is always ``"1998-03-03"``. The conventions that make every string unambiguous:
slashes are American (month/day/year), dots are European (day.month.year), dashes and compact digits
are year-first, and a two-digit year yy means 19yy for yy >= 50 and 20yy otherwise. Weekdays are the
true weekday of the date.

``load_data`` keeps the test dates apart: a seeded tenth of all 36,524 days is reserved for the test
split, so no test date appears in training in any format (held-out dates, not just held-out strings).
"""
import datetime

import numpy as np

__all__ = ["FORMATS", "MIN_DATE", "MAX_DATE", "format_date", "generate", "load_data"]

MIN_DATE, MAX_DATE = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(d):
    suffix = "th" if 11 <= d % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(d % 10, "th")
    return f"{d}{suffix}"


# name -> how to write a date; names follow the Unicode date-pattern letters (MMMM = March, MMM = Mar,
# EEEE = Tuesday, d = 3, dd = 03, yy = 98). Each line is one way people really write dates.
FORMATS = {
    "d MMMM yyyy": lambda t: f"{t.day} {_MONTHS[t.month - 1]} {t.year}",
    "dd MMM yyyy": lambda t: f"{t.day:02d} {_MONTHS[t.month - 1][:3]} {t.year}",
    "d-MMM-yyyy": lambda t: f"{t.day}-{_MONTHS[t.month - 1][:3]}-{t.year}",
    "MMMM d, yyyy": lambda t: f"{_MONTHS[t.month - 1]} {t.day}, {t.year}",
    "MMM d, yyyy": lambda t: f"{_MONTHS[t.month - 1][:3]} {t.day}, {t.year}",
    "MMM d 'yy": lambda t: f"{_MONTHS[t.month - 1][:3]} {t.day} '{t.year % 100:02d}",
    "EEEE, MMMM d, yyyy": lambda t: f"{_DAYS[t.weekday()]}, {_MONTHS[t.month - 1]} {t.day}, {t.year}",
    "EEE, d MMM yyyy": lambda t: f"{_DAYS[t.weekday()][:3]}, {t.day} {_MONTHS[t.month - 1][:3]} {t.year}",
    "dth of MMMM yyyy": lambda t: f"{_ordinal(t.day)} of {_MONTHS[t.month - 1]} {t.year}",
    "the dth of MMMM, yyyy": lambda t: f"the {_ordinal(t.day)} of {_MONTHS[t.month - 1]}, {t.year}",
    "MMMM dth, yyyy": lambda t: f"{_MONTHS[t.month - 1]} {_ordinal(t.day)}, {t.year}",
    "MM/dd/yy": lambda t: f"{t.month:02d}/{t.day:02d}/{t.year % 100:02d}",
    "M/d/yyyy": lambda t: f"{t.month}/{t.day}/{t.year}",
    "dd.MM.yyyy": lambda t: f"{t.day:02d}.{t.month:02d}.{t.year}",
    "d.M.yy": lambda t: f"{t.day}.{t.month}.{t.year % 100:02d}",
    "yyyy-M-d": lambda t: f"{t.year}-{t.month}-{t.day}",
    "yyyy-MM-dd": lambda t: f"{t.year}-{t.month:02d}-{t.day:02d}",
    "yyyy/MM/dd": lambda t: f"{t.year}/{t.month:02d}/{t.day:02d}",
    "yyyyMMdd": lambda t: f"{t.year}{t.month:02d}{t.day:02d}",
}
_NAMES = list(FORMATS)
_NUM_DAYS = MAX_DATE.toordinal() - MIN_DATE.toordinal() + 1


def format_date(date, fmt, case="title"):
    """One date written in format ``fmt`` (a ``FORMATS`` name); case 'title' (as written above), 'lower'
    or 'upper' changes the month and day names."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown date format {fmt!r}. Valid formats: {', '.join(_NAMES)}.")
    if case not in ("title", "lower", "upper"):
        raise ValueError(f"case must be 'title', 'lower' or 'upper'. Received: case={case!r}")
    text = FORMATS[fmt](date)
    return text if case == "title" else getattr(text, case)()


def _write(days, rng):
    """Strings and ISO targets for day numbers (offsets from MIN_DATE); formats and cases drawn from rng."""
    fmts = rng.integers(0, len(_NAMES), size=len(days))
    # most text keeps its usual capitals; a fifth is lower case and a tenth upper case
    cases = rng.choice(np.array(["title", "lower", "upper"]), size=len(days), p=[0.7, 0.2, 0.1])
    dates = [datetime.date.fromordinal(MIN_DATE.toordinal() + int(d)) for d in days]
    x = np.array([format_date(t, _NAMES[f], c) for t, f, c in zip(dates, fmts, cases)], dtype=object)
    y = np.array([t.isoformat() for t in dates], dtype=object)
    return x, y


def generate(n, seed=0):
    """n random (human string, ISO string) pairs, dates uniform over 1950..2049, formats uniform.

    Returns (x, y): NumPy arrays of Python strings (dtype object), e.g. x[i] = "Mar 3, 1998",
    y[i] = "1998-03-03". The same seed gives the same pairs on every machine.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int. Received: n={n!r}")
    rng = np.random.default_rng(seed)
    return _write(rng.integers(0, _NUM_DAYS, size=n), rng)


def load_data(num_train=20000, num_test=2000, seed=0, test_fraction=0.1):
    """((x_train, y_train), (x_test, y_test)): human-written dates and their ISO 8601 forms.

    Args:
        num_train, num_test: how many samples to draw for each split.
        seed: the generator's seed (the same seed, the same data).
        test_fraction: share of all days reserved for the test split; training never sees those dates.
    x arrays hold strings such as "Tuesday, March 3, 1998", y arrays strings such as "1998-03-03"
    (NumPy arrays of dtype object).
    """
    for name, v in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative int. Received: {name}={v!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). Received: test_fraction={test_fraction!r}")
    rng = np.random.default_rng(seed)
    days = rng.permutation(_NUM_DAYS)
    cut = int(round(_NUM_DAYS * test_fraction))
    test_days, train_days = days[:cut], days[cut:]
    train = _write(train_days[rng.integers(0, len(train_days), size=num_train)], rng)
    test = _write(test_days[rng.integers(0, len(test_days), size=num_test)], rng)
    return train, test

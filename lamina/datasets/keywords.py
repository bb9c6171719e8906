"""Synthetic spoken-like keywords: ten classes of one-second "words" at 8 kHz, seeded (no download). The
keyword-spotting recipe (``lamina train speech``) trains on them.

    >>> from lamina.datasets import keywords
    >>> (x, y), _ = keywords.load_data(num_train=4, num_test=1)
    >>> x.shape, x.dtype, y.shape                 # waveforms in [-1, 1], class ids 0..9
    ((4, 8000), dtype('float32'), (4,))

Each word is built like speech is: a voiced sound is a buzz of harmonics of a pitch f0 (a random 90-260 Hz
per speaker, gliding and wobbling a little) whose loudness at each frequency follows three formant
resonances (F1, F2, F3: the vocal tract's shape; they tell the vowels apart); a fricative ("s") is
high-pass noise; whistles and beeps are pure tones. Every example draws its own pitch, a speaker factor
that scales all formants (0.85-1.15, like a shorter or longer vocal tract), its start time and length, its
loudness, and background noise at a signal-to-noise ratio of 0-25 dB, so no single sample value or
frequency bin gives the class away; a spectrogram's shape over time does.

Classes (``CLASSES``): 'ah', 'ee', 'oo' (steady vowels), 'eye' (ah gliding to ee), 'wah' (oo gliding to ah),
'sah' (a fricative then ah), 'whistle-up' and 'whistle-down' (a tone gliding up or down an octave or more),
'beep-beep' (two short equal tones), 'do-re-do' (three tones, the middle one higher). The classes are
balanced in both splits (each split is a shuffled run of class ids 0..9 repeated).
"""
import numpy as np

__all__ = ["CLASSES", "SAMPLING_RATE", "keywords", "load_data"]

CLASSES = ("ah", "ee", "oo", "eye", "wah", "sah", "whistle-up", "whistle-down", "beep-beep", "do-re-do")
SAMPLING_RATE = 8000

# formants (F1, F2, F3) in Hz of an adult speaker's vowels (Peterson and Barney's averages, rounded)
_VOWELS = {"ah": (730.0, 1090.0, 2440.0), "ee": (270.0, 2290.0, 3010.0), "oo": (300.0, 870.0, 2240.0)}
# per class: (formants at the start, formants at the end, voiced, fricative first, tones)
_VOICED = {"ah": ("ah", "ah"), "ee": ("ee", "ee"), "oo": ("oo", "oo"), "eye": ("ah", "ee"), "wah": ("oo", "ah"),
           "sah": ("ah", "ah")}
_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_FORMANT_GAINS = np.array([1.0, 0.55, 0.25])


def _formant_tracks(cls, t, onset, length, scale):
    """(3, n, T) formant frequencies over time: the start vowel's, gliding to the end vowel's over the middle
    half of the word (steady vowels: start = end)."""
    start = np.zeros((len(cls), 3))
    end = np.zeros((len(cls), 3))
    for i, name in enumerate(CLASSES):   # ten classes: a loop over class ids, each vectorised over examples
        if name in _VOICED:
            a, b = _VOICED[name]
            start[cls == i], end[cls == i] = _VOWELS[a], _VOWELS[b]
    glide = np.clip((t - onset - 0.25 * length) / (0.5 * length), 0.0, 1.0)     # (n, T) in [0, 1]
    tracks = start.T[:, :, None] + (end - start).T[:, :, None] * glide[None]
    return tracks * scale[None, :, None]


def _envelope(t, start, length, ramp=0.02):
    """(n, T) 0..1 gate: on from start for length seconds, with raised-cosine ramps of ramp seconds."""
    rise = np.clip((t - start) / ramp, 0.0, 1.0)
    fall = np.clip((start + length - t) / ramp, 0.0, 1.0)
    return _raised_cosine(rise) * _raised_cosine(fall)


def _raised_cosine(r):
    """0.5 - 0.5 cos(pi r) for r in [0, 1], the cosine taken only inside the ramp (0 < r < 1): a gate is 0 or
    1 at all but a few hundred of its 8,000 samples, and there the formula gives exactly 0 and 1 (cos(pi) is
    -1.0 in floating point) - the same values at a fraction of the cost of a cosine per sample."""
    out = (r >= 1.0).astype(np.float64)
    ramp = (r > 0.0) & (r < 1.0)
    out[ramp] = 0.5 - 0.5 * np.cos(np.pi * r[ramp])
    return out


def _voiced(rng, cls, t, onset, length, voice_start, voiced):
    """Harmonics of a gliding, wobbling pitch, shaped by the formant tracks; zero in the rows that are not
    voiced (``voiced`` (n, 1) bool: every row draws its random numbers all the same, so that the stream of
    draws does not depend on the classes, but only the voiced rows are computed)."""
    n, sr = len(cls), SAMPLING_RATE
    f0 = rng.uniform(90.0, 260.0, (n, 1))
    glide = rng.uniform(-0.15, 0.15, (n, 1))            # the pitch drifts by up to 15% over the word
    vibrato = 0.02 * np.sin(2 * np.pi * rng.uniform(3.0, 7.0, (n, 1)) * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    scale = rng.uniform(0.85, 1.15, n)
    rows = voiced[:, 0]
    cls, t, onset, length, voice_start = cls[rows], t[rows], onset[rows], length[rows], voice_start[rows]
    pitch = f0[rows] * (1.0 + glide[rows] * np.clip((t - onset) / length, 0.0, 1.0) + vibrato[rows])   # (n, T)
    phase = 2 * np.pi * np.cumsum(pitch, axis=1) / sr
    # the formants and the pitch change slowly: the harmonics' loudness is computed every 2 ms and held
    hold = 16
    m, T = phase.shape
    coarse = t[:, ::hold]
    formants = _formant_tracks(cls, coarse, onset, length, scale[rows])   # (3, m, T / hold)
    pitch_coarse = pitch[:, ::hold]
    out = np.empty_like(phase)
    # a few examples at a time: the recurrence's four (rows, T) float64 arrays then stay in the core's cache
    # across the ~40 harmonics instead of streaming through memory on each pass (the same values, element
    # for element)
    for lo in range(0, m, _HARMONIC_ROWS):
        block = slice(lo, lo + _HARMONIC_ROWS)
        out[block] = _harmonics(phase[block], pitch_coarse[block], formants[:, block], hold)
    full = np.zeros(voiced.shape[:1] + out.shape[1:])
    full[rows] = out * _envelope(t, voice_start, onset + length - voice_start)
    return full


# examples per block of the harmonic loop (_voiced): 4 rows of 8,000 float64 samples are 256 KB an array
_HARMONIC_ROWS = 4


def _harmonics(phase, pitch_coarse, formants, hold):
    """The sum over harmonics k of sin(k phase), each weighted by the formants' gain at k times the pitch
    (computed every ``hold`` samples and held), for (m, T) phases."""
    sr = SAMPLING_RATE
    m, T = phase.shape
    c2 = 2.0 * np.cos(phase)
    s_prev, s_k = np.zeros_like(phase), np.sin(phase)       # sin(0 phase), sin(1 phase)
    out, tmp = np.zeros_like(phase), np.empty_like(phase)
    # (m, T / hold, hold) views: a coarse gain multiplies its block of hold samples without being repeated
    held = lambda a: a.reshape(m, T // hold, hold)  # noqa: E731  (T = 8000 is a multiple of hold)
    for k in range(1, int(0.45 * sr / 90.0) + 1):   # a loop over harmonic numbers, each over all examples
        f = k * pitch_coarse
        gain = np.sum(_FORMANT_GAINS[:, None, None]
                      / (1.0 + ((f[None] - formants) / _BANDWIDTHS[:, None, None]) ** 2), axis=0)
        gain = np.where(f < 0.45 * sr, gain / np.sqrt(k), 0.0)
        np.multiply(gain[:, :, None], held(s_k), out=held(tmp))
        out += tmp
        # sin((k + 1) phase) = 2 cos(phase) sin(k phase) - sin((k - 1) phase), the Chebyshev recurrence,
        # written over sin((k - 1) phase), which is not needed any more
        np.multiply(c2, s_k, out=tmp)
        np.subtract(tmp, s_prev, out=s_prev)
        s_prev, s_k = s_k, s_prev
    return out


def _fricative(rng, t, onset, length, fricative):
    """High-passed noise ('s') over the first 30-40% of the word; zero in the rows that are not ``fricative``
    ((n, 1) bool: as in _voiced, every row draws its random numbers, only the fricative rows are computed)."""
    noise = rng.standard_normal(t.shape)
    frac = rng.uniform(0.3, 0.4, (t.shape[0], 1)) * length
    rows = fricative[:, 0]
    spectrum = np.fft.rfft(noise[rows], axis=1)
    freqs = np.fft.rfftfreq(t.shape[1], 1.0 / SAMPLING_RATE)
    spectrum *= np.clip((freqs - 2500.0) / 500.0, 0.0, 1.0)          # energy above ~2.5-3 kHz only
    hiss = np.fft.irfft(spectrum, n=t.shape[1], axis=1)
    hiss /= hiss.std(axis=1, keepdims=True) + 1e-12
    full = np.zeros(t.shape)
    full[rows] = 0.8 * hiss * _envelope(t[rows], onset[rows], frac[rows])
    return full, onset + 0.8 * frac


def _tones(rng, cls, t, onset, length):
    """Whistles (one gliding tone) and beeps (two or three short tones) with their own base frequency."""
    n = len(cls)
    base = rng.uniform(500.0, 900.0, (n, 1))
    span = rng.uniform(1.0, 1.6, (n, 1))                             # octaves covered by a whistle
    step = 2.0 ** (rng.uniform(3.0, 5.0, (n, 1)) / 12.0)
    # every row draws its random numbers (the stream does not depend on the classes), only tone rows compute
    rows = np.isin(cls, [CLASSES.index(c) for c in ("whistle-up", "whistle-down", "beep-beep", "do-re-do")])
    full = np.zeros(t.shape)
    cls, t, onset, length, base, span, step = (a[rows] for a in (cls, t, onset, length, base, span, step))
    up = cls == CLASSES.index("whistle-up")
    beeps, tune = cls == CLASSES.index("beep-beep"), cls == CLASSES.index("do-re-do")
    rel = np.clip((t - onset) / length, 0.0, 1.0)
    freq = np.where(up[:, None], base * 2.0 ** (span * rel), base * 2.0 ** (span * (1.0 - rel)))
    gate = _envelope(t, onset, length)
    # beeps: k equal slots with short gaps; do-re-do's middle tone is 3-5 semitones higher
    slots = np.where(tune, 3, 2)[:, None]
    slot = np.minimum((rel * slots).astype(int), slots - 1)
    inside = (rel * slots - slot) < 0.7                             # each slot: 70% tone, 30% silence
    note = np.where(tune[:, None] & (slot == 1), base * step, base)
    beep_gate = gate * inside
    freq = np.where((beeps | tune)[:, None], note, freq)
    gate = np.where((beeps | tune)[:, None], beep_gate, gate)
    phase = 2 * np.pi * np.cumsum(freq, axis=1) / SAMPLING_RATE
    second = np.where(2.0 * freq < 0.45 * SAMPLING_RATE, 0.3 * np.sin(2 * phase), 0.0)  # no aliasing
    full[rows] = (np.sin(phase) + second) * gate
    return full


def keywords(n, seed=0, chunk=256):
    """n waveforms float32 (n, 8000) in [-1, 1] and labels int64 (n,): a shuffled run of the ten classes."""
    n = int(n)
    if n < 0:
        raise ValueError(f"keywords: n must be >= 0. Received: n={n}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(CLASSES))
    x = np.zeros((n, SAMPLING_RATE), np.float32)
    for lo in range(0, n, chunk):   # chunks of examples bound the memory; each chunk is one vectorised draw
        x[lo:lo + chunk] = _draw(rng, labels[lo:lo + chunk])
    return x, labels.astype(np.int64)


def _draw(rng, cls):
    n = len(cls)
    t = np.broadcast_to(np.arange(SAMPLING_RATE) / SAMPLING_RATE, (n, SAMPLING_RATE))
    length = rng.uniform(0.35, 0.65, (n, 1))
    onset = rng.uniform(0.05, 0.95 - length)
    voiced = np.isin(cls, [CLASSES.index(c) for c in _VOICED])[:, None]
    fricative = (cls == CLASSES.index("sah"))[:, None]
    hiss, voice_start = _fricative(rng, t, onset, length, fricative)
    voice_start = np.where(fricative, voice_start, onset)
    signal = _voiced(rng, cls, t, onset, length, voice_start, voiced)
    signal += hiss + _tones(rng, cls, t, onset, length)   # (hiss is zero outside the fricative rows)
    signal /= np.abs(signal).max(axis=1, keepdims=True) + 1e-12
    signal *= rng.uniform(0.3, 0.9, (n, 1))                          # loudness
    snr_db = rng.uniform(0.0, 25.0, (n, 1))
    power = np.mean(signal ** 2, axis=1, keepdims=True)
    signal += rng.standard_normal(signal.shape) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return np.clip(signal, -1.0, 1.0)


def load_data(num_train=2000, num_test=500, seed=0):
    """((x_train, y_train), (x_test, y_test)): waveforms float32 (N, 8000) and class ids int64 (N,); the test
    split is drawn from its own seed (seed + 1), so it never repeats a training example."""
    return keywords(num_train, seed=seed), keywords(num_test, seed=seed + 1)

"""A restricted reader for the pickle streams inside the published imdb.npz and reuters.npz.

Those files hold ragged sequences as NumPy object arrays, which NumPy stores as a pickle. lamina never
unpickles: this module walks the opcode stream itself and builds only ints, strings/bytes (for the array
header), None/bools, lists and tuples. Everything else is refused with ``UnsafePickleError``.

An object array's pickle names three things by module path (GLOBAL / STACK_GLOBAL): NumPy's array
reconstructor, ``numpy.ndarray`` and ``numpy.dtype``. The reader accepts exactly those names, and only as
inert symbols: nothing is imported, looked up or called. REDUCE and BUILD are accepted only on those
symbols and only record their arguments; the final value must have the exact shape of a 1-D object array
of integer lists (or a 1-D integer array), which is then converted to Python lists of ints. Any other
global name, any other use of REDUCE/BUILD, and every other opcode (INST, OBJ, NEWOBJ, EXT*, PERSID, dict
opcodes, floats, ...) raise ``UnsafePickleError``.
"""
import struct

import numpy as np

__all__ = ["UnsafePickleError", "read_int_sequences", "read_npy_int_sequences"]


class UnsafePickleError(ValueError):
    """The pickle stream holds something other than integer sequences (or is malformed)."""


_RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}
_NDARRAY = ("numpy", "ndarray")
_DTYPE = ("numpy", "dtype")
_ALLOWED = _RECONSTRUCT | {_NDARRAY, _DTYPE}


class _Sym:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


class _Call:
    __slots__ = ("func", "args", "state")

    def __init__(self, func, args):
        self.func, self.args, self.state = func, args, None


class _Mark:
    pass


_MARK = _Mark()
_MAX_DEPTH = 64


def _fail(msg):
    raise UnsafePickleError(f"refused pickle stream: {msg}")


def _parse(data):
    """The value a pickle stream builds, with only the opcodes above."""
    data = bytes(data)
    pos, n = 0, len(data)
    stack, memo = [], {}

    def take(k):
        nonlocal pos
        if k < 0 or pos + k > n:
            _fail("truncated stream")
        out = data[pos:pos + k]
        pos += k
        return out

    def pop_mark():
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1:]
                del stack[i:]
                return items
        _fail("no MARK on the stack")

    def pop():
        if not stack or stack[-1] is _MARK:
            _fail("stack underflow")
        return stack.pop()

    def top_list():
        if not stack or not isinstance(stack[-1], list):
            _fail("APPEND target is not a list")
        return stack[-1]

    def check_items(items):
        if any(v is _MARK for v in items):
            _fail("misplaced MARK")
        return items

    while True:
        op = take(1)[0]
        if op == 0x80:                      # PROTO
            if take(1)[0] > 5:
                _fail("unsupported protocol")
        elif op == 0x95:                    # FRAME (length is advisory)
            take(8)
        elif op == 0x2E:                    # STOP
            if len(stack) != 1 or stack[0] is _MARK:
                _fail("STOP with a stack of %d items" % len(stack))
            if pos != n:
                _fail("data after STOP")
            return stack[0]
        elif op == 0x28:                    # MARK
            stack.append(_MARK)
        elif op == 0x30:                    # POP
            if not stack:
                _fail("stack underflow")
            stack.pop()
        elif op == 0x31:                    # POP_MARK
            pop_mark()
        elif op == 0x32:                    # DUP
            stack.append(pop())
            stack.append(stack[-1])
        elif op == 0x4A:                    # BININT
            stack.append(struct.unpack("<i", take(4))[0])
        elif op == 0x4B:                    # BININT1
            stack.append(take(1)[0])
        elif op == 0x4D:                    # BININT2
            stack.append(struct.unpack("<H", take(2))[0])
        elif op == 0x8A:                    # LONG1
            k = take(1)[0]
            stack.append(int.from_bytes(take(k), "little", signed=True))
        elif op == 0x49:                    # INT (text; 00/01 are bools)
            line = _line(data, pos)
            pos += len(line) + 1
            try:
                v = int(line)
            except ValueError:
                _fail("bad INT")
            stack.append(bool(v) if line in (b"00", b"01") else v)
        elif op == 0x4E:                    # NONE
            stack.append(None)
        elif op == 0x88:                    # NEWTRUE
            stack.append(True)
        elif op == 0x89:                    # NEWFALSE
            stack.append(False)
        elif op == 0x5D:                    # EMPTY_LIST
            stack.append([])
        elif op == 0x61:                    # APPEND
            v = pop()
            top_list().append(v)
        elif op == 0x65:                    # APPENDS
            items = check_items(pop_mark())
            top_list().extend(items)
        elif op == 0x6C:                    # LIST
            stack.append(list(check_items(pop_mark())))
        elif op == 0x29:                    # EMPTY_TUPLE
            stack.append(())
        elif op == 0x74:                    # TUPLE
            stack.append(tuple(check_items(pop_mark())))
        elif op in (0x85, 0x86, 0x87):      # TUPLE1..3
            k = op - 0x84
            items = [pop() for _ in range(k)][::-1]
            stack.append(tuple(items))
        elif op == 0x71:                    # BINPUT
            memo[take(1)[0]] = _peek(stack)
        elif op == 0x72:                    # LONG_BINPUT
            memo[struct.unpack("<I", take(4))[0]] = _peek(stack)
        elif op == 0x94:                    # MEMOIZE
            memo[len(memo)] = _peek(stack)
        elif op == 0x68:                    # BINGET
            stack.append(_memo(memo, take(1)[0]))
        elif op == 0x6A:                    # LONG_BINGET
            stack.append(_memo(memo, struct.unpack("<I", take(4))[0]))
        elif op == 0x55:                    # SHORT_BINSTRING
            stack.append(take(take(1)[0]).decode("latin-1"))
        elif op == 0x54:                    # BINSTRING
            stack.append(take(struct.unpack("<i", take(4))[0]).decode("latin-1"))
        elif op == 0x8C:                    # SHORT_BINUNICODE
            stack.append(_utf8(take(take(1)[0])))
        elif op == 0x58:                    # BINUNICODE
            stack.append(_utf8(take(struct.unpack("<I", take(4))[0])))
        elif op == 0x43:                    # SHORT_BINBYTES
            stack.append(take(take(1)[0]))
        elif op == 0x42:                    # BINBYTES
            stack.append(take(struct.unpack("<I", take(4))[0]))
        elif op == 0x63:                    # GLOBAL "module\nname\n"
            module = _line(data, pos)
            pos += len(module) + 1
            name = _line(data, pos)
            pos += len(name) + 1
            stack.append(_symbol(module.decode("latin-1"), name.decode("latin-1")))
        elif op == 0x93:                    # STACK_GLOBAL
            name, module = pop(), pop()
            if not isinstance(module, str) or not isinstance(name, str):
                _fail("STACK_GLOBAL needs two strings")
            stack.append(_symbol(module, name))
        elif op == 0x52:                    # REDUCE: recorded, never called
            args, func = pop(), pop()
            if not isinstance(func, _Sym) or func.name not in (_RECONSTRUCT | {_DTYPE}) or not isinstance(args, tuple):
                _fail("REDUCE on anything but the array / dtype reconstructors")
            stack.append(_Call(func, args))
        elif op == 0x62:                    # BUILD: recorded on a recorded call only
            state = pop()
            target = _peek(stack)
            if not isinstance(target, _Call) or target.state is not None:
                _fail("BUILD on anything but a recorded array / dtype")
            target.state = state
        else:
            _fail(f"opcode 0x{op:02x} at byte {pos - 1} is not allowed")


def _line(data, pos):
    end = data.find(b"\n", pos)
    if end < 0 or end - pos > 256:
        _fail("unterminated text argument")
    return data[pos:end]


def _utf8(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        _fail("bad UTF-8 string")


def _peek(stack):
    if not stack or stack[-1] is _MARK:
        _fail("nothing to memoize")
    return stack[-1]


def _memo(memo, key):
    if key not in memo:
        _fail(f"memo key {key} is not defined")
    return memo[key]


def _symbol(module, name):
    if (module, name) not in _ALLOWED:
        _fail(f"global {module}.{name} is not allowed")
    return _Sym((module, name))


def _int_list(value, depth=0):
    """value as a list of Python ints (lists/tuples of ints, or a NumPy integer array), else raise."""
    if depth > _MAX_DEPTH:
        _fail("nesting too deep")
    if isinstance(value, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            _fail("a sequence holds something other than ints")
        return list(value)
    if isinstance(value, _Call):
        arr = _array(value)
        if arr.dtype == object or arr.ndim != 1:
            _fail("a nested array is not a 1-D integer array")
        return [int(v) for v in arr]
    _fail(f"expected a sequence of ints, found {type(value).__name__}")


def _dtype(call):
    if not isinstance(call, _Call) or call.func.name != _DTYPE or len(call.args) != 3:
        _fail("array dtype is not a recorded numpy.dtype(...)")
    code = call.args[0]
    if code == "O8":
        return np.dtype(object)
    if not isinstance(code, str) or len(code) < 2 or code[0] not in "iu" or code[1:] not in ("1", "2", "4", "8"):
        _fail(f"array dtype {code!r} is not an integer or object dtype")
    st = call.state
    order = st[1] if isinstance(st, tuple) and len(st) > 1 and st[1] in ("<", ">", "|", "=") else "<"
    return np.dtype(("<" if order in ("|", "=") else order) + code)


def _array(call):
    """A 1-D object or integer ndarray from a recorded _reconstruct(...) + BUILD(state)."""
    if call.func.name not in _RECONSTRUCT or len(call.args) != 3 or not isinstance(call.args[0], _Sym) \
            or call.args[0].name != _NDARRAY:
        _fail("not an ndarray reconstruction")
    st = call.state
    if not isinstance(st, tuple) or len(st) != 5:
        _fail("ndarray state is not (version, shape, dtype, fortran, data)")
    _, shape, dt, _, payload = st
    if not isinstance(shape, tuple) or len(shape) != 1 or not isinstance(shape[0], int) or shape[0] < 0:
        _fail(f"array shape {shape!r} is not 1-D")
    dtype = _dtype(dt)
    if dtype == object:
        if not isinstance(payload, list) or len(payload) != shape[0]:
            _fail("object array data is not a list of the declared length")
        out = np.empty(shape[0], dtype=object)
        for i, item in enumerate(payload):
            out[i] = _int_list(item)
        return out
    if not isinstance(payload, (bytes, str)):
        _fail("integer array data is not raw bytes")
    raw = payload if isinstance(payload, bytes) else payload.encode("latin-1")
    if len(raw) != shape[0] * dtype.itemsize:
        _fail("integer array data has the wrong length")
    return np.frombuffer(raw, dtype=dtype).astype(np.int64)


def read_int_sequences(data):
    """A list of lists of Python ints from a pickle stream of a 1-D object array of integer sequences, or of a
    plain list/tuple of such sequences. Raises UnsafePickleError for anything else."""
    value = _parse(data)
    if isinstance(value, _Call):
        arr = _array(value)
        if arr.dtype != object:
            _fail("expected an array of sequences, found an integer array")
        return [list(v) for v in arr]
    if isinstance(value, (list, tuple)):
        return [_int_list(v) for v in value]
    _fail(f"expected a list of integer sequences, found {type(value).__name__}")


def read_npy_int_sequences(raw, name="array"):
    """Parse one .npy member: an object array (read with read_int_sequences, returned as a 1-D object array
    of lists) or an ordinary numeric array (read with np.load(allow_pickle=False) semantics)."""
    import io
    if raw[:6] != b"\x93NUMPY":
        raise UnsafePickleError(f"{name}: not a .npy member")
    major = raw[6]
    if major == 1:
        hl, start = struct.unpack("<H", raw[8:10])[0], 10
    elif major in (2, 3):
        hl, start = struct.unpack("<I", raw[8:12])[0], 12
    else:
        raise UnsafePickleError(f"{name}: unsupported .npy version {major}")
    header = raw[start:start + hl].decode("latin-1")
    if "'|O'" not in header:
        buf = io.BytesIO(raw)
        return np.load(buf, allow_pickle=False)
    if "'fortran_order': False" not in header:
        raise UnsafePickleError(f"{name}: Fortran-ordered object array")
    seqs = read_int_sequences(raw[start + hl:])
    out = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        out[i] = s
    return out

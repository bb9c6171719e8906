"""model.summary(): Keras 3's table of layers, output shapes and parameter counts.

Sequential-like models get three columns (Layer (type), Output Shape, Param #); other functional models a
fourth, Connected to (``layer_name[node][tensor]``). Totals count trainable and non-trainable weights with
their memory size, in Keras's units (1 KB = 1024 B).
"""
import sys
import textwrap

import numpy as np

from ..layers.layer import KerasTensor, _nest_flatten

_BOX = dict(top="┏━┳┓", head="┃┃", mid="┡━╇┩", row="││", sep="├─┼┤", bottom="└─┴┘")
_ASCII = dict(top="+-++", head="||", mid="+=++", row="||", sep="+-++", bottom="+-++")


def readable_memory_size(num_bytes):
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if num_bytes < 1024:
            return f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.2f} EB"


def _weights_size(weights):
    count = sum(int(np.prod(w.shape)) for w in weights)
    size = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in weights)
    return count, size


def _shape_str(t):
    if t is None:
        return "?"
    if isinstance(t, KerasTensor):
        return str(t.shape).replace(",)", ")") if len(t.shape) != 1 else f"({t.shape[0]},)"
    flat = _nest_flatten(t)
    return "[" + ", ".join(_shape_str(x) for x in flat) + "]" if len(flat) > 1 else _shape_str(flat[0])


def _params(layer):
    if not layer.built and not layer.weights:
        return "0 (unbuilt)"
    return f"{layer.count_params():,}"


def _is_sequential_like(model):
    nodes = getattr(model, "_nodes", None)
    if nodes is None:
        return True
    if len(_nest_flatten(model.inputs)) != 1 or len(_nest_flatten(model.outputs)) != 1:
        return False
    seen = set()
    for node in nodes:
        if len(node.input_tensors) > 1 or id(node.layer) in seen:
            return False
        seen.add(id(node.layer))
    return True


def _rows(model, level=0):
    """[(layer, [name (type), output shape, params, connections])] for the model's own layers. At a nesting
    ``level`` (expand_nested: a nested model's rows, under its own), Keras's form of them: named with '   └ ' a
    level, the output shape of the layer's first call alone, and none of the outer graph's connections ('-')."""
    prefix = "   " * level + "└ " if level else ""
    rows = []
    nodes = getattr(model, "_nodes", None)
    if nodes is not None:  # functional
        own = {id(n) for n in nodes}
        index_map = model._node_index_map()
        for layer in model._layers:  # operations (ops on symbolic tensors) too, as Keras
            layer_nodes = [n for n in layer._inbound_nodes if id(n) in own] or layer._inbound_nodes[:1]
            outs = [n.outputs for n in layer_nodes]
            if level:
                rows.append((layer, [_name(layer, prefix), _shape_str(outs[0]) if outs else "?", _params(layer),
                                     ["-"]]))
                continue
            shape = _shape_str(outs[0]) if len(outs) == 1 else ", ".join(_shape_str(o) for o in outs)
            connected = []
            for n in layer_nodes:
                for t in n.input_tensors:
                    if t._history is None:
                        continue
                    src, ni, ti = t._history
                    connected.append(f"{src.name}[{index_map.get((id(src), ni), ni)}][{ti}]")
            rows.append((layer, [_name(layer), shape, _params(layer), connected or ["-"]]))
        return rows
    outputs = getattr(model, "_layer_outputs", {})
    for layer in model.layers:
        rows.append((layer, [_name(layer, prefix), _shape_str(outputs.get(id(layer))), _params(layer),
                             ["-"] if level else []]))
    return rows


def _name(layer, prefix=""):
    return f"{prefix}{layer.name} ({getattr(layer, '_keras_class_name', type(layer).__name__)})"


def _expanded(rows, level=1):
    """expand_nested: after each nested model's row, its own layers' rows (_rows at the next level), deeper models
    in turn."""
    out = []
    for layer, cells in rows:
        out.append((layer, cells))
        if getattr(layer, "layers", None):
            out += _expanded(_rows(layer, level), level + 1)
    return out


def _can_encode(chars):
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        chars.encode(enc)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def print_summary(model, line_length=None, positions=None, print_fn=None, expand_nested=False,
                  show_trainable=False, layer_range=None):
    """Print (or pass to print_fn, line by line) Keras's summary table of model."""
    sequential_like = _is_sequential_like(model)
    default_length = 88 if sequential_like else 108
    if line_length is None and print_fn is None:  # printed to a terminal: fit its width (cells wrap)
        from ..utils.progbar import terminal_columns
        columns = terminal_columns(sys.stdout)
        line_length = max(min(default_length, columns - 2), 40) if columns else default_length
    line_length = line_length or default_length
    print_fn = print_fn or (lambda line, **kw: print(line))
    if sequential_like:
        headers = ["Layer (type)", "Output Shape", "Param #"]
        positions = positions or [0.45, 0.84, 1.0]
    else:
        headers = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
        positions = positions or [0.3, 0.6, 0.7, 1.0]
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    widths = [positions[0]] + [positions[i] - positions[i - 1] for i in range(1, len(positions))]
    widths = [max(w - 3, 4) for w in widths]
    for i, h in enumerate(headers):  # a narrow table keeps each header word whole ("Param #")
        need = max(len(word) for word in h.split()) + (2 if h == "Param #" else 0)
        while widths[i] < need and max(widths) > need:
            widest = widths.index(max(widths))
            widths[widest] -= 1
            widths[i] += 1
    while sum(widths) + 3 * len(widths) > line_length and max(widths) > 9:  # stay within line_length + 1
        widths[widths.index(max(widths))] -= 1
    if show_trainable:
        headers.append("Trainable")
        widths.append(9)
    rows = _rows(model)
    if layer_range is not None:
        names = [layer.name for layer, _ in rows]
        start, end = names.index(layer_range[0]), names.index(layer_range[1]) + 1
        rows = rows[start:end]
    if expand_nested:   # each nested model's layers under it (Keras's rows)
        rows = _expanded(rows)
    box = _BOX if _can_encode("".join(_BOX.values())) else _ASCII

    def rule(kind):
        left, fill, cross, right = box[kind]
        return left + cross.join(fill * (w + 2) for w in widths) + right

    def line(cells, kind, align):
        wrapped = [textwrap.wrap(c, w) or [""] for c, w in zip(cells, widths)]
        height = max(len(c) for c in wrapped)
        out = []
        for i in range(height):
            parts = []
            for j, (c, w) in enumerate(zip(wrapped, widths)):
                text = c[i] if i < len(c) else ""
                parts.append(text.rjust(w) if align[j] == "r" else text.center(w) if align[j] == "c" else text.ljust(w))
            out.append(box[kind][0] + " " + (" " + box[kind][1] + " ").join(parts) + " " + box[kind][1])
        return out

    align = ["l", "l", "r", "l", "l"]
    lines = [f'Model: "{model.name}"', rule("top")] + line(headers, "head", align) + [rule("mid")]
    if show_trainable:
        align.insert(len(headers) - 1, "c")
    for k, (layer, row) in enumerate(rows):
        name, shape, params, connected = row
        if box is _ASCII:   # (a stream that cannot print the box characters cannot print the nested rows' mark)
            name = name.replace("└", "+")
        cells = [name, shape, params]
        if not sequential_like:
            extra = connected[1:]
            cells.append(connected[0])
        if show_trainable:   # (Keras's marks: '-' for a layer without weights)
            cells.append(("Y" if layer.trainable else "N") if layer.weights else "-")
        lines += line(cells, "row", align)
        if not sequential_like:
            for c in extra:
                lines += line(["", "", "", c] + (["" ] if show_trainable else []), "row", align)
        if k < len(rows) - 1:
            lines.append(rule("sep"))
    lines.append(rule("bottom"))
    train_n, train_b = _weights_size(model.trainable_weights)
    non_n, non_b = _weights_size(model.non_trainable_weights)
    # as Keras: a built optimizer's variables (its iteration count and learning rate too) are counted on
    # their own line and in the total
    opt = getattr(model, "optimizer", None)
    opt_built = opt is not None and getattr(opt, "built", False)
    opt_n, opt_b = _weights_size(opt.variables) if opt_built else (0, 0)
    total_n, total_b = train_n + non_n + opt_n, train_b + non_b + opt_b
    lines.append(f" Total params: {total_n:,} ({readable_memory_size(total_b)})")
    lines.append(f" Trainable params: {train_n:,} ({readable_memory_size(train_b)})")
    lines.append(f" Non-trainable params: {non_n:,} ({readable_memory_size(non_b)})")
    if opt_built:
        lines.append(f" Optimizer params: {opt_n:,} ({readable_memory_size(opt_b)})")
    for text in lines:
        print_fn(text)


__all__ = ["print_summary", "readable_memory_size"]

"""``plot_model`` and ``model_to_dot``: a model's layer graph as a picture, without Graphviz.

The graph (one box per layer, an arrow per connection; a layer shared by several calls is one box) is
laid out here: each layer goes on the rank one below its deepest input (longest path from the inputs),
boxes within a rank are ordered by a few barycentre sweeps (the mean position of their neighbours in the
rank above, then below) to reduce crossings, and ranks run top to bottom (rankdir='TB') or left to right
('LR'). matplotlib (an optional extra: ``pip install 'lamina[plot]'``) draws it to PNG, SVG, PDF or
JPEG, chosen by the file's extension; SVG keeps its text as text, so layer names can be searched.
``expand_nested=True`` draws the layers of nested models inside a dashed frame named after the model.
``model_to_dot`` returns the same graph in Graphviz's DOT language (a pydot graph when pydot is installed).
"""

__all__ = ["plot_model", "model_to_dot"]


# ------------------------------------------------------------------------------------------------ graph
class _Box:
    def __init__(self, key, layer, node, cluster):
        self.key, self.layer, self.node, self.cluster = key, layer, node, cluster


def _is_container(layer):
    from ..models.functional import Functional
    from ..models.sequential import Sequential
    return isinstance(layer, (Functional, Sequential))


def _calls(model):
    """[(layer, node, [sources])] in execution order and the output sources; a source is an int (the index
    of a model input) or (layer, index of the tensor among that layer call's outputs)."""
    from ..layers.core import InputLayer
    from ..models.sequential import Sequential
    if isinstance(model, Sequential):
        calls, prev = [], 0
        for layer in model.layers:
            node = layer._inbound_nodes[-1] if layer._inbound_nodes else None
            calls.append((layer, node, [prev]))
            prev = (layer, 0)
        return calls, [prev]
    inputs = {id(t): i for i, t in enumerate(model._flat_inputs)}

    def source(t):
        if id(t) in inputs:
            return inputs[id(t)]
        return (t._history[0], t._history[2])
    calls = []
    for node in model._nodes:
        if isinstance(node.layer, InputLayer):
            continue
        calls.append((node.layer, node, [source(t) for t in node.input_tensors]))
    return calls, [source(t) for t in model._flat_outputs]


def _graph(model, expand, prefix="", cluster=None, boxes=None, edges=None, clusters=None):
    """Add the model's calls to boxes/edges; return ({input index: [entry keys]}, {output index: [exit keys]})."""
    calls, outs = _calls(model)
    ends = {}       # id(layer) -> (entry keys by input index, exit keys by output index)
    entries = {}
    for layer, node, sources in calls:
        if id(layer) not in ends:
            key = f"{prefix}{layer.name}"
            if expand and _is_container(layer):
                sub = key + "/"
                clusters.append((sub, layer.name, cluster))
                ends[id(layer)] = _graph(layer, expand, sub, sub, boxes, edges, clusters)
            else:
                boxes[key] = _Box(key, layer, node, cluster)
                ends[id(layer)] = ({i: [key] for i in range(max(1, len(sources)))}, None)
        layer_in = ends[id(layer)][0]
        for position, src in enumerate(sources):
            targets = layer_in.get(position) or [k for ks in layer_in.values() for k in ks]
            if isinstance(src, int):
                entries.setdefault(src, []).extend(targets)
            else:
                for a in _exit_keys(ends, prefix, *src):
                    for b in targets:
                        edges.append((a, b))
    exits = {}
    for i, src in enumerate(outs):
        exits[i] = entries.get(src, []) if isinstance(src, int) else _exit_keys(ends, prefix, *src)
    return entries, exits


def _exit_keys(ends, prefix, layer, index):
    """The boxes that produce output `index` of a layer call (the layer's own box unless it was expanded)."""
    exits = ends[id(layer)][1]
    if exits is None:
        return [f"{prefix}{layer.name}"]
    return exits.get(index) or [k for ks in exits.values() for k in ks]


def _model_graph(model, expand_nested):
    from ..layers.core import InputLayer
    from ..models.sequential import Sequential
    if not _is_container(model):
        raise ValueError("plot_model draws Sequential and functional models (their layer graph is known); "
                         f"{type(model).__name__} '{model.name}' is a subclassed model: build it as a functional "
                         "model, or call it on a lamina.Input inside one, to plot it.")
    if not model.built:
        raise ValueError(f"This model has not yet been built. Build the model first by calling `build()` or by "
                         f"calling the model on a batch of data. Model: '{model.name}'")
    boxes, edges, clusters = {}, [], []
    entries, _ = _graph(model, expand_nested, "", None, boxes, edges, clusters)
    if isinstance(model, Sequential):
        input_layers = [model._input_layer] if model._input_layer is not None else []
    else:
        input_layers = [t._history[0] for t in model._flat_inputs]
    ordered, first = {}, []
    for i, layer in enumerate(input_layers):
        if isinstance(layer, InputLayer):
            key = f"{layer.name}"
            ordered[key] = _Box(key, layer, layer._inbound_nodes[0], None)
            first += [(key, b) for b in entries.get(i, [])]
    ordered.update(boxes)
    edges = first + edges
    seen, unique = set(), []
    for e in edges:
        if e not in seen and e[0] != e[1]:
            seen.add(e)
            unique.append(e)
    return ordered, unique, clusters


# ------------------------------------------------------------------------------------------------ labels
def _fmt_shapes(tensors):
    shapes = [tuple(t.shape) for t in tensors if hasattr(t, "shape")]
    if not shapes:
        return "?"
    text = [str(s).replace(",)", ")") for s in shapes]
    return text[0] if len(text) == 1 else "[" + ", ".join(text) + "]"


def _label(box, show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable):
    from ..layers.core import InputLayer
    layer, node = box.layer, box.node
    cls = type(layer).__name__
    lines = [f"{layer.name} ({cls})" if show_layer_names else cls]
    if show_layer_activations and hasattr(layer, "activation") and layer.activation is not None:
        act = layer.activation
        lines.append(f"Activation: {getattr(act, '_keras_name', None) or getattr(act, '__name__', str(act))}")
    if isinstance(layer, InputLayer):
        ins = outs = [node.outputs] if node is not None else []
    else:
        ins = node.input_tensors if node is not None else []
        outs = node.output_tensors if node is not None else []
    if show_shapes:
        lines.append(f"Input shape: {_fmt_shapes(ins)}")
        lines.append(f"Output shape: {_fmt_shapes(outs)}")
    if show_dtype:
        def dtypes(ts):
            names = [t.dtype.name for t in ts if hasattr(t, "dtype")]
            return names[0] if len(names) == 1 else str(names)
        lines.append(f"Input dtype: {dtypes(ins)}")
        lines.append(f"Output dtype: {dtypes(outs)}")
    if show_trainable:
        lines.append(f"Trainable: {bool(layer.trainable)}")
    return lines


# ------------------------------------------------------------------------------------------------ layout
def _ranks(keys, edges):
    """Longest-path rank of every key (sources at 0), and the keys of each rank in a crossing-reducing order."""
    preds = {k: [] for k in keys}
    succs = {k: [] for k in keys}
    for a, b in edges:
        preds[b].append(a)
        succs[a].append(b)
    indegree = {k: len(preds[k]) for k in keys}
    queue = [k for k in keys if indegree[k] == 0]
    rank = {k: 0 for k in keys}
    order = []
    while queue:
        k = queue.pop(0)
        order.append(k)
        for s in succs[k]:
            rank[s] = max(rank[s], rank[k] + 1)
            indegree[s] -= 1
            if indegree[s] == 0:
                queue.append(s)
    if len(order) != len(keys):  # a cycle cannot come from a model graph; keep what is left in key order
        order += [k for k in keys if k not in order]
    rows = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for k in order:
        rows[rank[k]].append(k)
    for _ in range(4):  # barycentre sweeps: down using predecessors, then up using successors
        for neighbours, sequence in ((preds, range(1, len(rows))), (succs, range(len(rows) - 2, -1, -1))):
            for r in sequence:
                position = {k: i for row in rows for i, k in enumerate(row)}

                def centre(k):
                    ns = [position[n] for n in neighbours[k]]
                    return sum(ns) / len(ns) if ns else position[k]
                rows[r].sort(key=centre)
    return rows


def _layout(boxes, edges, sizes, rankdir):
    """Centre (x, y) in points of every box; y grows upwards (matplotlib)."""
    rows = _ranks(list(boxes), edges)
    gap_rank, gap_box = 36.0, 18.0
    vertical = rankdir in ("TB", "BT")
    centres = {}
    offset = 0.0
    for row in rows:
        depth = max(sizes[k][1] if vertical else sizes[k][0] for k in row)
        along = [sizes[k][0] if vertical else sizes[k][1] for k in row]
        total = sum(along) + gap_box * (len(row) - 1)
        pos = -total / 2
        for k, extent in zip(row, along):
            c_across, c_rank = pos + extent / 2, offset + depth / 2
            centres[k] = (c_across, -c_rank) if vertical else (c_rank, -c_across)
            pos += extent + gap_box
        offset += depth + gap_rank
    if rankdir == "BT":
        centres = {k: (x, -y) for k, (x, y) in centres.items()}
    elif rankdir == "RL":
        centres = {k: (-x, y) for k, (x, y) in centres.items()}
    return centres


def plot_model(model, to_file="model.png", show_shapes=False, show_dtype=False, show_layer_names=False,
               rankdir="TB", expand_nested=False, dpi=200, show_layer_activations=False, show_trainable=False,
               splines="ortho", **kwargs):
    """Draw the layer graph of a Sequential or functional model to ``to_file`` (.png, .svg, .pdf, .jpg).

    Args mirror ``keras.utils.plot_model``: show_shapes / show_dtype add each layer's input and output
    shapes / dtypes; show_layer_names puts 'name (Class)' in each box (else only the class);
    rankdir 'TB' (top to bottom), 'LR' (left to right), 'BT' or 'RL'; expand_nested draws the layers of
    nested models inside a frame; dpi for raster files; show_layer_activations and show_trainable add a
    line each. ``splines`` is accepted (arrows are straight). Returns None.
    """
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"rankdir must be one of 'TB', 'LR', 'BT', 'RL'. Received: rankdir={rankdir!r}")
    unknown = set(kwargs) - {"layer_range", "show_layer_names"}
    if unknown:
        raise ValueError(f"Unrecognized keyword arguments: {sorted(unknown)}")
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plot_model needs matplotlib, which is not installed. Install it with: "
                          "pip install 'lamina[plot]'") from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

    boxes, edges, clusters = _model_graph(model, expand_nested)
    fontsize, char_w, line_h, pad = 10.0, 6.2, 13.0, 8.0
    labels = {k: _label(b, show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable)
              for k, b in boxes.items()}
    sizes = {k: (max(len(line) for line in lines) * char_w + 2 * pad, len(lines) * line_h + 2 * pad)
             for k, lines in labels.items()}
    centres = _layout(boxes, edges, sizes, rankdir)

    frames = []
    for sub, name, _parent in clusters:
        inside = [k for k in boxes if k.startswith(sub)]
        if inside:
            x0 = min(centres[k][0] - sizes[k][0] / 2 for k in inside) - 10
            x1 = max(centres[k][0] + sizes[k][0] / 2 for k in inside) + 10
            y0 = min(centres[k][1] - sizes[k][1] / 2 for k in inside) - 10
            y1 = max(centres[k][1] + sizes[k][1] / 2 for k in inside) + 10 + line_h
            frames.append((name, x0, y0, x1, y1))
    xs = [c[0] - sizes[k][0] / 2 for k, c in centres.items()] + [f[1] for f in frames]
    xe = [c[0] + sizes[k][0] / 2 for k, c in centres.items()] + [f[3] for f in frames]
    ys = [c[1] - sizes[k][1] / 2 for k, c in centres.items()] + [f[2] for f in frames]
    ye = [c[1] + sizes[k][1] / 2 for k, c in centres.items()] + [f[4] for f in frames]
    margin = 12.0
    x0, x1, y0, y1 = min(xs) - margin, max(xe) + margin, min(ys) - margin, max(ye) + margin

    with matplotlib.rc_context({"svg.fonttype": "none", "font.family": "DejaVu Sans"}):
        fig = Figure(figsize=((x1 - x0) / 72.0, (y1 - y0) / 72.0))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.axis("off")
        for name, fx0, fy0, fx1, fy1 in frames:
            ax.add_patch(Rectangle((fx0, fy0), fx1 - fx0, fy1 - fy0, fill=False, linestyle="--", linewidth=1.0,
                                   edgecolor="#666666"))
            ax.text(fx0 + 6, fy1 - 4, name, ha="left", va="top", fontsize=fontsize, style="italic")
        for k, (cx, cy) in centres.items():
            w, h = sizes[k]
            ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=4",
                                        facecolor="#dbe9f6" if boxes[k].cluster is None else "#eef5e0",
                                        edgecolor="#333333", linewidth=1.0, zorder=2))
            ax.text(cx, cy, "\n".join(labels[k]), ha="center", va="center", fontsize=fontsize,
                    linespacing=1.1, zorder=3)
        for a, b in edges:  # from the edge of one box to the edge of the next
            start, end = _edge_points(centres[a], sizes[a], centres[b], sizes[b])
            ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=10, linewidth=1.0,
                                         color="#333333", shrinkA=0, shrinkB=0, zorder=1))
        from ..plotting import save_figure
        save_figure(fig, to_file, dpi=dpi)
    return None


def _edge_points(ca, sa, cb, sb):
    """Where the segment between two box centres leaves box a and enters box b."""
    def boundary(c, s, towards):
        dx, dy = towards[0] - c[0], towards[1] - c[1]
        if dx == 0 and dy == 0:
            return c
        scale = min((s[0] / 2) / abs(dx) if dx else float("inf"), (s[1] / 2) / abs(dy) if dy else float("inf"))
        return (c[0] + dx * scale, c[1] + dy * scale)
    return boundary(ca, sa, cb), boundary(cb, sb, ca)


class _Dot:
    """The DOT text of a graph (what model_to_dot returns when pydot is not installed): ``to_string()``."""

    def __init__(self, text):
        self.text = text

    def to_string(self):
        return self.text

    def __str__(self):
        return self.text


def model_to_dot(model, show_shapes=False, show_dtype=False, show_layer_names=True, rankdir="TB",
                 expand_nested=False, dpi=200, subgraph=False, show_layer_activations=False,
                 show_trainable=False, **kwargs):
    """The layer graph in Graphviz's DOT language: a ``pydot.Dot`` when pydot is installed, else an object
    whose ``to_string()`` is the DOT source (render it with any Graphviz, or use plot_model, which needs none)."""
    boxes, edges, clusters = _model_graph(model, expand_nested)

    def quote(s):
        return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines = [f"digraph {quote(model.name)} {{", f"  graph [rankdir={rankdir}, dpi={int(dpi)}];",
             "  node [shape=record];"]
    for k, b in boxes.items():
        text = "\\n".join(_label(b, show_shapes, show_dtype, show_layer_names, show_layer_activations,
                                 show_trainable))
        lines.append(f"  {quote(k)} [label={quote(text)}];")
    for a, b in edges:
        lines.append(f"  {quote(a)} -> {quote(b)};")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    try:
        import pydot
    except ImportError:
        return _Dot(text)
    graphs = pydot.graph_from_dot_data(text)
    return graphs[0] if graphs else _Dot(text)

"""Side-by-side benchmarks of lamina and PyTorch on the workloads of shared/bench/WORKLOADS.md."""


def save_json(path, obj, indent=1):
    """Write a results table as JSON through lamina.io.formats.atomic_write: a run killed while writing leaves
    the previous file whole (these files are the ones bench/README.md cites)."""
    import json
    import os

    from lamina.io.formats import atomic_write
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=indent).encode())

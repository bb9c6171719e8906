"""Exporting models to other runtimes: ``model.export(path, format="onnx")`` (lamina.export.onnx)."""
from .. import registry

__all__ = ["export_model"]


def export_model(model, filepath, format="onnx", **kwargs):
    """Write model to filepath in `format` ('onnx'). Returns the path."""
    if format == "onnx":
        from .onnx import export_onnx
        return export_onnx(model, filepath, **kwargs)
    raise ValueError(f"Unrecognized format={format!r}. lamina exports format='onnx'.")


registry.EXPORTERS["onnx"] = export_model

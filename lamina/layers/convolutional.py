"""(placeholder: these layers are being written)"""
__all__ = []

"""Readers and writers for weight files other frameworks export (Keras, PyTorch, safetensors, ONNX).

Every reader treats its file as untrusted: no pickle is ever executed, archive member names are never used as
paths, and a damaged file raises ``ValueError`` naming the file.
"""
from fastconv.formats.onnx_import import load_onnx

__all__ = ["load_onnx"]

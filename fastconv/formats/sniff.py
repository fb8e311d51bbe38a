"""Which format a weight or model file is in, from its content (its name can lie or be missing)."""
import json
import os
import struct
import zipfile

from fastconv.formats.keras_h5 import is_hdf5

__all__ = ["detect", "FORMAT_NAMES"]

FORMAT_NAMES = {
    "fastconv": "a fastconv model or weights file",
    "keras_archive": "a Keras 3 .keras archive",
    "hdf5": "a Keras HDF5 file (.h5 or .weights.h5)",
    "torch_zip": "a PyTorch file saved with torch.save (zip format)",
    "torch_legacy": "a pickle (the format of PyTorch's legacy torch.save, which fastconv never unpickles)",
    "safetensors": "a safetensors file",
    "onnx": "an ONNX model",
}
_PICKLE_PROTOCOL_OPCODE = 0x80
_ONNX_IR_VERSION_TAG = 0x08  # ModelProto field 1 (ir_version), varint: the first byte every exporter writes


def _zip_kind(path, description):
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "config.json" in names and "model.weights.h5" in names:
                return "keras_archive"
            if any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
                return "torch_zip"
            if "config.json" in names:
                with zf.open("config.json") as member:
                    head = member.read(1 << 20)
                try:
                    config = json.loads(head)
                except ValueError:
                    config = None
                if isinstance(config, dict) and str(config.get("format", "")).startswith("fastconv."):
                    return "fastconv"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{description} looks like a zip archive but cannot be read ({exc})") from None
    raise ValueError(f"{description} is a zip archive but not one fastconv reads (a fastconv file, a Keras "
                     f".keras archive or a torch.save file); its members are {names[:8]}")


def _is_safetensors(head, size):
    if len(head) < 10:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def detect(path):
    """The format key (see ``FORMAT_NAMES``) of the file at ``path``.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the content is none of the formats fastconv reads.
    """
    path = os.fspath(path)
    description = f"filepath={path!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file; received {description}")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8200)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(path, description)
    if is_hdf5(head):
        return "hdf5"
    if _is_safetensors(head, size):
        return "safetensors"
    if head[:1] == bytes([_PICKLE_PROTOCOL_OPCODE]):
        return "torch_legacy"
    if head[:1] == bytes([_ONNX_IR_VERSION_TAG]):
        return "onnx"
    raise ValueError(f"{description} is not a format fastconv reads ({'; '.join(FORMAT_NAMES.values())}); it "
                     f"starts with {head[:8]!r}")

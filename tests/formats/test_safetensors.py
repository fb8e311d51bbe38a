"""fastconv.formats.safetensors: reading and writing the safetensors format with NumPy alone.

Checked against byte layouts written by hand here, the byte vectors of the reference implementation's own tests,
and (when it is installed) the ``safetensors`` package itself, in both directions.
"""
import json
import os
import struct

import numpy as np
import pytest

from fastconv.formats.safetensors import read_safetensors, write_safetensors

ALL_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32,
              np.uint16, np.uint8, np.bool_]


def build(header, data=b"", pad=True):
    """A safetensors file's bytes from a header (dict or raw bytes) and the data section."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def sample_arrays(rng):
    arrays = {}
    for dtype in ALL_DTYPES:
        name = np.dtype(dtype).name
        if dtype is np.bool_:
            arrays[name] = rng.integers(0, 2, size=(2, 3)).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arrays[name] = rng.integers(info.min, info.max, size=(3, 2), dtype=dtype, endpoint=True)
        else:
            arrays[name] = rng.standard_normal((2, 2, 3)).astype(dtype)
    arrays["scalar"] = np.array(2.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 4), dtype=np.float32)
    return arrays


# --- the reference implementation's byte layout ------------------------------------------------------------
# From the reference implementation's serialisation tests: one F32 tensor "attn.0" of shape (1, 2, 3) holding
# 0..5, and an empty file with metadata {"framework": "pt"}.
REFERENCE_TENSOR = bytes([
    64, 0, 0, 0, 0, 0, 0, 0, 123, 34, 97, 116, 116, 110, 46, 48, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58,
    34, 70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 49, 44, 50, 44, 51, 93, 44, 34, 100, 97, 116, 97,
    95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 50, 52, 93, 125, 125, 0, 0, 0, 0, 0, 0, 128, 63, 0, 0,
    0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64])
REFERENCE_METADATA_ONLY = bytes([
    40, 0, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58, 123, 34, 102, 114,
    97, 109, 101, 119, 111, 114, 107, 34, 58, 34, 112, 116, 34, 125, 125, 32, 32, 32, 32, 32])
REFERENCE_EMPTY = bytes([8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32])


def test_writes_the_reference_byte_layout(tmp_path):
    path = tmp_path / "attn.safetensors"
    write_safetensors(path, {"attn.0": np.arange(6, dtype=np.float32).reshape(1, 2, 3)})
    assert path.read_bytes() == REFERENCE_TENSOR
    write_safetensors(path, {}, metadata={"framework": "pt"})
    assert path.read_bytes() == REFERENCE_METADATA_ONLY
    write_safetensors(path, {})
    assert path.read_bytes() == REFERENCE_EMPTY


def test_reads_the_reference_byte_layout(tmp_path):
    path = tmp_path / "attn.safetensors"
    path.write_bytes(REFERENCE_TENSOR)
    arrays = read_safetensors(path)
    assert list(arrays) == ["attn.0"]
    np.testing.assert_array_equal(arrays["attn.0"], np.arange(6, dtype=np.float32).reshape(1, 2, 3))
    path.write_bytes(REFERENCE_METADATA_ONLY)
    assert read_safetensors(path) == {}


# --- round trips and hand-written files --------------------------------------------------------------------
def test_round_trip_every_dtype(tmp_path, rng):
    arrays = sample_arrays(rng)
    path = tmp_path / "all.safetensors"
    write_safetensors(path, arrays, metadata={"format": "np", "note": "é"})
    back = read_safetensors(path)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        np.testing.assert_array_equal(back[name], array, err_msg=name)
        assert back[name].flags.writeable and back[name].dtype.isnative


def test_layout_is_by_item_size_then_given_order(tmp_path):
    arrays = {"b32": np.ones(3, np.float32), "a8": np.ones(1, np.uint8), "c64": np.ones(1, np.int64),
              "d32": np.ones(1, np.int32), "e16": np.ones(1, np.float16), "f64": np.ones(2, np.float64)}
    path = tmp_path / "order.safetensors"
    write_safetensors(path, arrays)
    assert list(read_safetensors(path)) == ["c64", "f64", "b32", "d32", "e16", "a8"]
    same_size = {f"layer{i}.{p}": np.full(i + 1, i, np.float32) for i in (3, 1, 2) for p in ("weight", "bias")}
    write_safetensors(path, same_size)
    assert list(read_safetensors(path)) == list(same_size)


def test_writer_converts_byte_order_and_layout(tmp_path):
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    arrays = {"big": base.astype(">f4"), "strided": base[:, ::2], "transposed": base.T}
    path = tmp_path / "converted.safetensors"
    write_safetensors(path, arrays)
    back = read_safetensors(path)
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
    assert back["big"].dtype == np.float32


def test_hand_written_file_in_offset_order_with_bf16_and_bool(tmp_path):
    bf16 = np.array([1.0, -2.5, 3.140625], dtype=np.float32).view(np.uint32) >> 16  # exactly representable
    data = (np.array([7], "<i8").tobytes() + bf16.astype("<u2").tobytes() + bytes([0, 1, 2]))
    header = {"flags": {"dtype": "BOOL", "shape": [3], "data_offsets": [14, 17]},
              "__metadata__": {"anything": "ignored"},
              "bf": {"dtype": "BF16", "shape": [3], "data_offsets": [8, 14]},
              "step": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}
    path = tmp_path / "hand.safetensors"
    path.write_bytes(build(header, data))
    arrays = read_safetensors(path)
    assert list(arrays) == ["step", "bf", "flags"]
    assert arrays["step"].shape == () and arrays["step"] == 7
    np.testing.assert_array_equal(arrays["bf"], np.array([1.0, -2.5, 3.140625], np.float32))
    assert arrays["bf"].dtype == np.float32
    np.testing.assert_array_equal(arrays["flags"], [False, True, True])


def test_empty_tensors_at_shared_offsets(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "c": {"dtype": "I8", "shape": [2, 0], "data_offsets": [4, 4]}}
    path = tmp_path / "empty.safetensors"
    path.write_bytes(build(header, np.array([5], "<f4").tobytes()))
    arrays = read_safetensors(path)
    assert list(arrays) == ["a", "b", "c"]
    assert arrays["a"].shape == (0,) and arrays["c"].shape == (2, 0) and arrays["b"][0] == 5


# --- malformed files ---------------------------------------------------------------------------------------
F32_1 = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
MALFORMED = {
    "short": (b"\x01\x00", "fewer than the 8"),
    "length_past_end": (struct.pack("<Q", 1000) + b"{}", "header length 1000"),
    "length_huge": (struct.pack("<Q", 2 ** 62) + b"{}", "header length"),
    "not_utf8": (build(b"\xff\xfe{}"), "UnicodeDecodeError"),
    "not_json": (build(b"{'a': 1}"), "JSONDecodeError"),
    "array": (build(b"[1, 2]"), "not an object"),
    "duplicate": (build(b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', b"\0" * 4),
                  "twice"),
    "nan": (build(b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}', b"\0" * 4), "NaN"),
    "missing_field": (build({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4), "needs dtype, shape"),
    "fp8": (build({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"), "F8_E4M3"),
    "shape_negative": (build({"a": dict(F32_1, shape=[-1])}, b"\0" * 4), "invalid shape"),
    "shape_float": (build({"a": dict(F32_1, shape=[1.0])}, b"\0" * 4), "invalid shape"),
    "shape_bool": (build({"a": dict(F32_1, shape=[True])}, b"\0" * 4), "invalid shape"),
    "shape_string": (build({"a": dict(F32_1, shape="1")}, b"\0" * 4), "invalid shape"),
    "offsets_three": (build({"a": dict(F32_1, data_offsets=[0, 2, 4])}, b"\0" * 4), "invalid data_offsets"),
    "offsets_reversed": (build({"a": dict(F32_1, data_offsets=[4, 0])}, b"\0" * 4), "invalid data_offsets"),
    "offsets_vs_shape": (build({"a": dict(F32_1, shape=[2])}, b"\0" * 4), "needs 8 bytes"),
    "overlap": (build({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                       "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8), "overlaps"),
    "gap": (build({"a": dict(F32_1, data_offsets=[4, 8])}, b"\0" * 8), "gap of 4 bytes"),
    "past_end": (build({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), "ends at byte"),
    "trailing": (build({"a": F32_1}, b"\0" * 6), "2 bytes after"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_value_error_naming_the_file(tmp_path, case):
    data, message = MALFORMED[case]
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=message) as info:
        read_safetensors(path)
    assert f"{case}.safetensors" in str(info.value)


def test_truncated_and_flipped_files_raise_only_value_error(tmp_path, rng):
    path = tmp_path / "good.safetensors"
    write_safetensors(path, sample_arrays(rng))
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for length in list(range(0, len(data), 3)) + list(range(len(data) - 20, len(data))):
        cut.write_bytes(data[:length])
        with pytest.raises(ValueError, match="cut.safetensors"):
            read_safetensors(cut)
    header_bits = (8 + struct.unpack("<Q", data[:8])[0]) * 8
    flipped = tmp_path / "flipped.safetensors"
    for bit in rng.choice(header_bits, size=300, replace=False):
        damaged = bytearray(data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        flipped.write_bytes(bytes(damaged))
        try:
            result = read_safetensors(flipped)
        except ValueError:
            continue
        assert isinstance(result, dict)  # a flip in a name or in padding can leave a valid file


def test_path_argument_is_checked(tmp_path):
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        read_safetensors(3)
    with pytest.raises(FileNotFoundError):
        read_safetensors(tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="path must be"):
        write_safetensors(None, {})


# --- writer argument checks --------------------------------------------------------------------------------
@pytest.mark.parametrize("arrays, metadata, error, message", [
    ([np.ones(2)], None, TypeError, "arrays must be a mapping"),
    ({1: np.ones(2)}, None, TypeError, "str names"),
    ({"": np.ones(2)}, None, ValueError, "non-empty"),
    ({"__metadata__": np.ones(2)}, None, ValueError, "__metadata__"),
    ({"a": np.array(["x"])}, None, TypeError, r"arrays\['a'\] has dtype <U1"),
    ({"a": np.ones(2, complex)}, None, TypeError, "complex128"),
    ({"a": np.array([object()])}, None, TypeError, "dtype object"),
    ({"a": np.ones(2)}, {"k": 1}, TypeError, "metadata must be a mapping of str to str"),
    ({"a": np.ones(2)}, ["k"], TypeError, "metadata must be"),
])
def test_writer_rejects_bad_arguments_and_leaves_the_old_file(tmp_path, arrays, metadata, error, message):
    path = tmp_path / "kept.safetensors"
    write_safetensors(path, {"old": np.zeros(1, np.float32)})
    before = path.read_bytes()
    with pytest.raises(error, match=message):
        write_safetensors(path, arrays, metadata)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["kept.safetensors"]  # no temporary file left behind


# --- the safetensors package, both directions --------------------------------------------------------------
def test_files_from_the_safetensors_package(tmp_path, rng):
    st_numpy = pytest.importorskip("safetensors.numpy")
    arrays = sample_arrays(rng)
    path = tmp_path / "theirs.safetensors"
    st_numpy.save_file(arrays, str(path), metadata={"framework": "np"})
    back = read_safetensors(path)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype, name
        np.testing.assert_array_equal(back[name], array, err_msg=name)


def test_files_for_the_safetensors_package(tmp_path, rng):
    safetensors = pytest.importorskip("safetensors")
    st_numpy = pytest.importorskip("safetensors.numpy")
    arrays = sample_arrays(rng)
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, arrays, metadata={"framework": "np", "source": "fastconv"})
    back = st_numpy.load_file(str(path))
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype, name
        np.testing.assert_array_equal(back[name], array, err_msg=name)
    with safetensors.safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"framework": "np", "source": "fastconv"}


def test_torch_files_both_ways(tmp_path, torch):
    st_torch = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(0)
    tensors = {"w": torch.randn(3, 2, generator=g), "bf": torch.randn(4, generator=g).bfloat16(),
               "h": torch.randn(2, generator=g).half(), "n": torch.tensor(5), "mask": torch.tensor([True, False])}
    theirs = tmp_path / "torch.safetensors"
    st_torch.save_file(tensors, str(theirs))
    back = read_safetensors(theirs)
    for name, t in tensors.items():
        expected = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert back[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(back[name], expected, err_msg=name)
    ours = tmp_path / "ours.safetensors"
    write_safetensors(ours, back)
    loaded = st_torch.load_file(str(ours))
    for name, array in back.items():
        np.testing.assert_array_equal(loaded[name].numpy(), array, err_msg=name)

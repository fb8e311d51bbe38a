"""Hand-made hostile files, one per known attack on a file reader, opened in the fuzz sandbox.

Random mutation rarely builds a working exploit, so each attack is written out here: pickles that would create
a sentinel file, HDF5 links and datasets that point into other files (aimed at a FIFO, so that merely opening it
would hang the reader), declared sizes far beyond the bytes present, containers that expand (zip bombs, storages
rebuilt over and over, decompression bombs), nesting that exhausts the stack, and archive members named to
escape. Every case runs in the sandboxed worker of ``_hostile_harness.py`` (so a crash, a hang, a write, an
unpickling or a sentinel fails it) and must be refused with the reason in the message. The harness itself is
checked first, with readers that break each promise on purpose.
"""
import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

pytest.importorskip("hypothesis")  # the payload builders live with the fuzz strategies
import _hostile_mutations as mutations  # noqa: E402
from _hostile_harness import Harness, Violation  # noqa: E402
from _hostile_targets import CORPUS, READERS, SELF_TEST_READERS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    harness = Harness(tmp_path_factory.mktemp("hostile-crafted"), timeout=30)
    outside = os.path.join(harness.sandbox, "outside")  # files a hostile file points to; never to be opened
    os.makedirs(outside)
    os.mkfifo(os.path.join(outside, "secret.fifo"))
    harness.outside = outside
    yield harness
    harness.close()


def seed(name):
    with open(os.path.join(CORPUS, name), "rb") as f:
        return f.read()


def refused(harness, reader_name, data, pattern):
    """Run ``data`` through the reader in the sandbox: it must be refused with a message matching ``pattern``."""
    outcome = harness.run(READERS[reader_name], data)
    assert outcome != "ok", f"{reader_name} loaded a hostile file"
    message = harness.last_answer["message"]
    assert re.search(pattern, message), message
    return message


def rezip(data, replace=None, add=(), compression=zipfile.ZIP_STORED):
    """A zip archive's bytes with members replaced (name -> bytes) or added ((name, bytes) pairs)."""
    replace = dict(replace or {})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", compression=compression) as target:
        for info in source.infolist():
            target.writestr(info.filename, replace.get(info.filename, source.read(info)))
        for name, content in add:
            target.writestr(name, content)
    return out.getvalue()


# --- the harness catches each broken promise -----------------------------------------------------------------
@pytest.mark.parametrize("name, data, what", [
    ("selftest_unpickles", "PAYLOAD", r"sentinel file was created.*os\.system"),
    ("selftest_aborts", b"x", r"crashed.*SIGABRT"),
    ("selftest_hangs", b"x", r"did not answer within"),
    ("selftest_writes", b"x", r"forbidden actions.*open for writing"),
    ("selftest_type_error", b"x", r"raised TypeError, which is not among the allowed"),
    ("selftest_nameless_error", b"x", r"does not name the file"),
])
def test_the_harness_catches_every_broken_promise(tmp_path, name, data, what):
    harness = Harness(tmp_path, timeout=3)
    try:
        if data == "PAYLOAD":
            data = mutations.pickle_payloads(harness.sentinel)[0]
        with pytest.raises(Violation, match=what):
            harness.run(SELF_TEST_READERS[name], data)
        assert not os.path.exists(harness.sentinel)  # the harness removes a sentinel it finds
    finally:
        harness.close()


# --- pickles ---------------------------------------------------------------------------------------------------
def test_pickle_payloads_never_run_in_any_container(sandbox):
    pytest.importorskip("h5py")
    for payload in mutations.pickle_payloads(sandbox.sentinel):
        torch_file = rezip(seed("torch_state_dict.pt"), {"torch_state_dict/data.pkl": payload})
        refused(sandbox, "torch_zip", torch_file, r"refused (to load )?the (global (posix|os|builtins)\.|GLOBAL)")
        refused(sandbox, "torch_zip", payload, r"bare pickle, which fastconv never unpickles|not a zip archive")
        refused(sandbox, "fastconv_weights", payload, r"never unpickles")                # model.load_weights
        refused(sandbox, "fastconv_model", payload, r"never unpickles")                  # fastconv.load_model
    # an object array inside a fastconv file, whose data is the payload: np.load(allow_pickle=True) would run it
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    member = header.getvalue() + mutations.pickle_payloads(sandbox.sentinel)[2]
    evil = rezip(seed("fastconv_weights.fcw"), {"weights/conv2d/kernel.npy": member})
    refused(sandbox, "fastconv_weights", evil, r"never unpickles \(allow_pickle=False\)")


def test_keras_configs_cannot_name_code(sandbox):
    pytest.importorskip("h5py")
    data = seed("keras_model.keras")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        config = json.loads(zf.read("config.json"))
    lambda_layer = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                    "config": {"name": "evil", "function": {"class_name": "__lambda__", "config": {
                        "code": "4wEAAAAAAAAAAAAAAAEAAAADAAAA8wgAAACXAHwAUwApAU6pAKkB2gF4cwEAAAAg+gg8c3Ry"
                                "aW5nPvoIPGxhbWJkYT5yBQAAAAEAAABzBgAAAIAAkFGAAHIDAAAA",
                        "defaults": None, "closure": None}}}}  # a marshalled lambda, as Keras stores one
    config["config"]["layers"].insert(2, lambda_layer)
    refused(sandbox, "keras_archive", rezip(data, {"config.json": json.dumps(config).encode()}),
            r"no layer class 'Lambda'")
    config["config"]["layers"][2] = {"module": "os", "class_name": "system", "config": {"command": "touch x"}}
    refused(sandbox, "keras_archive", rezip(data, {"config.json": json.dumps(config).encode()}),
            r"no layer class 'system'")


# --- HDF5: nothing outside the file ---------------------------------------------------------------------------
def edit_h5(data, edit):
    h5py = pytest.importorskip("h5py")
    buffer = io.BytesIO(data)
    with h5py.File(buffer, "r+") as f:
        edit(f, h5py)
    return buffer.getvalue()


def test_hdf5_data_and_links_into_other_files_are_refused(sandbox):
    pytest.importorskip("h5py")
    fifo = os.path.join(sandbox.outside, "secret.fifo")
    other = os.path.join(sandbox.outside, "other.h5")
    with open(other, "wb") as f:
        f.write(seed("fastconv_legacy.h5"))
    legacy = seed("fastconv_legacy.h5")
    kernel = "dense/dense/kernel"

    def external_storage(f, h5py):
        del f[kernel]
        f.create_dataset(kernel, shape=(8, 3), dtype="<f4", external=[(fifo, 0, 96)])

    def external_link(f, h5py):
        del f["dense"]
        f["dense"] = h5py.ExternalLink(other, "/dense")

    def soft_link(f, h5py):
        del f["dense"]
        f["dense"] = h5py.SoftLink("/conv2d")

    def virtual(f, h5py):
        del f[kernel]
        layout = h5py.VirtualLayout(shape=(8, 3), dtype="<f4")
        layout[:] = h5py.VirtualSource(other, kernel, shape=(8, 3))
        f.create_virtual_dataset(kernel, layout)

    refused(sandbox, "keras_h5_legacy_weights", edit_h5(legacy, external_storage), r"keeps its data in other files")
    refused(sandbox, "keras_h5_legacy_weights", edit_h5(legacy, external_link), r"/dense is an HDF5 ExternalLink")
    refused(sandbox, "keras_h5_legacy_weights", edit_h5(legacy, soft_link), r"/dense is an HDF5 SoftLink")
    refused(sandbox, "keras_h5_legacy_weights", edit_h5(legacy, virtual), r"keeps its data in other files")

    def keras3_external_link(f, h5py):
        del f["layers/dense"]
        f["layers/dense"] = h5py.ExternalLink(fifo, "/")

    refused(sandbox, "keras3_weights_h5", edit_h5(seed("keras_weights.weights.h5"), keras3_external_link),
            r"ExternalLink")


def test_hdf5_shared_objects_cycles_and_repeated_names_are_refused(sandbox):
    def shared_dataset(f, h5py):
        del f["dense/dense/bias"]
        f["dense/dense/bias"] = f["conv2d/conv2d/bias"]  # a second hard link to one dataset

    def cycle(f, h5py):
        f["layers/dense/loop"] = f["/"]  # the tree contains itself: endless reading without the check

    def repeated_layer_names(f, h5py):
        f.attrs["layer_names"] = np.array([b"conv2d"] * 3 + [b"dense"], dtype="S")

    legacy = seed("fastconv_legacy.h5")
    refused(sandbox, "keras_h5_legacy_weights", edit_h5(legacy, shared_dataset), r"reached through several links")
    refused(sandbox, "keras3_weights_h5", edit_h5(seed("keras_weights.weights.h5"), cycle),
            r"reached through several links")
    refused(sandbox, "keras_h5_legacy_weights", edit_h5(legacy, repeated_layer_names), r"lists a layer twice")


def test_hdf5_attribute_types_keras_never_writes_are_refused_unread(sandbox):
    """Found by the long fuzz: one byte that turns a variable-length string attribute into a variable-length
    type of no valid kind makes libhdf5 2.0 (h5py 3.16) crash reading it. fastconv reads an attribute only once
    its type class is one Keras writes (string, integer, float)."""
    data = bytearray(seed("fastconv_keras3.weights.h5"))
    at = data.index(b"name\0\0\0\0\x19") + 9  # a vars group's "name" attribute: its datatype's VLEN kind
    assert data[at] == 1  # 1: string
    data[at] = 3  # no such kind
    refused(sandbox, "keras3_weights_h5", bytes(data), r"attribute 'name' of /vars has an HDF5 type \(class 9\)")

    def compound_name(f, h5py):
        f["layers/dense/vars"].attrs["name"] = np.zeros(1, dtype=[("a", "<i4"), ("b", "<f4")])

    refused(sandbox, "keras3_weights_h5", edit_h5(seed("keras_weights.weights.h5"), compound_name),
            r"attribute 'name' of /layers/dense/vars has an HDF5 type \(class 6\)")


def test_global_heap_collections_that_would_stall_libhdf5_are_refused(sandbox):
    """Found by the long fuzz: a global heap collection (where variable-length strings live) declaring a
    zero-size free-space object makes libhdf5 (1.14 and 2.0) loop forever inside H5Aread. fastconv walks the
    collections itself, by libhdf5's rule, before h5py opens the file (fastconv/formats/hdf5_heaps.py)."""
    pytest.importorskip("h5py")
    with open(os.path.join(HERE, "regressions", "libhdf5_vlen_string_attribute_loops.h5"), "rb") as f:
        found = f.read()
    refused(sandbox, "keras_h5_legacy_model", found, r"global heap collection at byte 6960 declares an empty object")

    # the same damage made by hand in a Keras 3 weights file: the first heap object's size becomes 0
    data = bytearray(seed("keras_weights.weights.h5"))
    heap = data.index(b"GCOL\x01\0\0\0")
    first = heap + 16
    assert struct.unpack_from("<H", data, first)[0] == 1
    data[first:first + 2] = b"\0\0"  # index 0: free space, whose size (now the object's) is its whole step ...
    data[first + 8:first + 16] = bytes(8)  # ... and is 0
    refused(sandbox, "keras3_weights_h5", bytes(data), rf"global heap collection at byte {heap} declares an empty")
    refused(sandbox, "keras_archive", rezip(seed("keras_model.keras"), {"model.weights.h5": bytes(data)}),
            r"model\.weights\.h5\) is damaged: the global heap collection")


def test_a_config_cannot_allocate_far_more_weights_than_the_file_holds(sandbox):
    """A model config is built (its weights created) before the file's arrays are compared with it: a forged
    config declaring a huge layer is refused before that layer's weights are allocated."""
    data = seed("fastconv_model.fcm")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        config = json.loads(zf.read("config.json"))
    layers = config["model"]["config"]["layers"]
    conv = next(layer for layer in layers if layer["class_name"] == "Conv2D")
    conv["config"]["filters"] = 50_000_000  # 1.8 GB of float32 kernel for a file of a few KiB
    refused(sandbox, "fastconv_model", rezip(data, {"config.json": json.dumps(config).encode()}),
            r"declares weight '.*kernel' of shape \(3, 3, \d+, 50000000\), more than the file's weight data")


# --- declared sizes beyond the bytes present --------------------------------------------------------------------
def test_declared_sizes_larger_than_the_file_are_refused_before_allocating(sandbox):
    def huge_dataset(f, h5py):  # 4 TiB declared, nothing stored: reading it would allocate (and fill) it all
        del f["dense/dense/kernel"]
        f.create_dataset("dense/dense/kernel", shape=(1 << 20, 1 << 20), dtype="<f4", chunks=(64, 64))

    refused(sandbox, "keras_h5_legacy_weights", edit_h5(seed("fastconv_legacy.h5"), huge_dataset),
            r"declares shape \(1048576, 1048576\).*stores 0 bytes")

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    npy = header.getvalue() + b"\0" * 16
    refused(sandbox, "fastconv_weights", rezip(seed("fastconv_weights.fcw"), {"weights/dense/bias.npy": npy}),
            r"declares a float32 array of shape \(1099511627776,\).*holds 16 bytes")


def torch_pickle(entries):
    """A protocol-2 pickle of an OrderedDict of name -> _rebuild_tensor_v2(storage record, offset, size, stride),
    written opcode by opcode."""
    def text(value):
        raw = value.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def ints(values):
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    ordered_dict = b"ccollections\nOrderedDict\n)R"
    body = b""
    for name, (key, numel, size, stride) in entries.items():
        record = b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text(key) + text("cpu") + ints([numel])[1:-1] \
            + b"tQ"
        body += text(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + record + b"J\0\0\0\0" + ints(size) \
            + ints(stride) + b"\x89" + ordered_dict + b"tR"
    return b"\x80\x02" + ordered_dict + b"(" + body + b"u."


def test_torch_storages_rebuilt_over_and_over_are_refused(sandbox):
    # one 4-byte storage broadcast into 64 tensors of 256 MiB each: 16 GiB from a 3 KB file
    entries = {f"w{k}": ("0", 1, (1 << 26,), (0,)) for k in range(64)}
    members = {"bomb/data.pkl": torch_pickle(entries), "bomb/data/0": struct.pack("<f", 1.0),
               "bomb/byteorder": b"little"}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    refused(sandbox, "torch_zip", out.getvalue(), r"rebuilds its storages over and over")


def test_zip_bombs_are_refused_by_their_declared_size(sandbox):
    pytest.importorskip("h5py")
    spaces = b" " * (65 << 20)  # compresses to 64 KiB, expands past the 64 MiB a config may have
    config = b'{"format": "fastconv.model", "format_version": 1}' + spaces  # its first MiB passes as a config
    refused(sandbox, "fastconv_model", rezip(seed("fastconv_model.fcm"), {"config.json": config},
                                             compression=zipfile.ZIP_DEFLATED), r"declares \d+ bytes, more than")
    refused(sandbox, "keras_archive", rezip(seed("keras_model.keras"), {"config.json": spaces},
                                            compression=zipfile.ZIP_DEFLATED), r"declares \d+ bytes, more than")
    refused(sandbox, "torch_zip", rezip(seed("torch_state_dict.pt"), compression=zipfile.ZIP_DEFLATED),
            r"is compressed")


def test_deep_nesting_is_refused(sandbox):
    pytest.importorskip("h5py")
    deep = b"[" * 200_000 + b"]" * 200_000
    refused(sandbox, "fastconv_model", rezip(seed("fastconv_model.fcm"), {"config.json": deep}), r"(?i)recursion")
    refused(sandbox, "keras_archive", rezip(seed("keras_model.keras"), {"config.json": deep}), r"(?i)recursion")
    refused(sandbox, "safetensors", struct.pack("<Q", len(deep)) + deep, r"(?i)recursion")

    def deep_model_config(f, h5py):
        f.attrs["model_config"] = deep

    refused(sandbox, "keras_h5_legacy_model", edit_h5(seed("keras_legacy_model.h5"), deep_model_config),
            r"(?i)recursion")


# --- ONNX: nothing outside the file -----------------------------------------------------------------------------
def test_onnx_tensors_stored_in_other_files_are_refused_everywhere(sandbox):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    def external(tensor, location):
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        for key, value in (("location", location), ("offset", "0"), ("length", "96")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        return tensor

    fifo = os.path.join(sandbox.outside, "secret.fifo")
    base = onnx.load_from_string(seed("tiny.onnx"))
    variants = []
    for location in (fifo, os.path.relpath(fifo, os.path.join(sandbox.sandbox, "case"))):
        model = onnx.ModelProto()
        model.CopyFrom(base)
        external(model.graph.initializer[6], location)
        variants.append(model)

        model = onnx.ModelProto()
        model.CopyFrom(base)
        values = external(numpy_helper.from_array(np.ones(2, np.float32), "sparse_values"), location)
        indices = numpy_helper.from_array(np.array([0, 1], np.int64), "sparse_indices")
        model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [8]))
        variants.append(model)

        model = onnx.ModelProto()
        model.CopyFrom(base)
        weight = external(numpy_helper.from_array(np.ones((8, 3), np.float32), "branch_w"), location)
        branch = helper.make_graph([helper.make_node("Identity", ["branch_w"], ["o"])], "branch", [],
                                   [helper.make_tensor_value_info("o", TensorProto.FLOAT, [8, 3])], [weight])
        model.graph.initializer.append(numpy_helper.from_array(np.array(True), "condition"))
        model.graph.node.insert(0, helper.make_node("If", ["condition"], ["if_out"], then_branch=branch,
                                                    else_branch=branch, name="if"))
        variants.append(model)
    for model in variants:
        refused(sandbox, "onnx", model.SerializeToString(), r"is stored in an external file")


# --- archive member names ----------------------------------------------------------------------------------------
def test_member_names_that_escape_are_never_used_as_paths(sandbox):
    pytest.importorskip("h5py")
    names = ["../../../escaped.txt", "/tmp/fastconv-escaped.txt", "..\\..\\escaped.txt", "a/../../escaped.txt"]
    extra = [(name, b"x") for name in names]
    # readers that read members by their exact names ignore the extra ones (the harness checks nothing appears)
    assert sandbox.run(READERS["fastconv_model"], rezip(seed("fastconv_model.fcm"), add=extra)) == "ok"
    assert sandbox.run(READERS["keras_archive"], rezip(seed("keras_model.keras"), add=extra)) == "ok"
    # the PyTorch reader refuses them outright
    refused(sandbox, "torch_zip", rezip(seed("torch_state_dict.pt"), add=extra[:1]), r"unsafe name")
    assert not os.path.exists("/tmp/fastconv-escaped.txt")


# --- images -------------------------------------------------------------------------------------------------------
def png_header_only(width, height):
    """A PNG that declares width x height grey pixels and holds one row of them."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))
            + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_before_decoding(sandbox, tmp_path):
    pytest.importorskip("PIL")
    from fastconv.preprocessing import _pillow

    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(10_000, 10_000))  # 100 Mpx: Pillow itself only warns below 179 Mpx
    with pytest.raises(OSError, match=r"bomb\.png.*10000x10000 pixels, more than PIL\.Image\.MAX_IMAGE_PIXELS"):
        _pillow.load_image(str(path), "rgb", (8, 8), "bilinear")
    from fastconv.visualize.images import read_image

    with pytest.raises(OSError, match=r"bomb\.png.*10000x10000 pixels"):
        read_image(path)
    # and Pillow's own refusal above twice its limit reaches the caller as an OSError too, in the sandbox
    assert sandbox.run(READERS["image"], png_header_only(30_000, 30_000)) == "OSError"


# --- optional dependencies -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("module, call, advice", [
    ("h5py", "fastconv.load_model(corpus + '/keras_legacy_model.h5')", "pip install h5py"),
    ("onnx", "fastconv.load_onnx(corpus + '/tiny.onnx')", "pip install onnx"),
    ("PIL", "_pillow.load_image(corpus + '/image.jpg', 'rgb', (8, 8), 'bilinear')", "pip install Pillow"),
])
def test_a_missing_optional_dependency_is_an_import_error_that_says_what_to_install(module, call, advice):
    script = (f"import sys; sys.modules[{module!r}] = None\n"
              f"import fastconv\nfrom fastconv.preprocessing import _pillow\ncorpus = {CORPUS!r}\n"
              f"try:\n    {call}\nexcept ImportError as exc:\n    print('ImportError:', exc)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ImportError:" in result.stdout and advice in result.stdout, result.stdout

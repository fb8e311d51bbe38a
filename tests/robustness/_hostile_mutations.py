"""Hypothesis strategies that turn a valid seed file into a hostile one.

Two layers of mutation, as coverage-guided fuzzers use them:

- **bytes**: bit flips, bytes and machine words set to boundary values, truncation, insertion of random bytes
  or of tokens that matter to some parser (magic numbers, JSON and pickle fragments, a pickle that would run a
  command), deletion, and duplication or transplanting of chunks of the file itself;
- **structure**, where a checksum or a length would otherwise stop most byte mutations at the first check: a zip
  container is rebuilt around mutated members (valid CRCs, hostile member names, duplicated members, other
  compression), JSON documents (configs, the safetensors header, the ``model_config`` attribute of a Keras
  HDF5 file) get values replaced by other types, boundary numbers, deep nesting or copies of other nodes.

Shrinking works on the drawn operations, so a failure reduces to a short list of edits of one seed.
"""
import copy
import io
import json
import struct
import zipfile

from hypothesis import strategies as st

# A pickle that runs ``touch <SENTINEL>`` when unpickled with the plain pickle module (protocol 0, GLOBAL
# posix.system); the fuzz harness checks the sentinel never appears.
SENTINEL_NAME = "PWNED-by-a-fuzzed-file"


def pickle_payloads(sentinel):
    """Pickles that would create ``sentinel`` if unpickled with the standard unpickler, in several encodings."""
    command = f"touch {sentinel}".encode()
    quoted = repr(command.decode()).encode()
    return [
        b"cposix\nsystem\n(S" + quoted + b"\ntR.",
        b"cos\nsystem\n(V" + command + b"\ntR.",
        b"\x80\x02cbuiltins\nexec\nX" + struct.pack("<I", len(b"open(%r, 'w')" % sentinel.encode()))
        + b"open(%r, 'w')" % sentinel.encode() + b"\x85R.",
        # STACK_GLOBAL (protocol 4): the names come from the stack, not the opcode argument
        b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x94" + b"\x8c" + bytes([len(command)]) + command
        + b"\x85R.",
        b"(cposix\nsystem\nS" + quoted + b"\ni.",  # INST
    ]


TOKENS = [
    b"PK\x03\x04", b"PK\x05\x06", b"PK\x01\x02", b"\x89HDF\r\n\x1a\n", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff",
    b"GIF89a", b"\x80\x02", b"\x80\x04\x95", b"c__builtin__\neval\n", b"cbuiltins\ngetattr\n", b"R", b"b", b"\x93",
    b"\x82\x01", b"{", b"}", b"[", b"]", b'"', b"\\u0000", b'{"a":', b"NaN", b"Infinity", b"-1", b"1e309",
    b"999999999999999999999", b'"class_name"', b'"config"', b'"dtype"', b'"shape"', b'"data_offsets"',
    b"../../../../tmp/escape", b"/etc/passwd", b"\x00" * 16, b"\xff" * 16, b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00",
]
WORDS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
         0x7FFFFFFFFFFFFFFF, 0x8000000000000000, 0xFFFFFFFFFFFFFFFF, 1 << 20, 1 << 31, 1 << 40]
JSON_VALUES = [None, True, False, 0, -1, 1, 2, 3, 7, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63, -2**63, 10**30, 0.5,
               -0.0, 1e308, float("nan"), float("inf"), "", "x" * 300, "float16", "channels_first", "same",
               "../../escape", "__import__('os').system('true')", "Lambda", "Sequential", [], {}, [None], [0, 0],
               [-1, 1], [1, 2, 3], {"class_name": None}, {"class_name": "Lambda", "config": {"function": "x"}}]

_positions = st.integers(min_value=0, max_value=2**31)


def _at(data, position, extra=0):
    return position % (len(data) + extra) if len(data) + extra else 0


@st.composite
def byte_edit(draw, payloads=()):
    """One byte-level edit, as a function of a bytearray."""
    kind = draw(st.sampled_from(["flip", "byte", "word", "truncate", "insert", "token", "delete", "duplicate",
                                 "transplant"]))
    p, q = draw(_positions), draw(_positions)
    if kind == "flip":
        bit = draw(st.integers(0, 7))

        def edit(d):
            if d:
                d[_at(d, p)] ^= 1 << bit
    elif kind == "byte":
        value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFE, 0xFF]) | st.integers(0, 255))

        def edit(d):
            if d:
                d[_at(d, p)] = value
    elif kind == "word":
        width = draw(st.sampled_from([2, 4, 8]))
        order = draw(st.sampled_from(["<", ">"]))
        value = draw(st.sampled_from(WORDS)) % (1 << (8 * width))
        packed = value.to_bytes(width, "little" if order == "<" else "big")

        def edit(d):
            if len(d) >= width:
                i = _at(d, p) % (len(d) - width + 1)
                d[i:i + width] = packed
    elif kind == "truncate":
        def edit(d):
            del d[_at(d, p):]
    elif kind in ("insert", "token"):
        blob = (draw(st.binary(min_size=1, max_size=64)) if kind == "insert"
                else draw(st.sampled_from(TOKENS + list(payloads))))

        def edit(d):
            i = _at(d, p, 1)
            d[i:i] = blob
    elif kind == "delete":
        length = draw(st.integers(1, 256))

        def edit(d):
            i = _at(d, p)
            del d[i:i + length]
    else:  # duplicate (insert a copy of a chunk elsewhere) or transplant (overwrite with it)
        length = draw(st.integers(1, 512))

        def edit(d):
            if not d:
                return
            i = _at(d, p)
            chunk = bytes(d[i:i + length])
            j = _at(d, q, 1)
            if kind == "duplicate":
                d[j:j] = chunk
            else:
                d[j:j + len(chunk)] = chunk
    edit.kind = kind
    return edit


def mutate_bytes(draw, data, payloads=(), max_edits=8):
    edits = draw(st.lists(byte_edit(payloads), min_size=1, max_size=max_edits))
    out = bytearray(data)
    for edit in edits:
        edit(out)
    return bytes(out)


# --- JSON ---------------------------------------------------------------------------------------------------
def _nodes(obj, path=()):
    yield path
    if len(path) > 64:  # a document an earlier edit nested deeply: do not walk all of it
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _deep(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


def _paths(doc, limit=50_000):
    """The first ``limit`` paths of a document (edits copy subtrees, so documents can grow large)."""
    paths = []
    for path in _nodes(doc):
        paths.append(path)
        if len(paths) >= limit:
            break
    return paths


def _copy(value):
    """A private copy of a JSON value: no two places of a document, nor two examples, may share a list or dict
    (an edit of one would change the others, and an object could end up containing itself)."""
    return copy.deepcopy(value)


@st.composite
def json_edit(draw):
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "copy", "rename", "deep", "grow"]))
    p, q = draw(_positions), draw(_positions)
    value = draw(st.sampled_from(JSON_VALUES) | st.integers() | st.text(max_size=20))
    depth = draw(st.sampled_from([50, 500, 5000, 100_000]))

    def edit(doc):
        paths = _paths(doc)
        path = paths[p % len(paths)]
        if not path:
            return _copy(value) if kind == "replace" else doc
        parent, key = _get(doc, path[:-1]), path[-1]
        if kind == "replace":
            parent[key] = _copy(value)
        elif kind == "delete":
            del parent[key]
        try:
            if kind == "copy":  # another node of the same document (a layer config in place of a shape ...)
                parent[key] = _copy(_get(doc, paths[q % len(paths)]))
            elif kind == "grow" and isinstance(parent, list) and len(parent) < 1000:
                parent.extend([_copy(parent[key]) for _ in range(1 + q % 5)])
        except RecursionError:  # the node is one that "deep" made: leave it
            pass
        if kind == "rename" and isinstance(parent, dict):
            parent[f"{key}_" if isinstance(key, str) else key] = parent.pop(key)
        elif kind == "deep":
            parent[key] = _deep(depth)
        return doc
    return edit


def mutate_json(draw, text):
    """``text`` (a JSON document) with values edited; falls back to bytes when it does not parse."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return mutate_bytes(draw, text)
    for edit in draw(st.lists(json_edit(), min_size=1, max_size=4)):
        doc = edit(doc)
    try:
        out = json.dumps(doc).encode()
    except (RecursionError, ValueError):  # too deep for json to write: write the nesting by hand
        out = b"[" * 100_000 + b"]" * 100_000
    if len(out) > 8 << 20:  # copies of copies: keep files small
        out = out[:8 << 20]
    if draw(st.booleans()):
        out = mutate_bytes(draw, out, max_edits=2) if draw(st.booleans()) else out
    return out


# --- containers ---------------------------------------------------------------------------------------------
def _zip_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(info.filename, zf.read(info), info.compress_type) for info in zf.infolist()]


HOSTILE_NAMES = ["../../../tmp/fuzz-escape", "/tmp/fuzz-absolute", "..\\..\\fuzz-escape", "C:/fuzz-escape",
                 "a/../../fuzz-escape", "", ".", "x" * 300, "weights/../config.json", "data.pkl"]


def mutate_zip(draw, data, payloads):
    members = _zip_members(data)
    kind = draw(st.sampled_from(["member", "member", "member", "rename", "add", "duplicate", "drop", "compress"]))
    main = [i for i, (n, _, _) in enumerate(members) if n.endswith((".json", ".pkl", ".h5"))]
    index = draw(_positions) % len(members)
    if main and draw(st.booleans()):  # the members that describe the rest get half of the attention
        index = main[index % len(main)]
    name, content, compression = members[index]
    if kind == "member":
        if name.endswith(".json"):
            content = mutate_json(draw, content)
        else:
            content = mutate_bytes(draw, content, payloads)
        members[index] = (name, content, compression)
    elif kind == "rename":
        members[index] = (draw(st.sampled_from(HOSTILE_NAMES + [name + "x", name.upper()])), content, compression)
    elif kind == "add":
        members.append((draw(st.sampled_from(HOSTILE_NAMES)), draw(st.sampled_from(list(payloads) + [b"x"])),
                        zipfile.ZIP_STORED))
    elif kind == "duplicate":
        members.append((name, mutate_bytes(draw, content, payloads, max_edits=2), compression))
    elif kind == "drop":
        del members[index]
    else:
        members[index] = (name, content, zipfile.ZIP_DEFLATED if compression == zipfile.ZIP_STORED
                          else zipfile.ZIP_STORED)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for member_name, member_data, member_compression in members:
            info = zipfile.ZipInfo(member_name or "empty")
            info.compress_type = member_compression
            zf.writestr(info, member_data)
    return out.getvalue()


def mutate_safetensors(draw, data):
    (n,) = struct.unpack("<Q", data[:8])
    header, body = data[8:8 + n], data[8 + n:]
    header = mutate_json(draw, header)
    if draw(st.booleans()):
        body = mutate_bytes(draw, body, max_edits=2)
    return struct.pack("<Q", len(header)) + header + body


def mutate_h5_model_config(draw, data):
    """A Keras legacy model ``.h5`` with its ``model_config`` attribute's JSON edited (h5py rewrites it)."""
    import h5py

    source = h5py.File(io.BytesIO(data), "r")
    out = io.BytesIO()
    with source, h5py.File(out, "w") as target:
        for key, value in source.attrs.items():
            target.attrs[key] = value
        for key in source:
            source.copy(source[key], target, name=key)
        raw = source.attrs["model_config"]
        text = raw if isinstance(raw, bytes) else str(raw).encode()
        target.attrs["model_config"] = mutate_json(draw, text).replace(b"\0", b"")  # h5py refuses NULs
    return out.getvalue()


class Seeds(dict):
    """Seed name -> bytes, with a short repr (Hypothesis prints a strategy's arguments)."""

    def __repr__(self):
        return f"Seeds({sorted(self)})"


class Payloads(tuple):
    def __repr__(self):
        return f"Payloads(<{len(self)} pickles>)"


@st.composite
def hostile_file(draw, seeds, payloads=()):
    """A mutated version of one of ``seeds`` (a :class:`Seeds`): ``(seed_name, data)``."""
    name = draw(st.sampled_from(sorted(seeds)))
    data = seeds[name]
    structured = draw(st.integers(0, 3)) > 0
    if structured and data[:4] == b"PK\x03\x04":
        data = mutate_zip(draw, data, payloads)
    elif structured and name.endswith(".safetensors"):
        data = mutate_safetensors(draw, data)
    elif structured and name.endswith(".h5") and b"model_config" in data:
        data = mutate_h5_model_config(draw, data)
    elif structured and name.endswith(".onnx") is False and data[:1] == b"{":
        data = mutate_json(draw, data)
    if not structured or draw(st.integers(0, 3)) == 0:
        data = mutate_bytes(draw, data, payloads)
    return name, data

"""Keras 3 ``.keras`` archives: a zip of ``config.json`` (the model), ``metadata.json`` and ``model.weights.h5``.

Members are read by their exact names into memory; nothing is ever extracted, so a member name such as
``../../x`` can never make fastconv write anywhere.
"""
import json
import zipfile
import zlib

__all__ = ["read_keras_archive"]

_MAX_CONFIG_BYTES = 64 << 20


def _read_member(zf, name, limit, description):
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ValueError(f"{description} is not a Keras archive: it has no {name!r}") from None
    if info.file_size > limit:
        raise ValueError(f"{description}: member {name!r} declares {info.file_size} bytes, more than the "
                         f"{limit} allowed")
    with zf.open(info) as member:
        data = member.read(limit + 1)
    if len(data) != info.file_size:
        raise ValueError(f"{description}: member {name!r} holds {len(data)} bytes, not the {info.file_size} its "
                         f"header declares")
    return data


def read_keras_archive(path, description, need_config=True, weights_limit=1 << 40):
    """``(model_config_entry or None, weights_h5_bytes)`` of a ``.keras`` file.

    Raises
    ------
    ValueError
        For a damaged archive, a missing member or a config that is not JSON.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            config = None
            if need_config:
                raw = _read_member(zf, "config.json", _MAX_CONFIG_BYTES, description)
                try:
                    config = json.loads(raw)
                except ValueError as exc:
                    raise ValueError(f"{description}: config.json is not valid JSON ({exc})") from None
                if not isinstance(config, dict):
                    raise ValueError(f"{description}: config.json must hold an object; received {type(config)}")
            weights = _read_member(zf, "model.weights.h5", weights_limit, description)
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile, NotImplementedError,
            zlib.error) as exc:
        raise ValueError(f"{description} is a damaged zip archive ({exc})") from None
    except RuntimeError as exc:  # zipfile raises it for encrypted members
        raise ValueError(f"{description} cannot be read ({exc})") from None
    return config, weights

"""fastconv.dask without a cluster: the threaded and synchronous schedulers, the thread rule, argument checks, and
the model's trip through bytes."""
import threading

import numpy as np
import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

import fastconv  # noqa: E402
import fastconv.dask  # noqa: E402
from fastconv import _threads  # noqa: E402
from fastconv.dask import _payload, task_threads  # noqa: E402
from fastconv.layers import Add, Conv2D, Dense, GlobalAveragePooling2D, Input  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(threads):
    """Run the reference predictions on one thread (restored after each test): on a shared 2-core machine, tiny
    problems are far slower on two."""
    threads.set_num_threads(1)
    return threads


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_predict_on_local_schedulers_matches_model_predict(model, images, scheduler):
    x = da.from_array(images[:500], chunks=(64, 16, 16, 1))
    with dask.config.set(scheduler=scheduler):
        result = fastconv.dask.predict(model, x, batch_size=20).compute()
    np.testing.assert_array_equal(result, model.predict(images[:500], verbose=0))
    assert _threads._requested_threads == 1  # the setting in force before is back


def test_chunks_along_image_axes_are_merged_and_uint8_is_cast_per_chunk(model):
    pixels = np.random.default_rng(0).integers(0, 255, (90, 16, 16, 1), dtype=np.uint8)
    x = da.from_array(pixels, chunks=(30, 8, 8, 1))
    lazy = fastconv.dask.predict(model, x)
    assert lazy.chunks == ((30, 30, 30), (3,)) and lazy.dtype == np.float32
    with dask.config.set(scheduler="threads"):
        result = lazy.compute()
    np.testing.assert_array_equal(result, model.predict(pixels, verbose=0))


def test_output_shape_with_free_spatial_axes_is_found_by_a_probe():
    inputs = Input((None, None, 2))
    a = Conv2D(3, 3, padding="same")(inputs)
    outputs = Dense(2)(GlobalAveragePooling2D()(Add()([a, Conv2D(3, 1)(inputs)])))
    model = fastconv.Model(inputs, outputs)
    conv = fastconv.Sequential([Input((None, None, 2)), Conv2D(5, 3)])
    x = da.from_array(np.random.default_rng(1).standard_normal((12, 9, 7, 2)).astype(np.float32), chunks=5)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(fastconv.dask.predict(model, x).compute(), model.predict(x.compute(), verbose=0))
        features = fastconv.dask.extract_features(conv, x)
        assert features.shape == (12, 7, 5, 5)
        np.testing.assert_array_equal(features.compute(), conv.predict(x.compute(), verbose=0))


def test_the_model_is_one_key_and_equal_models_share_it(model):
    x = da.zeros((40, 16, 16, 1), chunks=10, dtype=np.float32)
    first = fastconv.dask.predict(model, x)
    again = fastconv.dask.predict(model, x)
    keys = [k for k in dict(first.__dask_graph__()) if str(k).startswith("fastconv-model-")]
    assert len(keys) == 1
    assert first.name == again.name  # same weights: same digest, same graph (the zip's timestamps do not count)
    model.layers[0].kernel.assign(model.layers[0].kernel.value + 1)
    assert fastconv.dask.predict(model, x).name != first.name


def test_threaded_tasks_use_one_fastconv_thread_each(threads):
    threads.set_num_threads(2)
    seen = []

    def record(block):
        with task_threads():
            seen.append((threading.current_thread() is threading.main_thread(), fastconv.get_num_threads()))
        return block

    with dask.config.set(scheduler="threads", num_workers=2):
        da.zeros(8, chunks=1).map_blocks(record, meta=np.empty((0,))).compute()
    assert len(seen) == 8 and any(not main for main, _ in seen), seen
    assert all(n == 1 for main, n in seen if not main), seen
    assert _threads._requested_threads == 2


def test_task_threads_in_the_main_thread_keeps_the_setting_unless_told(threads):
    threads.set_num_threads(2)
    with task_threads():
        assert fastconv.get_num_threads() == 2
    with task_threads(1):
        assert fastconv.get_num_threads() == 1
        with task_threads(1):
            pass
        assert fastconv.get_num_threads() == 1  # nested: only the outermost exit restores
    assert _threads._requested_threads == 2


def test_model_bytes_round_trip_is_exact_and_cached_once(model):
    data = _payload.model_to_bytes(model)
    digest = _payload.content_digest(data)
    assert digest == _payload.content_digest(_payload.model_to_bytes(model))
    copy = _payload.model_from_bytes(data)
    for a, b in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)
    first = _payload.cached_model(digest, data)
    assert _payload.cached_model(digest, data) is first
    assert _payload.build_counts()[digest] == 1


def test_model_from_bytes_rejects_what_is_not_a_model():
    with pytest.raises(TypeError, match="received data of type str"):
        _payload.model_from_bytes("model.fcm")
    with pytest.raises(ValueError, match="does not hold a fastconv model.*received 11 bytes"):
        _payload.model_from_bytes(b"not a model")


@pytest.mark.parametrize("images, error, match", [
    (np.zeros((4, 16, 16, 1), np.float32), TypeError, "images must be a dask array.*received images of type ndarray"),
    (da.zeros((4, 16, 16), chunks=2), ValueError, r"images must have 4 axes.*received images with shape \(4, 16, 16\)"),
    (da.zeros((4, 16, 15, 1), chunks=2), ValueError, r"received images with shape \(4, 16, 15, 1\)"),
    (da.zeros((4, 16, 16, 1), chunks=2, dtype=complex), TypeError, "real numbers; received images with dtype complex"),
])
def test_predict_rejects_bad_images(model, images, error, match):
    with pytest.raises(error, match=match):
        fastconv.dask.predict(model, images)


def test_predict_rejects_bad_arguments(model):
    x = da.zeros((4, 16, 16, 1), chunks=2, dtype=np.float32)
    with pytest.raises(TypeError, match="model must be a fastconv model.*received model of type str"):
        fastconv.dask.predict("model.fcm", x)
    with pytest.raises(ValueError, match="must be built.*unbuilt model"):
        fastconv.dask.predict(fastconv.Sequential([Dense(2)]), x)
    inputs = Input((16, 16, 1))
    two = fastconv.Model(inputs, [Conv2D(1, 1)(inputs), Conv2D(2, 1)(inputs)])
    with pytest.raises(ValueError, match="one input and one output.*2 outputs"):
        fastconv.dask.predict(two, x)
    with pytest.raises(ValueError, match="received batch_size=0"):
        fastconv.dask.predict(model, x, batch_size=0)
    with pytest.raises(TypeError, match="received batch_size=2.5"):
        fastconv.dask.predict(model, x, batch_size=2.5)
    with pytest.raises(ValueError, match="received num_threads=0"):
        fastconv.dask.predict(model, x, num_threads=0)
    pytest.importorskip("distributed")
    with pytest.raises(TypeError, match="client must be a distributed.Client.*received client of type str"):
        fastconv.dask.predict(model, x, client="tcp://127.0.0.1:8786")


def test_extract_features_rejects_bad_store_arguments(conv_base, tmp_path):
    x = da.zeros((4, 16, 16, 1), chunks=2, dtype=np.float32)
    with pytest.raises(ValueError, match="store_format must be one of 'zarr', 'npy'; received store_format='h5'"):
        fastconv.dask.extract_features(conv_base, x, store=tmp_path / "f", store_format="h5")
    with pytest.raises(ValueError, match="received compute=False"):
        fastconv.dask.extract_features(conv_base, x, store=tmp_path / "f", store_format="npy", compute=False)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="overwrite=False; received store=.*taken"):
        fastconv.dask.extract_features(conv_base, x, store=tmp_path / "taken", store_format="npy")
    unknown = x[x[:, 0, 0, 0] > -1]  # boolean indexing: chunk sizes unknown until computed
    with pytest.raises(ValueError, match="known chunk sizes.*compute_chunk_sizes"):
        fastconv.dask.extract_features(conv_base, unknown, store=tmp_path / "g.zarr")


def test_npy_overwrite_replaces_only_the_stack_files(conv_base, tmp_path):
    folder = tmp_path / "stack"
    images = np.random.default_rng(2).standard_normal((10, 16, 16, 1)).astype(np.float32)
    with dask.config.set(scheduler="sync"):
        fastconv.dask.extract_features(conv_base, da.from_array(images, chunks=2), store=folder, store_format="npy")
        (folder / "notes.txt").write_text("keep me")
        back = fastconv.dask.extract_features(conv_base, da.from_array(images[:6], chunks=3), store=folder,
                                              store_format="npy", overwrite=True)
        assert sorted(p.name for p in folder.iterdir()) == ["0.npy", "1.npy", "info", "notes.txt"]
        np.testing.assert_array_equal(back.compute(), conv_base.predict(images[:6], verbose=0))


def test_zarr_compute_false_returns_a_delayed_write(conv_base, tmp_path):
    zarr = pytest.importorskip("zarr")
    images = np.random.default_rng(4).standard_normal((20, 16, 16, 1)).astype(np.float32)
    store = tmp_path / "later.zarr"
    with dask.config.set(scheduler="sync"):
        write = fastconv.dask.extract_features(conv_base, da.from_array(images, chunks=(8, 16, 16, 1)),
                                               store=store, compute=False, component="block1")
        assert hasattr(write, "compute")
        write.compute()
    stored = zarr.open_group(str(store), mode="r")["block1"]
    assert stored.chunks[0] == 8
    np.testing.assert_array_equal(stored[:], conv_base.predict(images, verbose=0))

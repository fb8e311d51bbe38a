"""``fastconv visualize MODEL_FILE IMAGE_FILE --out DIR`` end to end on a model trained in the test: every picture
listed, written inside DIR and decoding with Pillow at the expected size; bad input gets a message and status 1."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fastconv
from fastconv import cli, visualize
from fastconv.layers import Conv2D, Dense, GlobalAveragePooling2D, Input, MaxPooling2D


@pytest.fixture(scope="module")
def files(tmp_path_factory, square_model):
    """The trained square model saved, and one of its held-out positives as a 48x64 RGB PNG (so the command has
    to convert it to grey and resize it to 32x32)."""
    model, x, y, _ = square_model
    root = tmp_path_factory.mktemp("visualize_cli")
    model.save(root / "squares.fcm")
    positive = x[np.flatnonzero(y == 1)[0], :, :, 0]
    big = np.asarray(Image.fromarray(np.round(positive * 255).astype(np.uint8)).resize((64, 48), Image.NEAREST))
    visualize.save_image(root / "square.png", np.repeat(big[:, :, None], 3, axis=2))
    return root


def _size(path):
    with Image.open(path) as picture:
        picture.load()
        return picture.size, picture.mode


def test_writes_and_lists_every_picture(files, capsys):
    out = files / "out"
    status = cli.main(["visualize", str(files / "squares.fcm"), str(files / "square.png"), "--out", str(out),
                       "--filters", "4", "--steps", "8"])
    printed = capsys.readouterr().out.splitlines()
    assert status == 0
    assert printed[0].startswith("Predicted class 1 (output ")
    names = ["input.png", "activations_00_conv1.png", "activations_01_pool1.png", "activations_02_conv2.png",
             "filters_conv2.png", "gradcam_heatmap.png", "gradcam_overlay.png"]
    assert printed[1:] == [str(out / name) for name in names]
    assert sorted(os.listdir(out)) == sorted(names)
    expected = {"input.png": ((32, 32), "L"),
                "activations_00_conv1.png": ((4 * 33 + 1, 34), "L"),     # 4 channels of 32x32, scale 1
                "activations_01_pool1.png": ((4 * 33 + 1, 34), "L"),     # 16x16 enlarged 2x
                "activations_02_conv2.png": ((8 * 33 + 1, 34), "L"),
                "filters_conv2.png": ((4 * 66 + 2, 68), "L"),            # 4 grey patterns of 32x32, 2x
                "gradcam_heatmap.png": ((320, 240), "RGB"),              # the 48x64 image enlarged 5x
                "gradcam_overlay.png": ((320, 240), "RGB")}
    for name, size_mode in expected.items():
        assert _size(out / name) == size_mode, name
    # the heatmap is hottest (most red, least blue) in the top-left quadrant, where the square is
    with Image.open(out / "gradcam_heatmap.png") as picture:
        heat = np.asarray(picture).astype(int)
    row, col = np.unravel_index((heat[:, :, 0] - heat[:, :, 2]).argmax(), heat.shape[:2])
    assert row < 120 and col < 160


def test_options_and_an_rgb_channels_first_model(files, tmp_path, capsys):
    fastconv.utils.set_random_seed(0)
    model = fastconv.Sequential([
        Input((3, 20, 20)),
        Conv2D(6, 3, activation="relu", name="features", data_format="channels_first"),
        MaxPooling2D(2, name="pool", data_format="channels_first"),
        GlobalAveragePooling2D(name="gap", data_format="channels_first"),
        Dense(3, activation="softmax", name="classes")], name="rgb")
    model.save(tmp_path / "rgb.fcm")
    visualize.save_image(tmp_path / "grey.png", np.random.default_rng(0).random((30, 30)))
    status = cli.main(["visualize", str(tmp_path / "rgb.fcm"), str(tmp_path / "grey.png"), "--out",
                       str(tmp_path / "out"), "--layers", "pool", "--filters", "2", "--steps", "3",
                       "--gradcam-layer", "pool", "--class-index", "2", "--alpha", "0.7"])
    printed = capsys.readouterr().out.splitlines()
    assert status == 0 and printed[0].startswith("Explaining class 2 (output ")
    assert [os.path.basename(p) for p in printed[1:]] == ["input.png", "activations_00_pool.png",
                                                          "filters_features.png", "gradcam_heatmap.png",
                                                          "gradcam_overlay.png"]
    assert _size(tmp_path / "out" / "input.png") == ((20, 20), "RGB")
    assert _size(tmp_path / "out" / "activations_00_pool.png") == ((6 * 37 + 1, 37 + 1), "L")   # 9x9, 4x
    assert _size(tmp_path / "out" / "gradcam_overlay.png") == ((240, 240), "RGB")


def test_layer_names_never_write_outside_the_output_directory(tmp_path, capsys):
    inputs = Input((8, 8, 1))
    odd = Conv2D(2, 3, padding="same", activation="relu", name="..")(inputs)
    odd = Conv2D(2, 3, padding="same", activation="relu", name="..\\x y")(odd)
    model = fastconv.Model(inputs, Dense(2, activation="softmax")(GlobalAveragePooling2D()(odd)))
    model.save(tmp_path / "odd.fcm")
    visualize.save_image(tmp_path / "image.png", np.ones((8, 8)))
    out = tmp_path / "deep" / "out"
    assert cli.main(["visualize", str(tmp_path / "odd.fcm"), str(tmp_path / "image.png"), "--out", str(out),
                     "--filters", "1", "--steps", "1"]) == 0
    written = capsys.readouterr().out.splitlines()[1:]
    assert {os.path.basename(p) for p in written} == {"input.png", "activations_00_...png",
                                                      "activations_01_.._x_y.png", "filters_.._x_y.png",
                                                      "gradcam_heatmap.png", "gradcam_overlay.png"}
    for path in written:
        assert os.path.dirname(os.path.realpath(path)) == os.path.realpath(out)
    assert sorted(os.listdir(tmp_path)) == ["deep", "image.png", "odd.fcm"]


@pytest.mark.parametrize("extra, message", [
    (["--class-index", "5"], r"class_index must be an int in [0, 2) (model 'squares' has 2 classes)"),
    (["--gradcam-layer", "conv7"], "layer_name must be one of the layers of model 'squares': ['conv1', 'pool1', "
                                   "'conv2', 'global_pool', 'head']; received layer_name='conv7'"),
    (["--gradcam-layer", "head"], "layer_name must name a layer with a spatial (4-D) output for Grad-CAM"),
    (["--layers", "conv1", "head"], "--layers: layer 'head' has output shape (None, 2), which is not an image batch"),
    (["--layers", "conv9"], "--layers must be one of the layers of model 'squares'"),
    (["--filters-layer", "global_pool"], "layer 'global_pool' has output shape (None, 8)"),
])
def test_bad_options_get_a_message_and_status_1(files, tmp_path, capsys, extra, message):
    status = cli.main(["visualize", str(files / "squares.fcm"), str(files / "square.png"), "--out",
                       str(tmp_path / "out"), "--steps", "1", "--filters", "1"] + extra)
    captured = capsys.readouterr()
    assert status == 1 and message in captured.err and captured.err.startswith("fastconv visualize: ")
    assert not (tmp_path / "out").exists()                            # checked before anything is written


def test_bad_files_get_a_message_and_status_1(files, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model")
    cases = [
        ([str(tmp_path / "notes.txt"), str(files / "square.png")], "cannot load MODEL_FILE"),
        ([str(files / "squares.fcm"), str(tmp_path / "missing.png")], "cannot read image file"),
        ([str(files / "squares.fcm"), str(tmp_path / "notes.txt")], "cannot read image file"),
    ]
    for arguments, message in cases:
        assert cli.main(["visualize", *arguments, "--out", str(tmp_path / "out")]) == 1
        assert message in capsys.readouterr().err
    assert cli.main(["visualize", str(files / "squares.fcm"), str(files / "square.png"), "--out",
                     str(tmp_path / "notes.txt")]) == 1
    assert "--out must be a directory" in capsys.readouterr().err
    dense_only = fastconv.Sequential([Input((4,)), Dense(2, activation="softmax")])
    dense_only.save(tmp_path / "dense.fcm")
    assert cli.main(["visualize", str(tmp_path / "dense.fcm"), str(files / "square.png"), "--out",
                     str(tmp_path / "out")]) == 1
    assert "one image input of fixed size and 1 or 3 channels" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        cli.main(["visualize", str(files / "squares.fcm"), str(files / "square.png"), "--out", "x",
                  "--alpha", "2"])
    assert "must be a number in [0, 1]; received '2'" in capsys.readouterr().err


def test_the_installed_command_runs(files, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "fastconv.cli", "visualize", str(files / "squares.fcm"),
                             str(files / "square.png"), "--out", str(tmp_path / "out"), "--filters", "2",
                             "--steps", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.splitlines()[1:]
    assert len(listed) == 7 and all(os.path.isfile(p) for p in listed)

"""ImageDataGenerator.flow_from_directory on folders of generated images."""
import os
import sys

import numpy as np
import pytest

from fastconv.preprocessing import DirectoryIterator, ImageDataGenerator

Image = pytest.importorskip("PIL.Image")

# Each class is a solid colour, so a label can be checked against the pixels it came with.
COLOURS = {"cats": (200, 30, 30), "dogs": (30, 30, 200), "eels": (30, 200, 30)}


def make_folder(root, classes=("cats", "dogs"), per_class=5, size=(12, 10)):
    """root/<class>/img<i>.png (one .jpg and one .bmp in the first class), solid colour, varied sizes."""
    root.mkdir(exist_ok=True)
    for name in classes:
        (root / name).mkdir()
        for i in range(per_class):
            w, h = size[1] + i, size[0] + 2 * i                       # PIL sizes are (width, height)
            ext = {0: "jpg", 1: "bmp"}.get(i, "png") if name == classes[0] else "png"
            Image.new("RGB", (w, h), COLOURS[name]).save(root / name / f"img{i}.{ext}")
    return root


def class_of(pixels):
    """Which class colour an image is (nearest mean colour)."""
    mean = pixels.reshape(-1, pixels.shape[-1])[:, :3].mean(axis=0)
    return min(COLOURS, key=lambda c: np.abs(mean - COLOURS[c]).sum())


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data")


def test_discovers_classes_and_files(folder, capsys):
    it = ImageDataGenerator().flow_from_directory(folder, target_size=(8, 8), batch_size=4, shuffle=False)
    assert isinstance(it, DirectoryIterator)
    assert "Found 10 images belonging to 2 classes." in capsys.readouterr().out
    assert it.class_indices == {"cats": 0, "dogs": 1}
    assert it.samples == it.n == 10 and it.num_classes == 2 and len(it) == 3
    np.testing.assert_array_equal(it.classes, [0] * 5 + [1] * 5)
    assert it.classes.dtype == np.int32
    assert it.filenames[:3] == [os.path.join("cats", "img0.jpg"), os.path.join("cats", "img1.bmp"),
                                os.path.join("cats", "img2.png")]
    assert it.filepaths[0] == os.path.join(str(folder), "cats", "img0.jpg")


def test_categorical_labels_match_pixels(tmp_path):
    root = make_folder(tmp_path / "three", classes=("eels", "cats", "dogs"), per_class=4)
    it = ImageDataGenerator(rescale=1 / 255).flow_from_directory(root, target_size=(6, 7), batch_size=5, seed=1)
    assert it.class_indices == {"cats": 0, "dogs": 1, "eels": 2}
    names = sorted(COLOURS)
    for _ in range(len(it)):
        xb, yb = next(it)
        assert xb.shape[1:] == (6, 7, 3) and xb.dtype == np.float32 and xb.max() <= 1.0
        assert yb.dtype == np.float32 and yb.shape == (len(xb), 3)
        np.testing.assert_array_equal(yb.sum(axis=1), 1.0)
        for img, row in zip(xb, yb):
            assert names[int(row.argmax())] == class_of(img * 255)


@pytest.mark.parametrize("class_mode", ["binary", "sparse"])
def test_binary_and_sparse_labels(folder, class_mode):
    it = ImageDataGenerator().flow_from_directory(folder, target_size=(5, 5), class_mode=class_mode, batch_size=10,
                                                  seed=4)
    xb, yb = next(it)
    assert yb.shape == (10,) and yb.dtype == np.float32
    assert sorted(yb.tolist()) == [0.0] * 5 + [1.0] * 5
    for img, label in zip(xb, yb):
        assert ["cats", "dogs"][int(label)] == class_of(img)


def test_class_mode_none_and_input(folder):
    gen = ImageDataGenerator()
    xb = next(gen.flow_from_directory(folder, target_size=(5, 5), class_mode=None, batch_size=3))
    assert isinstance(xb, np.ndarray) and xb.shape == (3, 5, 5, 3)
    xb, yb = next(gen.flow_from_directory(folder, target_size=(5, 5), class_mode="input", batch_size=3))
    np.testing.assert_array_equal(xb, yb)


def test_target_size_resizes_and_color_modes(folder):
    gen = ImageDataGenerator()
    xb, _ = next(gen.flow_from_directory(folder, target_size=(30, 20), batch_size=10))
    assert xb.shape == (10, 30, 20, 3)
    xb, _ = next(gen.flow_from_directory(folder, target_size=(9, 4), color_mode="grayscale", batch_size=10,
                                         interpolation="nearest"))
    assert xb.shape == (10, 9, 4, 1)
    xb, _ = next(gen.flow_from_directory(folder, target_size=(9, 4), color_mode="rgba", batch_size=2))
    assert xb.shape == (2, 9, 4, 4) and np.all(xb[..., 3] == 255)
    cf = ImageDataGenerator(data_format="channels_first").flow_from_directory(folder, target_size=(9, 4))
    assert next(cf)[0].shape == (10, 3, 9, 4) and cf.image_shape == (3, 9, 4)


def test_png_pixels_arrive_unchanged(tmp_path):
    root = tmp_path / "exact"
    (root / "a").mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "a" / "p.png")
    xb, _ = next(ImageDataGenerator().flow_from_directory(root, target_size=(6, 5), batch_size=1))
    np.testing.assert_array_equal(xb[0], pixels.astype(np.float32))


def test_augmentation_is_reproducible_with_seed(folder):
    gen = ImageDataGenerator(rotation_range=30, zoom_range=0.3, horizontal_flip=True, fill_mode="constant")
    a = [next(it) for it in [gen.flow_from_directory(folder, target_size=(8, 8), seed=9)] for _ in range(3)]
    b = [next(it) for it in [gen.flow_from_directory(folder, target_size=(8, 8), seed=9)] for _ in range(3)]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_validation_subset_takes_the_first_files_of_each_class(folder):
    gen = ImageDataGenerator(validation_split=0.4)
    val = gen.flow_from_directory(folder, target_size=(4, 4), subset="validation", shuffle=False)
    train = gen.flow_from_directory(folder, target_size=(4, 4), subset="training", shuffle=False)
    assert val.samples == 4 and train.samples == 6
    assert val.filenames == [os.path.join("cats", "img0.jpg"), os.path.join("cats", "img1.bmp"),
                             os.path.join("dogs", "img0.png"), os.path.join("dogs", "img1.png")]
    assert not set(val.filenames) & set(train.filenames)


def test_explicit_classes_choose_folders_and_order(tmp_path):
    root = make_folder(tmp_path / "three", classes=("cats", "dogs", "eels"), per_class=2)
    it = ImageDataGenerator().flow_from_directory(root, classes=["eels", "cats"], target_size=(4, 4))
    assert it.class_indices == {"eels": 0, "cats": 1} and it.samples == 4


def test_hidden_folders_and_other_files_are_ignored(folder):
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / "cats" / "notes.txt").write_text("not an image")
    (folder / "cats" / "nested").mkdir()
    Image.new("RGB", (4, 4), COLOURS["cats"]).save(folder / "cats" / "nested" / "deep.png")
    it = ImageDataGenerator().flow_from_directory(folder, target_size=(4, 4))
    assert it.class_indices == {"cats": 0, "dogs": 1}
    assert os.path.join("cats", "nested", "deep.png") in it.filenames and it.samples == 11


def test_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"one sub-folder of images per class.*received directory='.*empty'"):
        ImageDataGenerator().flow_from_directory(empty)


def test_class_folder_without_images(folder):
    (folder / "owls").mkdir()
    (folder / "owls" / "readme.txt").write_text("no pictures yet")
    with pytest.raises(ValueError, match=r"class folder '.*owls' holds no images"):
        ImageDataGenerator().flow_from_directory(folder)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"received directory='.*nowhere'"):
        ImageDataGenerator().flow_from_directory(tmp_path / "nowhere")


@pytest.mark.parametrize("content", [b"this is not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_corrupt_file_is_named(folder, content):
    (folder / "dogs" / "broken.png").write_bytes(content)
    it = ImageDataGenerator().flow_from_directory(folder, target_size=(4, 4), batch_size=11, shuffle=False)
    with pytest.raises(OSError, match=r"cannot read image file '.*broken\.png'"):
        next(it)


def test_truncated_file_is_named(folder):
    good = folder / "cats" / "img2.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    good.write_bytes(good.read_bytes()[:-30])
    it = ImageDataGenerator().flow_from_directory(folder, target_size=(4, 4), batch_size=10, shuffle=False)
    with pytest.raises(OSError, match=r"img2\.png"):
        next(it)


def test_missing_pillow_says_what_to_install(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install Pillow"):
        ImageDataGenerator().flow_from_directory(folder)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"target_size": 8}, ValueError, r"target_size=8"),
    ({"target_size": (0, 8)}, ValueError, r"target_size=0"),
    ({"color_mode": "cmyk"}, ValueError, r"color_mode='cmyk'"),
    ({"class_mode": "onehot"}, ValueError, r"class_mode='onehot'"),
    ({"interpolation": "cubic"}, ValueError, r"interpolation='cubic'"),
    ({"classes": ["cats", "lions"]}, ValueError, r"'.*lions' does not exist; received classes=\['cats', 'lions'\]"),
    ({"classes": "cats"}, TypeError, r"classes='cats'"),
    ({"subset": "validation"}, ValueError, r"validation_split > 0"),
    ({"batch_size": -1}, ValueError, r"batch_size=-1"),
])
def test_argument_errors(folder, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ImageDataGenerator().flow_from_directory(folder, **kwargs)


def test_binary_needs_two_classes(tmp_path):
    root = make_folder(tmp_path / "three", classes=("cats", "dogs", "eels"), per_class=1)
    with pytest.raises(ValueError, match=r'class_mode="binary" needs exactly 2 class folders; found 3'):
        ImageDataGenerator().flow_from_directory(root, class_mode="binary")

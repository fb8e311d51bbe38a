"""DirectoryIterator: batches of images read from one sub-folder per class (what ``flow_from_directory`` returns)."""
import os

import numpy as np

from fastconv import _layout
from fastconv.preprocessing import _checks as check
from fastconv.preprocessing import _pillow
from fastconv.preprocessing.iterator import Iterator

__all__ = ["DirectoryIterator", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")
CLASS_MODES = ("categorical", "binary", "sparse", "input", None)


def _image_files(folder):
    """Image files under ``folder`` (recursively), as sorted paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found.extend(os.path.relpath(os.path.join(root, f), folder) for f in files
                     if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)


def _target_size(value):
    try:
        rows, cols = value
    except (TypeError, ValueError):
        raise ValueError(f"target_size must be a pair (rows, cols); received target_size={value!r}") from None
    return check.positive_int(rows, "target_size"), check.positive_int(cols, "target_size")


def _class_names(directory, classes):
    if classes is None or (isinstance(classes, (list, tuple)) and len(classes) == 0):
        names = sorted(d for d in os.listdir(directory)
                       if os.path.isdir(os.path.join(directory, d)) and not d.startswith("."))
        if not names:
            raise ValueError("directory must hold one sub-folder of images per class and holds none; "
                             f"received directory={directory!r}")
        return names
    if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise TypeError(f"classes must be a list of sub-folder names; received classes={classes!r}")
    names = list(classes)
    if len(set(names)) != len(names):
        raise ValueError(f"classes must not repeat a name; received classes={classes!r}")
    for name in names:
        if not os.path.isdir(os.path.join(directory, name)):
            raise ValueError(f"class folder {os.path.join(directory, name)!r} does not exist; "
                             f"received classes={classes!r}")
    return names


class DirectoryIterator(Iterator):
    """Batches of augmented images read with Pillow from ``directory/<class>/...`` files.

    Parameters are those of :meth:`ImageDataGenerator.flow_from_directory`, plus the generator.

    Attributes
    ----------
    class_indices : dict
        Class (sub-folder) name -> label index, in sorted (or ``classes``) order. Hidden sub-folders (names
        starting with ".", e.g. ``.ipynb_checkpoints``) are not classes.
    classes : ndarray of int32, shape (samples,)
        Label of every file.
    filenames : list of str
        Paths relative to ``directory``, e.g. ``"cats/cat001.jpg"``, in label order.
    filepaths : list of str
        ``directory`` joined to each filename.
    samples, num_classes : int
    image_shape : tuple of int
        Shape of one image in a batch.
    """

    def __init__(self, directory, image_data_generator, target_size=(256, 256), color_mode="rgb", classes=None,
                 class_mode="categorical", batch_size=32, shuffle=True, seed=None, interpolation="bilinear",
                 subset=None):
        _pillow.require_pillow()
        gen = image_data_generator
        directory = os.fspath(directory)
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"directory must be an existing folder; received directory={directory!r}")
        self.directory = directory
        self.image_data_generator = gen
        self.data_format = gen.data_format
        self.target_size = _target_size(target_size)
        self.color_mode = check.choice(color_mode, "color_mode", tuple(_pillow.COLOR_MODES))
        if class_mode not in CLASS_MODES:
            raise ValueError(f"class_mode must be one of {CLASS_MODES}; received class_mode={class_mode!r}")
        self.class_mode = class_mode
        self.interpolation = check.choice(interpolation, "interpolation", _pillow.INTERPOLATIONS)
        self.subset = check.subset(subset, gen.validation_split)
        channels = _pillow.COLOR_MODES[self.color_mode][1]
        self.image_shape = (self.target_size + (channels,) if self.data_format == "channels_last"
                            else (channels,) + self.target_size)

        names = _class_names(directory, classes)
        if class_mode == "binary" and len(names) != 2:
            raise ValueError(f'class_mode="binary" needs exactly 2 class folders; found {len(names)} in '
                             f"directory={directory!r}: {names}")
        self.class_indices = {name: i for i, name in enumerate(names)}
        self.num_classes = len(names)
        self.filenames, labels = [], []
        for label, name in enumerate(names):
            folder = os.path.join(directory, name)
            files = _image_files(folder)
            if not files:
                raise ValueError(f"class folder {folder!r} holds no images "
                                 f"({', '.join(IMAGE_EXTENSIONS)}); received directory={directory!r}")
            if self.subset is not None:
                cut = int(len(files) * gen.validation_split)
                files = files[:cut] if self.subset == "validation" else files[cut:]
            self.filenames.extend(os.path.join(name, f) for f in files)
            labels.extend([label] * len(files))
        self.classes = np.array(labels, dtype=np.int32)
        self.samples = len(self.filenames)
        if self.samples == 0:
            raise ValueError(f"subset={self.subset!r} holds no images with validation_split="
                             f"{gen.validation_split!r}; received directory={directory!r}")
        self.filepaths = [os.path.join(directory, f) for f in self.filenames]
        print(f"Found {self.samples} images belonging to {self.num_classes} classes.")
        super().__init__(self.samples, batch_size, shuffle, seed)

    @property
    def labels(self):
        return self.classes

    def _get_batch(self, index_array, rng):
        batch_x = np.stack([_pillow.load_image(self.filepaths[i], self.color_mode, self.target_size,
                                               self.interpolation) for i in index_array])
        if self.data_format == "channels_first":
            batch_x = _layout.nhwc_to_nchw(batch_x)
        batch_x = self.image_data_generator._augment(batch_x, rng)
        labels = self.classes[index_array]
        if self.class_mode is None:
            return batch_x
        if self.class_mode == "input":
            return batch_x, batch_x.copy()
        if self.class_mode == "categorical":
            batch_y = np.zeros((len(index_array), self.num_classes), dtype=np.float32)
            batch_y[np.arange(len(index_array)), labels] = 1.0
            return batch_x, batch_y
        return batch_x, labels.astype(np.float32)          # binary, sparse: as Keras, float32 labels

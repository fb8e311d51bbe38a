"""Regenerate the seed corpus of the hostile-file fuzz tests (``tests/robustness/corpus/``).

The seeds are small valid files in every format fastconv reads, written by the tools that write them in the wild
(Keras 3, PyTorch, onnx, Pillow, h5py) and by fastconv itself. They are committed, so the fuzz tests need none
of those tools; run this script (``python tests/robustness/make_corpus.py``) only to refresh them. All seeds hold
the same tiny network, so one fastconv model of each layout (``tests/robustness/_hostile_targets.py``) loads each of
them cleanly: a Conv2D(2, 3) + BatchNormalization + ReLU + MaxPooling2D(2) + Flatten + Dense(3) on 6x6x1 inputs.
"""
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
sys.path.insert(0, HERE)

os.environ.setdefault("KERAS_BACKEND", "torch")


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        v = (rng.standard_normal(tuple(w.shape)) * 0.3).astype(np.float32)
        values.append(np.abs(v) + 0.5 if "variance" in w.path else v)
    model.set_weights(values)


def keras_files():
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(2, 3, name="conv2d"),
                              L.BatchNormalization(name="batch_normalization"), L.Activation("relu", name="re_lu"),
                              L.MaxPooling2D(2, name="max_pooling2d"), L.Flatten(name="flatten"),
                              L.Dense(3, name="dense")], name="tiny")
    _random_weights(model)
    model.save(os.path.join(CORPUS, "keras_model.keras"))
    model.save_weights(os.path.join(CORPUS, "keras_weights.weights.h5"))
    model.save(os.path.join(CORPUS, "keras_legacy_model.h5"))


def torch_files():
    import torch

    from fastconv.formats.safetensors import write_safetensors

    nn = torch.nn
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                           nn.Linear(8, 3)).eval()
    with torch.no_grad():
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    torch.save(module.state_dict(), os.path.join(CORPUS, "torch_state_dict.pt"))
    torch.save({"epoch": 3, "model": module.state_dict(), "note": "checkpoint"},
               os.path.join(CORPUS, "torch_checkpoint.pt"))
    write_safetensors(os.path.join(CORPUS, "torch_weights.safetensors"),
                      {k: v.numpy() for k, v in module.state_dict().items()})


def onnx_file():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)

    def init(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    initializers = [init("w", 2, 1, 3, 3), init("b", 2), init("gamma", 2), init("beta", 2), init("mean", 2),
                    numpy_helper.from_array(np.array([0.7, 1.3], np.float32), "var"), init("fc_w", 8, 3),
                    init("fc_b", 3)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], name="bn",
                              epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save_model(model, os.path.join(CORPUS, "tiny.onnx"))


def image_files():
    from PIL import Image

    rng = np.random.default_rng(4)
    rgb = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")
    rgb.save(os.path.join(CORPUS, "image_rgb.png.bin"), format="PNG")
    rgb.convert("L").save(os.path.join(CORPUS, "image_gray.png.bin"), format="PNG")
    rgb.convert("RGBA").save(os.path.join(CORPUS, "image_rgba.png.bin"), format="PNG")
    rgb.convert("P").save(os.path.join(CORPUS, "image_palette.png.bin"), format="PNG", transparency=0)
    rgb.save(os.path.join(CORPUS, "image.jpg"), quality=90)
    rgb.save(os.path.join(CORPUS, "image_progressive.jpg"), quality=90, progressive=True)
    rgb.convert("P").save(os.path.join(CORPUS, "image.gif"))
    rgb.save(os.path.join(CORPUS, "image.bmp"))
    rgb.save(os.path.join(CORPUS, "image.tiff"), compression="tiff_lzw")
    rgb.save(os.path.join(CORPUS, "image.webp"), lossless=True)


def main():
    os.makedirs(CORPUS, exist_ok=True)
    import fastconv
    from _hostile_targets import channels_last_model

    model = channels_last_model()
    _random_weights(model)
    model.compile(optimizer="adam", loss="mse", metrics=["mse"])
    x = np.random.default_rng(1).standard_normal((4, 6, 6, 1)).astype(np.float32)
    model.fit(x, np.zeros((4, 3), np.float32), epochs=1, batch_size=2, verbose=0, seed=0)  # optimizer state
    model.save(os.path.join(CORPUS, "fastconv_model.fcm"))
    model.save_weights(os.path.join(CORPUS, "fastconv_weights.fcw"))
    model.save_weights(os.path.join(CORPUS, "fastconv_keras3.weights.h5"))
    model.save_weights(os.path.join(CORPUS, "fastconv_legacy.h5"))
    keras_files()
    torch_files()
    onnx_file()
    image_files()
    # every seed must load cleanly, or the fuzz tests would start from broken files
    from _hostile_targets import READERS, reader_for

    for name in sorted(os.listdir(CORPUS)):
        reader_for(name).load(os.path.join(CORPUS, name))
    sizes = {name: os.path.getsize(os.path.join(CORPUS, name)) for name in sorted(os.listdir(CORPUS))}
    print(json.dumps(sizes, indent=1), f"\n{sum(sizes.values())} bytes in {len(sizes)} seeds for "
          f"{len(READERS)} readers (fastconv {fastconv.__version__})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the fuzz seeds under fuzz/seeds/ (run from anywhere; needs only Python 3 and a built
quambac). compiler/tests/fuzz_regressions.rs fails when a seed no longer loads: rerun this then.

  cargo build --release --bin quambac && python3 fuzz/make_seeds.py

Seeds are small so that the fuzzers mutate structure, not megabytes of weights: 16-wide,
one-layer Mamba1/Mamba2 models with a 16-character vocabulary and random weights, their
state-spaces pytorch_model.bin, their compiled artifacts, and the real data.pkl of
../shared/models/mamba1-tiny-ss when it exists.
"""
import collections, io, json, os, pickle, random, struct, subprocess, sys, tempfile, types, zipfile

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")
QUAMBAC = os.path.join(ROOT, "target", "release", "quambac")
CHARS = list(" etaoinshrdlu.\n?")
V = len(CHARS)
random.seed(1)

# A character-level BPE tokenizer (no merges): token ids stay below the 16-row embedding.
TOKENIZER = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
             "pre_tokenizer": None, "post_processor": None, "decoder": None,
             "model": {"type": "BPE", "dropout": None, "unk_token": "?", "continuing_subword_prefix": None,
                       "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                       "vocab": {c: i for i, c in enumerate(CHARS)}, "merges": []}}


def random_values(name, n):
    if name.endswith("A_log"):
        return [random.uniform(0, 1) for _ in range(n)]
    if "norm" in name:
        return [1.0 + random.uniform(-.1, .1) for _ in range(n)]
    return [random.gauss(0, 0.2) for _ in range(n)]


def tensors(shapes):
    out = collections.OrderedDict()
    for name, shape in shapes:
        n = 1
        for d in shape:
            n *= d
        out[name] = (shape, struct.pack("<%df" % n, *random_values(name, n)))
    return out


def safetensors_bytes(ts):
    header, blobs, offset = {}, [], 0
    for name, (shape, data) in ts.items():
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def mamba2():
    d, expand, head_dim, n, layers = 16, 2, 8, 8, 1
    di = d * expand
    heads = di // head_dim
    config = {"model_type": "mamba2", "hidden_size": d, "expand": expand, "head_dim": head_dim, "num_heads": heads,
              "state_size": n, "n_groups": 1, "num_hidden_layers": layers, "vocab_size": V, "conv_kernel": 4,
              "chunk_size": 8, "layer_norm_epsilon": 1e-5, "time_step_limit": [0.0, {"__float__": "Infinity"}],
              "tie_word_embeddings": True, "use_bias": False, "use_conv_bias": True, "residual_in_fp32": True,
              "time_step_rank": 2, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 0}
    conv, in_proj = di + 2 * n, 2 * di + 2 * n + heads
    shapes = [("backbone.embeddings.weight", [V, d]), ("backbone.norm_f.weight", [d])]
    for i in range(layers):
        p = "backbone.layers.%d." % i
        shapes += [(p + "norm.weight", [d]), (p + "mixer.A_log", [heads]), (p + "mixer.D", [heads]),
                   (p + "mixer.dt_bias", [heads]), (p + "mixer.conv1d.weight", [conv, 1, 4]),
                   (p + "mixer.conv1d.bias", [conv]), (p + "mixer.in_proj.weight", [in_proj, d]),
                   (p + "mixer.norm.weight", [di]), (p + "mixer.out_proj.weight", [d, di])]
    return config, tensors(shapes)


def mamba1():
    d, expand, n, rank, layers = 16, 2, 4, 2, 1
    di = d * expand
    config = {"model_type": "mamba", "hidden_size": d, "expand": expand, "intermediate_size": di, "state_size": n,
              "time_step_rank": rank, "num_hidden_layers": layers, "vocab_size": V, "conv_kernel": 4,
              "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "use_bias": False, "use_conv_bias": True,
              "residual_in_fp32": True, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 0}
    shapes = [("backbone.embeddings.weight", [V, d]), ("backbone.norm_f.weight", [d])]
    for i in range(layers):
        p = "backbone.layers.%d." % i
        shapes += [(p + "norm.weight", [d]), (p + "mixer.A_log", [di, n]), (p + "mixer.D", [di]),
                   (p + "mixer.conv1d.weight", [di, 1, 4]), (p + "mixer.conv1d.bias", [di]),
                   (p + "mixer.in_proj.weight", [2 * di, d]), (p + "mixer.x_proj.weight", [rank + 2 * n, di]),
                   (p + "mixer.dt_proj.weight", [di, rank]), (p + "mixer.dt_proj.bias", [di]),
                   (p + "mixer.out_proj.weight", [d, di])]
    return config, tensors(shapes)


def torch_zip_bytes(ts):
    """What torch.save writes for a state dict of contiguous f32 tensors, without torch: fake
    `torch` modules make pickle emit the same GLOBAL opcodes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    sys.modules.setdefault("torch", torch)
    sys.modules.setdefault("torch._utils", utils)
    FloatStorage = type("FloatStorage", (), {"__module__": "torch"})
    sys.modules["torch"].FloatStorage = FloatStorage

    def _rebuild_tensor_v2(*args):
        pass
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    sys.modules["torch._utils"]._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Storage:
        def __init__(self, key, numel):
            self.key, self.numel = key, numel

    class Tensor:
        def __init__(self, storage, shape):
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            stride, acc = [], 1
            for dim in reversed(self.shape):
                stride.insert(0, acc)
                acc *= dim
            return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel) if isinstance(obj, Storage) else None

    state_dict, blobs = collections.OrderedDict(), {}
    for i, (name, (shape, data)) in enumerate(ts.items()):
        blobs[str(i)] = data
        state_dict[name.replace("backbone.embeddings.", "backbone.embedding.")] = Tensor(Storage(str(i), len(data) // 4), shape)
    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump(state_dict)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        for key, data in blobs.items():
            z.writestr("archive/data/" + key, data)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def write(target, name, data):
    os.makedirs(os.path.join(SEEDS, target), exist_ok=True)
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def main():
    words = ["the", "tide", "rose", "on", "shore", ".", "\n", "a", "lion", "ran", "to", "sea", "is", "hot"]
    calib = " ".join(random.choice(words) for _ in range(4000))
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "calib.txt"), "w") as f:
            f.write(calib)
        for family, (config, ts), artifacts in [("mamba1", mamba1(), ["cpu-w8a8"]), ("mamba2", mamba2(), ["cpu-w4a8", "cpu-w4a16"])]:
            config_json = json.dumps(config).encode()
            write("checkpoint", family + "-tiny", struct.pack("<H", len(config_json)) + config_json + safetensors_bytes(ts))
            write("torch_zip", family + "-tiny-pytorch_model.bin", torch_zip_bytes(ts))
            model = os.path.join(tmp, family)
            os.makedirs(model)
            with open(os.path.join(model, "config.json"), "wb") as f:
                f.write(config_json)
            with open(os.path.join(model, "model.safetensors"), "wb") as f:
                f.write(safetensors_bytes(ts))
            with open(os.path.join(model, "tokenizer.json"), "w") as f:
                json.dump(TOKENIZER, f)
            for target in artifacts:
                out = os.path.join(tmp, family + target + ".qmb")
                subprocess.run([QUAMBAC, "compile", model, "--target", target, "--calib", os.path.join(tmp, "calib.txt"),
                                "--calib-samples", "4", "--calib-len", "64", "-o", out], check=True, capture_output=True)
                with open(out, "rb") as f:
                    write("artifact", family + "-" + target, f.read())
    real = os.path.join(ROOT, "..", "shared", "models", "mamba1-tiny-ss", "pytorch_model.bin")
    if os.path.exists(real):
        with zipfile.ZipFile(real) as z:
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            write("pickle", "mamba1-tiny-ss-data.pkl", z.read(pkl))


if __name__ == "__main__":
    main()

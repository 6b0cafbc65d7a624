#!/usr/bin/env python3
"""FP32 CPU prefill/decode tokens/s of Hugging Face transformers' Mamba / Mamba2.

Mirrors `quambac bench` (compiler/src/cli/bench.rs) so the numbers compare 1:1:
  prefill: best of 3 full forwards of a 512-token prompt, each from a fresh state
           (use_cache=False), logits for every position like our executor returns;
  decode:  prefill 16 tokens with use_cache=True, one warm-up step, then time
           64 single-token steps feeding back the argmax.
Prints one JSON line in the same schema as `quambac bench --json`.

On CPU transformers runs its slow pure-torch path (the mamba_ssm / causal_conv1d
CUDA kernels do not exist there), which is exactly what we compare against.
"""

import argparse
import inspect
import json
import os
import time

# Never reach for the Hub (weights are local, and kernel lookups would hang offline).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model dir (config.json + model.safetensors)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    # `dtype=` is the 5.x name of `torch_dtype=` (which now only warns): upcast f16/bf16 weights to f32.
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    assert all(q.dtype == torch.float32 for q in model.parameters()), "expected an FP32 model"
    model.eval()
    vocab = model.config.vocab_size
    # Same fixed prompt as quambac bench: speed does not depend on token values.
    prompt = torch.tensor([[(i * 7919 + 13) % vocab for i in range(a.prompt_len)]], dtype=torch.long)

    # The installed transformers (5.x) takes the recurrent state as `cache=` (the
    # 4.x `cache_params=` / `cache_position` API is deprecated), and returns it in
    # `out.cache`; a DynamicCache is created by the first use_cache=True forward.
    if "cache" not in inspect.signature(model.forward).parameters:
        raise SystemExit(f"transformers {transformers.__version__}: forward() has no `cache` argument; "
                         "this script targets the 5.x cache API (see cpu_fp32.sh for the pinned version)")

    def step(ids, cache):
        return model(input_ids=ids, cache=cache, use_cache=True)

    with torch.inference_mode():
        best = float("inf")
        for _ in range(max(1, a.repeats)):
            t = time.perf_counter()
            model(input_ids=prompt, use_cache=False)
            best = min(best, time.perf_counter() - t)

        head = prompt[:, : min(16, a.prompt_len)]
        cache = step(head, None).cache
        token = torch.tensor([[1]], dtype=torch.long)
        cache = step(token, cache).cache  # warm-up step, untimed (as in quambac bench)
        t = time.perf_counter()
        for _ in range(a.decode_tokens):
            out = step(token, cache)
            cache = out.cache
            token = out.logits[:, -1].argmax(-1, keepdim=True)
        decode = time.perf_counter() - t

    print(json.dumps({
        "engine": "transformers-fp32", "model": a.model, "threads": torch.get_num_threads(),
        "prompt_len": a.prompt_len, "decode_tokens": a.decode_tokens,
        "prefill_tokens_per_s": a.prompt_len / best, "decode_tokens_per_s": a.decode_tokens / decode,
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
    }))


if __name__ == "__main__":
    main()

"""The transformers FP16 implementation as the GPU peer: time to first token for a 1024-token
prompt and time per output token at batch 1 and 16, same prompts and method as `quambac cuda
bench` (CUDA events, median of repeats). Prints one JSON line."""
import argparse
import json
import statistics

import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--label", default="transformers-fp16")
ap.add_argument("--prompt-len", type=int, default=1024)
ap.add_argument("--batches", default="1,16")
ap.add_argument("--decode-tokens", type=int, default=32)
ap.add_argument("--repeats", type=int, default=3)
a = ap.parse_args()

model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float16).cuda().eval()
vocab = model.config.vocab_size


def timed(fn):
    times = []
    for i in range(a.repeats + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        if i:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


with torch.no_grad():
    prompt = torch.tensor([[(i * 7919 + 13) % vocab for i in range(a.prompt_len)]], device="cuda")
    torch.cuda.reset_peak_memory_stats()
    def first_token():
        try:
            logits = model(prompt, use_cache=False, logits_to_keep=1).logits
        except TypeError:  # older transformers: no logits_to_keep
            logits = model(prompt, use_cache=False).logits
        return logits[:, -1].argmax(-1)

    ttft = timed(first_token)
    tpot = {}
    for b in map(int, a.batches.split(",")):
        short = torch.tensor([[(i * 131 + 7) % vocab for i in range(16 * r, 16 * r + 16)] for r in range(b)], device="cuda")
        gen = lambda n: model.generate(short, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        t1 = timed(lambda: gen(1))
        tn = timed(lambda: gen(a.decode_tokens + 1))
        tpot[str(b)] = (tn - t1) / a.decode_tokens
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"engine": "transformers", "label": a.label, "model": a.model, "device": torch.cuda.get_device_name(),
                      "prompt_len": a.prompt_len, "ttft_ms": ttft, "tpot_ms": tpot, "weights_bytes": weights,
                      "gpu_bytes": torch.cuda.max_memory_allocated(), "transformers_fast_path": False}), flush=True)

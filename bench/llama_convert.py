"""Runs llama.cpp's convert_hf_to_gguf.py (from a checkout outside this repo) on a checkpoint.

The shared models use a custom 8192-token byte-level BPE (GPT-2 pre-tokenizer regex). The
converter only accepts tokenizers whose hash it knows and rejects these ones with
"BPE pre-tokenizer was not recognized". This wrapper tells it "gpt-2" (what the tokenizer's
ByteLevel pre-tokenizer is) and changes nothing else. Speed does not depend on it:
llama-bench feeds random token ids.

usage: llama_convert.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf
"""
import sys
from pathlib import Path

llama_dir, model_dir, out = sys.argv[1:4]
sys.path.insert(0, str(Path(llama_dir)))
sys.path.insert(0, str(Path(llama_dir) / "gguf-py"))

import convert_hf_to_gguf  # noqa: E402
from conversion.base import TextModel  # noqa: E402

TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f32", "--outfile", out]
convert_hf_to_gguf.main()

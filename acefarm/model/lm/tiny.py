"""A tiny random 5 Hz LM (a toy `Qwen3ForCausalLM`) with a real-shaped tokenizer, built offline.

The tokenizer is character level (a `tokenizers` WordLevel model) plus the LM's special tokens: the
chat markers, `<think>`/`</think>` and `<|audio_code_0..N-1|>`, with a Qwen-style chat template.
Every planning path runs on it on CPU; what it writes is random but, decoded with constraints, valid.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from acefarm.model.lm.protocol import THINK_CLOSE, THINK_OPEN, code_token

TINY_CODES = 64_000
"""Audio codes in the tiny tokenizer: the real codebook size (8·8·8·5·5·5), so any code the DiT's
audio tokenizer emits can be written."""
LM_RECORD = "acefarm-lm.json"
"""Marker file of a tiny LM directory."""
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's chat layout (`<|im_start|>role\\ncontent<|im_end|>`)."""
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", THINK_OPEN, THINK_CLOSE]


def build_tiny_tokenizer(codes: int = TINY_CODES) -> Any:
    """The tiny LM's `PreTrainedTokenizerFast`: printable characters, special tokens, `codes` audio codes."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable))
    vocab = {token: i for i, token in enumerate(_SPECIAL + chars + [code_token(i) for i in range(codes)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # A code token is one word, any other character is one word (fast: no 64k added tokens).
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|audio_code_\d+\|>|[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIAL])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        model_max_length=32_768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_lm(seed: int = 0, codes: int = TINY_CODES) -> tuple[Any, Any]:
    """(model, tokenizer): a random two-layer `Qwen3ForCausalLM` of width 32 and its tokenizer."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer(codes)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=32_768,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Qwen3ForCausalLM(config), tokenizer


def make_tiny_lm(directory: str | Path, seed: int = 0, codes: int = TINY_CODES) -> Path:
    """Build the tiny LM and save it (safetensors) with its tokenizer under `directory`; returns it."""
    path = Path(directory)
    model, tokenizer = build_tiny_lm(seed, codes)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    record = {"tiny": True, "note": "random weights: its plans are noise", "seed": seed, "audio_codes": codes}
    (path / LM_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return path

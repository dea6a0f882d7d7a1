"""The reference `LmBackend`: a transformers causal LM, decoded token by token with a KV cache.

Classifier-free guidance runs the unconditional prompt as a second sequence with its own cache;
forced text is fed to both. Masks come from `TokenTable` (one decode of the vocabulary, at load).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from acefarm.model.lm.decode import (
    Choice,
    Codes,
    DecodeCancelled,
    Forced,
    FreeLine,
    FreeText,
    Hooks,
    LmCall,
    Sampling,
    Segment,
)
from acefarm.model.lm.fields import FieldChoice
from acefarm.model.lm.protocol import CODE_RE, THINK_CLOSE, THINK_OPEN


class TokenTable:
    """The vocabulary as text: which ids are audio codes, which end a sequence, which spell what."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.size = vocab_size
        self.text: list[str] = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
        self.text += [""] * (vocab_size - len(self.text))
        code_ids = [i for i, s in enumerate(self.text) if CODE_RE.fullmatch(s)]
        self.code_mask = self._mask(code_ids)
        ends = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.pad_token_id}
        self.end_ids = frozenset(i for i in ends if isinstance(i, int) and 0 <= i < vocab_size)
        special = set(getattr(tokenizer, "all_special_ids", [])) | set(self.end_ids)
        self.text_mask = ~self.code_mask
        self.text_mask[[i for i in special if i < vocab_size]] = False
        self.text_mask[[i for i, s in enumerate(self.text) if not s]] = False
        self.line_mask = self.text_mask.clone()
        """Tokens of a one-line value: text without `<think>`/`</think>` (which would end the block early)."""
        self.line_mask[[i for i, s in enumerate(self.text) if THINK_OPEN in s or THINK_CLOSE in s]] = False
        self.start_mask = self.line_mask.clone()
        """Tokens that may open a value: text with something visible and no line break."""
        self.start_mask[[i for i, s in enumerate(self.text) if not s.strip() or "\n" in s]] = False
        self.end_mask = self._mask(sorted(self.end_ids))
        self._by_field: dict[str, dict[str, list[int]]] = {}

    def _mask(self, ids: list[int]) -> torch.Tensor:
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[ids] = True
        return mask

    def choice_ids(self, choice: FieldChoice, prefix: str) -> list[int]:
        """Ids whose text extends `prefix` towards some `value + newline` of `choice`."""
        by_text = self._by_field.get(choice.name)
        if by_text is None:
            charset = choice.charset
            by_text = {}
            for i, s in enumerate(self.text):
                if s and set(s) <= charset:
                    by_text.setdefault(s, []).append(i)
            self._by_field[choice.name] = by_text
        allowed: set[int] = set()
        for value in choice.values:
            target = value + "\n"
            if not target.startswith(prefix) or target == prefix:
                continue
            rest = target[len(prefix) :]
            for end in range(1, len(rest) + 1):
                allowed.update(by_text.get(rest[:end], ()))
        return sorted(allowed)


class _Sequence:
    """One prompt's running state: its KV cache and the logits of its next token."""

    def __init__(self, model: Any, ids: list[int], device: str) -> None:
        self._model = model
        self._device = device
        self._cache: Any = None
        self.logits = self.feed(ids)

    @torch.inference_mode()
    def feed(self, ids: list[int]) -> torch.Tensor:
        tensor = torch.tensor([ids], dtype=torch.long, device=self._device)
        out = self._model(input_ids=tensor, cache=self._cache, use_cache=True)
        self._cache = out.cache
        self.logits = out.logits[0, -1].float().cpu()
        return self.logits


class TransformersBackend:
    """Decodes with `AutoModelForCausalLM` (any device torch supports)."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = device
        self.table = TokenTable(tokenizer, int(model.config.vocab_size))
        self._last_rate: float | None = None

    def tokens_per_second(self) -> float | None:
        """Sampled tokens per second over the last call."""
        return self._last_rate

    def render_chat(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
        """`messages` through the tokenizer's chat template, as text."""
        text: str = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return text

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def run(self, call: LmCall, sampling: Sampling, hooks: Hooks) -> list[str]:
        """Decode every segment of `call` (see `acefarm.model.lm.decode`)."""
        started, sampled = time.monotonic(), 0
        generator = torch.Generator("cpu")
        generator.manual_seed(sampling.seed if sampling.seed is not None else torch.seed() % 2**63)
        seqs = [_Sequence(self.model, self.encode(call.prompt), self.device)]
        if sampling.cfg_scale > 1.0 and call.unconditional is not None:
            seqs.append(_Sequence(self.model, self.encode(call.unconditional), self.device))
        run = _Run(self, seqs, sampling, generator, hooks)
        texts: list[str] = []
        for segment in call.segments:
            texts.append(run.segment(segment))
        sampled = run.sampled
        elapsed = time.monotonic() - started
        self._last_rate = sampled / elapsed if sampled and elapsed > 0 else None
        return texts


class _Run:
    """The state of one `TransformersBackend.run`."""

    def __init__(
        self,
        backend: TransformersBackend,
        seqs: list[_Sequence],
        sampling: Sampling,
        gen: torch.Generator,
        hooks: Hooks,
    ) -> None:
        self.backend, self.table, self.seqs = backend, backend.table, seqs
        self.sampling, self.gen, self.hooks = sampling, gen, hooks
        self.sampled = 0
        self.fed_tail = ""

    def feed(self, ids: list[int]) -> None:
        if not ids:
            return
        for seq in self.seqs:
            seq.feed(ids)
        self.fed_tail = (self.fed_tail + "".join(self.table.text[i] for i in ids))[-8:]

    def force(self, text: str) -> str:
        self.feed(self.backend.encode(text))
        return text

    def segment(self, segment: Segment) -> str:
        match segment:
            case Forced(text):
                return self.force(text)
            case Choice(choice):
                return self.choice(choice)
            case FreeLine(max_tokens):
                return self.free_line(max_tokens)
            case FreeText(max_tokens, stop):
                return self.free_text(max_tokens, stop)
            case Codes(count):
                return "".join(self.table.text[self.draw(self.table.code_mask, feed=True)] for _ in range(count))
        raise TypeError(f"unknown segment {segment!r}")  # pragma: no cover

    def logits(self) -> torch.Tensor:
        cond = self.seqs[0].logits
        if len(self.seqs) == 1:
            return cond.clone()
        uncond = self.seqs[1].logits
        return uncond + self.sampling.cfg_scale * (cond - uncond)

    def draw(self, allowed: torch.Tensor, *, feed: bool) -> int:
        """Sample one token among `allowed` (a bool mask); fed to the model when `feed`."""
        if self.hooks.cancelled():
            raise DecodeCancelled
        logits = self.logits()[: self.table.size]
        logits[~allowed] = float("-inf")
        token = _sample(logits, self.sampling, self.gen)
        self.sampled += 1
        self.hooks.on_token()
        if feed:
            self.feed([token])
        return token

    def choice(self, choice: FieldChoice) -> str:
        text = ""
        while not text.endswith("\n"):
            ids = self.table.choice_ids(choice, text)
            if not ids:  # a vocabulary without the characters: spell the first value out
                rest = next(v + "\n" for v in choice.values if (v + "\n").startswith(text))[len(text) :]
                return text + self.force(rest)
            mask = torch.zeros(self.table.size, dtype=torch.bool)
            mask[ids] = True
            text += self.table.text[self.draw(mask, feed=True)]
        return text

    def free_line(self, max_tokens: int) -> str:
        text = ""
        for _ in range(max_tokens):
            allowed = self.table.line_mask | self.table.end_mask if text.strip() else self.table.start_mask
            token = self.draw(allowed, feed=False)
            piece = self.table.text[token]
            if token in self.table.end_ids:
                break
            if text.endswith("\n") and not piece[:1].isspace():
                break  # the next key starts: the value is complete
            if "\n" in piece.rstrip("\n") and piece.split("\n", 1)[1][:1].strip():
                break  # a token that both ends the line and starts the next one
            self.feed([token])
            text += piece
        if not self.fed_tail.endswith("\n"):
            text += self.force("\n")
        return text

    def free_text(self, max_tokens: int, stop: str | None) -> str:
        text = ""
        for _ in range(max_tokens):
            token = self.draw(self.table.text_mask | self.table.end_mask, feed=False)
            if token in self.table.end_ids:
                break
            self.feed([token])
            text += self.table.text[token]
            if stop is not None and stop in text:
                break
        return text


def _sample(logits: torch.Tensor, sampling: Sampling, gen: torch.Generator) -> int:
    """Temperature, top-k and top-p sampling (greedy at temperature 0) over finite logits."""
    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits / sampling.temperature
    if sampling.top_k:
        kth = torch.topk(logits, min(sampling.top_k, logits.numel())).values[-1]
        logits[logits < kth] = float("-inf")
    if sampling.top_p is not None and 0 < sampling.top_p < 1:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) > sampling.top_p
        logits[order[drop]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))

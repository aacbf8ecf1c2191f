"""The umT5-XXL text encoder of Wan2.1, run through transformers' `UMT5EncoderModel`.

`WanTextEncoder.encode(prompts)` reproduces the official `T5EncoderModel.__call__` followed by the DiT's
padding: clean each prompt (ftfy, HTML unescape twice, collapse whitespace), tokenize to `max_length`
(512) tokens with EOS and right padding (longer prompts are truncated, as the official code does), run the
encoder with the attention mask, keep the rows of the real tokens (EOS included) and zero the rest. The
result is the `[B, 512, d_model]` context the DiT consumes.

Prompt embeddings are cached on disk (`prompt_cache.PromptCache`), keyed by model, tokenizer, prompt and
length, so a repeated prompt costs a file read instead of a forward pass of a 5.7 B-parameter encoder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pusa_fw.errors import CheckpointError, InputError

from pusa_fw_wan.text.prompt_cache import PromptCache, default_prompt_cache_dir, file_identity
from pusa_fw_wan.text.checkpoint import (
    build_umt5_encoder,
    load_t5_file,
    load_umt5_directory,
    to_transformers_keys,
    umt5_config,
)
from pusa_fw_wan.text.tokenizer import clean_prompt, load_tokenizer, tokenizer_identity
from pusa_fw_wan.weights import CHECKPOINT_FILE_SUFFIXES

__all__ = ["DEFAULT_MAX_LENGTH", "WanTextEncoder", "clean_prompt"]

DEFAULT_MAX_LENGTH = 512
_USE_DEFAULT_CACHE: Any = object()


class WanTextEncoder:
    """umT5 encoder + tokenizer + prompt cache; turns prompts into the DiT's text context.

    Args:
        model: a `transformers.UMT5EncoderModel`.
        tokenizer: a transformers tokenizer that appends EOS (id 1) and pads with id 0.
        max_length: tokens per prompt (512 for Wan2.1).
        cache_dir: prompt-cache directory, or `None` for no cache.
        model_identity: a string that changes when the weights change (see `prompt_cache.file_identity`);
            required when `cache_dir` is set. `from_pretrained` fills it in.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        cache_dir: str | os.PathLike[str] | None = None,
        model_identity: str | None = None,
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise InputError(f"max_length={max_length!r} must be a positive integer (Wan2.1 uses 512)")
        if cache_dir is not None and model_identity is None:
            raise InputError(
                "a prompt cache needs model_identity (use from_pretrained, or pass cache_dir=None)"
            )
        if getattr(tokenizer, "padding_side", "right") != "right":
            raise InputError(
                f"tokenizer pads on the {tokenizer.padding_side!r}; the umT5 encoder expects right padding: "
                "set tokenizer.padding_side = 'right'"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache = PromptCache(cache_dir) if cache_dir is not None else None
        self.model_identity = model_identity
        self._tokenizer_id: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        tokenizer: str | os.PathLike[str] | Any | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: str | torch.device = "cpu",
        max_length: int = DEFAULT_MAX_LENGTH,
        cache_dir: str | os.PathLike[str] | None = _USE_DEFAULT_CACHE,
        **config: Any,
    ) -> WanTextEncoder:
        """Load the encoder from the official `.pth`, a `.safetensors` file or a transformers directory.

        Args:
            path: `models_t5_umt5-xxl-enc-bf16.pth` (or a `.safetensors` with the same keys, or with
                transformers keys), or a transformers model directory.
            tokenizer: tokenizer directory (or a loaded tokenizer). Default: `path` itself when it is a
                directory, else `<path's folder>/google/umt5-xxl` (the layout of the Wan2.1 release).
            dtype: weight dtype; `None` keeps the checkpoint's (bf16 for the official file).
            device: where the model runs.
            max_length: tokens per prompt.
            cache_dir: prompt-cache directory; default `~/.cache/pusa_fw/prompts`; `None` disables it.
            **config: `UMT5Config` values overriding the umT5-XXL defaults (e.g. for small test models:
                `vocab_size=512, d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2`).

        Raises:
            CheckpointError: missing or unreadable weights, or weights that do not fit the config.
            InputError: no tokenizer found, unknown config keys.
        """
        source = Path(path).expanduser()
        if not source.exists():
            raise CheckpointError(f"text-encoder checkpoint {str(source)!r} does not exist; check the path")
        if tokenizer is None:  # resolved before the (large) weights are read, so a mistake fails fast
            tokenizer = source if source.is_dir() else source.parent / "google" / "umt5-xxl"
            if not tokenizer.is_dir():
                raise InputError(
                    f"no tokenizer given and {str(tokenizer)!r} does not exist; "
                    "pass tokenizer=<umT5 tokenizer directory>"
                )
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(tokenizer)
        if source.is_dir():
            model = load_umt5_directory(source, dtype=dtype, **config)
            identity_files = file_identity(source, CHECKPOINT_FILE_SUFFIXES)
        else:
            umt5 = umt5_config(**config)  # checks the keys before the weights are read
            state_dict = to_transformers_keys(load_t5_file(source), source=str(source))
            model = build_umt5_encoder(state_dict, umt5, dtype=dtype, source=str(source))
            identity_files = file_identity(source)
        model = model.to(device)
        settings = json.dumps({"dtype": str(model.dtype), "config": config}, sort_keys=True, default=str)
        if cache_dir is _USE_DEFAULT_CACHE:
            cache_dir = default_prompt_cache_dir()
        return cls(
            model,
            tokenizer,
            max_length=max_length,
            cache_dir=cache_dir,
            model_identity=f"{identity_files}|{settings}",
        )

    @property
    def d_model(self) -> int:
        """Width of the embeddings (4096 for umT5-XXL)."""
        return int(self.model.config.d_model)

    @property
    def device(self) -> torch.device:
        return self.model.shared.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.shared.weight.dtype

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize already-cleaned prompts to `max_length` tokens (EOS appended, right padding).

        Returns:
            `input_ids` `[B, max_length]` int64 and `attention_mask` `[B, max_length]` int64 (1 = real token).
        """
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    def encode_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the encoder on token ids (no cutting, no cache).

        Padded positions are masked as keys; their own output rows are computed all the same (as in the
        official encoder), so zero them if they must not count.

        Args:
            input_ids: `[B, L]` integer token ids.
            attention_mask: `[B, L]`, 1 for real tokens, 0 for padding.

        Returns:
            `[B, L, d_model]` last hidden states, in the model's dtype, on its device.
        """
        if input_ids.ndim != 2 or input_ids.shape != attention_mask.shape:
            raise InputError(
                f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} "
                "must both be [B, L]"
            )
        if input_ids.is_floating_point() or input_ids.numel() == 0:
            raise InputError(f"input_ids must be a non-empty integer tensor, got {input_ids.dtype}")
        vocab_size = int(self.model.config.vocab_size)
        if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size:
            raise InputError(
                f"token ids range over [{int(input_ids.min())}, {int(input_ids.max())}] but the vocabulary "
                f"has {vocab_size} entries; the tokenizer does not match the model"
            )
        with torch.no_grad():
            output = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
            )
        return output.last_hidden_state

    def _check_eos(self, input_ids: torch.Tensor, lengths: list[int]) -> None:
        eos = self.tokenizer.eos_token_id
        last_tokens = [
            int(input_ids[row, length - 1]) if length else None for row, length in enumerate(lengths)
        ]
        if eos is None or any(token != eos for token in last_tokens):
            raise InputError(
                f"the tokenizer does not end prompts with EOS (eos_token_id={eos}, "
                f"last tokens {last_tokens}); "
                "use the umT5 tokenizer (google/umt5-xxl), which appends </s>"
            )

    def encode(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Encode prompts to the DiT context, using and filling the prompt cache.

        Only the rows up to the longest real length in the batch are run through the encoder: real rows
        never attend to padding keys, so their values are those of the full 512-token pass (to fp32
        rounding), and the padding rows are zeroed anyway.

        Args:
            prompts: one prompt or a list of prompts (raw: they are cleaned here).

        Returns:
            `[B, max_length, d_model]`: rows `[:n_b]` the embeddings of the `n_b` real tokens of prompt
            `b` (EOS included), rows `[n_b:]` exactly zero; model dtype and device.
        """
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not texts or not all(isinstance(text, str) for text in texts):
            raise InputError(f"prompts must be a string or a non-empty list of strings, got {prompts!r}")
        cleaned = [clean_prompt(text) for text in texts]
        embeddings: dict[str, torch.Tensor] = {}
        keys: dict[str, str] = {}
        if self.cache is not None:
            if self._tokenizer_id is None:
                self._tokenizer_id = tokenizer_identity(self.tokenizer)
            for text in dict.fromkeys(cleaned):
                keys[text] = PromptCache.key(
                    self.model_identity or "", self._tokenizer_id, text, self.max_length
                )
                cached = self.cache.load(keys[text])
                if cached is not None:
                    embeddings[text] = cached
        missing = [text for text in dict.fromkeys(cleaned) if text not in embeddings]
        if missing:
            input_ids, attention_mask = self.tokenize(missing)
            lengths = attention_mask.sum(dim=1).tolist()
            self._check_eos(input_ids, lengths)
            longest = max(lengths)
            hidden = self.encode_ids(input_ids[:, :longest], attention_mask[:, :longest])
            for row, text in enumerate(missing):
                embeddings[text] = hidden[row, : lengths[row]].clone()
                if self.cache is not None:
                    self.cache.store(keys[text], embeddings[text], prompt=text)
        context = torch.zeros(len(texts), self.max_length, self.d_model, dtype=self.dtype, device=self.device)
        for index, text in enumerate(cleaned):
            embedding = embeddings[text]
            if embedding.shape[1] != self.d_model or embedding.shape[0] > self.max_length:
                raise CheckpointError(
                    f"cached embedding of {text[:40]!r} has shape {tuple(embedding.shape)}, expected "
                    f"[<= {self.max_length}, {self.d_model}]; clear the prompt cache {self.cache.directory}"
                )
            context[index, : embedding.shape[0]] = embedding.to(device=self.device, dtype=self.dtype)
        return context

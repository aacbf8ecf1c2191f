"""umT5 text encoder: parity with the official Wan encoder, prompt cleaning, padding, and the prompt cache.

The reference is fixture case 4 (`t5/`): tiny random weights under the official key names and the
outputs of the official `T5Encoder`. The tokenizer is a small WordLevel one built here (the real umT5
tokenizer cannot be downloaded), with `<pad>` = 0 and `</s>` = 1 appended to every prompt like umT5's.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pusa_fw.errors import CheckpointError, InputError
from pusa_fw_wan import WanTextEncoder
from pusa_fw_wan.text.encoder import clean_prompt

# tests/wan/ -> the reference fixtures are in tests/fixtures/ (inside the repository).
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "wan_reference"
T5_WEIGHTS = FIXTURES / "t5" / "umt5_tiny.safetensors"
T5_IO = FIXTURES / "t5" / "t5_io.safetensors"
TINY_CONFIG = {"vocab_size": 512, "d_model": 64, "d_kv": 32, "d_ff": 128, "num_layers": 2, "num_heads": 2}
# README: the official fp32 floor is 1.5e-6 and 1e-5 the pass threshold.
TOLERANCE = 1e-5
WORDS = ["a", "cat", "dog", "sits", "on", "the", "red", "&", "café", "beach", "<", "at", "night"]


def build_tokenizer(directory: Path, *, append_eos: bool = True) -> Path:
    """Save a WordLevel tokenizer (`<pad>` 0, `</s>` 1, `<unk>` 2, then WORDS) loadable by AutoTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{word: index + 3 for index, word in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if append_eos:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("umt5_tokenizer"))


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(T5_IO))


def load_encoder(tokenizer_dir: Path, path: Path = T5_WEIGHTS, **kwargs: object) -> WanTextEncoder:
    kwargs.setdefault("cache_dir", None)
    return WanTextEncoder.from_pretrained(path, tokenizer=tokenizer_dir, **TINY_CONFIG, **kwargs)


def count_forward_calls(encoder: WanTextEncoder) -> list[tuple[int, ...]]:
    """Record the input_ids shape of every forward pass of the encoder's model."""
    calls: list[tuple[int, ...]] = []

    def record(module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        calls.append(tuple(kwargs["input_ids"].shape))

    encoder.model.register_forward_hook(record, with_kwargs=True)
    return calls


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def test_encode_ids_matches_the_official_encoder(tokenizer_dir: Path, reference: dict) -> None:
    encoder = load_encoder(tokenizer_dir)
    assert encoder.d_model == 64 and encoder.dtype == torch.float32
    assert encoder.model.shared is encoder.model.encoder.embed_tokens  # tied, one copy
    out = encoder.encode_ids(reference["ids"], reference["mask"])
    assert out.shape == reference["out"].shape == (2, 77, 64)
    assert max_error(out, reference["out"]) <= TOLERANCE
    lengths = reference["mask"].sum(dim=1)
    cut_and_padded = torch.zeros_like(out)
    for row, length in enumerate(lengths.tolist()):
        cut_and_padded[row, :length] = out[row, :length]
    assert max_error(cut_and_padded, reference["out_zero_padded"]) <= TOLERANCE


def test_trimming_the_padding_keeps_the_real_rows(tokenizer_dir: Path, reference: dict) -> None:
    """Row 0 has 45 real tokens: encoding only those equals the official 77-token pass on them."""
    encoder = load_encoder(tokenizer_dir)
    trimmed = encoder.encode_ids(reference["ids"][:1, :45], reference["mask"][:1, :45])
    assert max_error(trimmed, reference["out"][:1, :45]) <= TOLERANCE


def test_pth_safetensors_and_transformers_directory_agree(
    tokenizer_dir: Path, reference: dict, tmp_path: Path
) -> None:
    weights = load_file(str(T5_WEIGHTS))
    official_pth = tmp_path / "models_t5_umt5-xxl-enc-tiny.pth"
    torch.save(weights, official_pth)
    from_pth = load_encoder(tokenizer_dir, official_pth)
    expected = reference["out"]
    assert max_error(from_pth.encode_ids(reference["ids"], reference["mask"]), expected) <= TOLERANCE
    model_dir = tmp_path / "umt5_transformers"
    from_pth.model.save_pretrained(str(model_dir))
    shutil.copytree(tokenizer_dir, model_dir, dirs_exist_ok=True)
    from_dir = WanTextEncoder.from_pretrained(model_dir, cache_dir=None)  # config and tokenizer from the dir
    assert max_error(from_dir.encode_ids(reference["ids"], reference["mask"]), expected) <= TOLERANCE
    renamed = tmp_path / "transformers_keys.safetensors"
    state = {key: value for key, value in from_pth.model.state_dict().items() if "embed_tokens" not in key}
    save_file({key: value.contiguous() for key, value in state.items()}, str(renamed))
    from_renamed = load_encoder(tokenizer_dir, renamed)
    assert max_error(from_renamed.encode_ids(reference["ids"], reference["mask"]), expected) <= TOLERANCE
    half = load_encoder(tokenizer_dir, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert half.model.encoder.block[0].layer[0].SelfAttention.q.weight.dtype == torch.bfloat16


def test_clean_prompt_follows_the_official_cleaning() -> None:
    assert clean_prompt("  a\tcat \n\n on  the beach  ") == "a cat on the beach"
    assert clean_prompt("cat &amp;amp; dog &lt; night") == "cat & dog < night"  # unescaped twice
    assert clean_prompt("cafÃ© at night") == "café at night"  # ftfy repairs mojibake
    assert clean_prompt("") == ""


def test_encode_cleans_pads_to_512_and_zeroes_the_padding(tokenizer_dir: Path) -> None:
    encoder = load_encoder(tokenizer_dir)
    prompts = ["a  cat sits on the\n red &amp;amp; beach", "dog at night", "cafÃ© zebra"]
    context = encoder.encode(prompts)
    assert context.shape == (3, 512, 64) and context.dtype == torch.float32
    cleaned = [clean_prompt(prompt) for prompt in prompts]
    input_ids, attention_mask = encoder.tokenize(cleaned)
    assert input_ids.shape == (3, 512)
    lengths = attention_mask.sum(dim=1).tolist()
    assert lengths == [len(text.split()) + 1 for text in cleaned] == [9, 4, 3]  # words + EOS
    assert int(input_ids[2, 1]) == 2  # "zebra" is unknown to the toy vocabulary
    full_pass = encoder.encode_ids(input_ids, attention_mask)  # all 512 positions, as the official code
    for row, length in enumerate(lengths):
        assert max_error(context[row, :length], full_pass[row, :length]) <= TOLERANCE
        assert bool((context[row, length:] == 0).all())
        assert bool((context[row, :length].abs().sum(dim=1) > 0).all())
    # the cleaned prompt alone gives the same rows (a batch of one rounds differently from a batch of three)
    assert max_error(encoder.encode("a cat sits on the red & beach")[0], context[0]) <= TOLERANCE
    assert max_error(encoder.encode(prompts[1:2])[0], context[1]) <= TOLERANCE


def test_prompt_cache_hits_skip_the_model(tokenizer_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompts"
    first = load_encoder(tokenizer_dir, cache_dir=cache_dir)
    first_calls = count_forward_calls(first)
    context = first.encode(["a cat on the beach", "dog at night", "a  cat on the beach"])
    assert first_calls == [(2, 6)]  # two distinct prompts, trimmed to the longest (5 words + EOS)
    assert len(list(cache_dir.rglob("*.safetensors"))) == 2
    second = load_encoder(tokenizer_dir, cache_dir=cache_dir)  # a new process would do the same
    second_calls = count_forward_calls(second)
    again = second.encode(["a cat on the beach", "dog at night", "a cat on the beach"])
    assert second_calls == []
    assert torch.equal(again, context)
    mixed = second.encode(["dog at night", "the red cat"])
    assert second_calls == [(1, 4)]  # only the new prompt runs
    assert torch.equal(mixed[0], context[1])
    shorter = load_encoder(tokenizer_dir, cache_dir=cache_dir, max_length=64)
    shorter_calls = count_forward_calls(shorter)
    assert shorter.encode("dog at night").shape == (1, 64, 64) and len(shorter_calls) == 1


def test_prompt_cache_is_keyed_by_the_model_file(tokenizer_dir: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "prompts"
    weights = tmp_path / "umt5.safetensors"
    shutil.copyfile(T5_WEIGHTS, weights)
    load_encoder(tokenizer_dir, weights, cache_dir=cache_dir).encode("dog at night")
    status = weights.stat()
    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns + 1_000_000_000))  # "a new checkpoint"
    changed = load_encoder(tokenizer_dir, weights, cache_dir=cache_dir)
    calls = count_forward_calls(changed)
    changed.encode("dog at night")
    assert len(calls) == 1 and len(list(cache_dir.rglob("*.safetensors"))) == 2


def test_load_errors_name_the_fix(tokenizer_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="d_model=64, d_kv=32, d_ff=128, num_layers=2, num_heads=2"):
        WanTextEncoder.from_pretrained(T5_WEIGHTS, tokenizer=tokenizer_dir, cache_dir=None)  # XXL defaults
    with pytest.raises(CheckpointError, match="does not exist"):
        load_encoder(tokenizer_dir, tmp_path / "missing.pth")
    with pytest.raises(InputError, match="hidden_size_typo"):
        load_encoder(tokenizer_dir, hidden_size_typo=3)
    with pytest.raises(InputError, match="tokenizer"):
        # no tokenizer given and no google/umt5-xxl folder beside the weights
        WanTextEncoder.from_pretrained(T5_WEIGHTS, cache_dir=None, **TINY_CONFIG)
    pickled = tmp_path / "pickled.pth"
    torch.save({"token_embedding.weight": torch.zeros(2, 2), "scale": Fraction(1, 2)}, pickled)
    with pytest.raises(CheckpointError, match="without pickle"):
        load_encoder(tokenizer_dir, pickled)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(CheckpointError, match=r"token_embedding\.weight"):
        load_encoder(tokenizer_dir, foreign)
    extra = tmp_path / "extra.safetensors"
    save_file({**load_file(str(T5_WEIGHTS)), "blocks.0.attn.bias": torch.zeros(2)}, str(extra))
    with pytest.raises(CheckpointError, match=r"blocks\.0\.attn\.bias"):
        load_encoder(tokenizer_dir, extra)


def test_bad_prompts_and_tokenizers_are_input_errors(tokenizer_dir: Path, tmp_path: Path) -> None:
    encoder = load_encoder(tokenizer_dir)
    with pytest.raises(InputError, match="non-empty list"):
        encoder.encode([])
    with pytest.raises(InputError, match="vocabulary"):
        encoder.encode_ids(torch.tensor([[5, 600, 1]]), torch.ones(1, 3, dtype=torch.long))
    no_eos = build_tokenizer(tmp_path / "no_eos", append_eos=False)
    with pytest.raises(InputError, match="EOS"):
        load_encoder(no_eos).encode("a cat")


def test_loading_assigns_the_checkpoint_tensors_without_a_copy() -> None:
    from pusa_fw_wan.text.checkpoint import build_umt5_encoder, load_t5_file, to_transformers_keys, umt5_config

    state = to_transformers_keys(load_t5_file(T5_WEIGHTS))
    pointers = {key: tensor.data_ptr() for key, tensor in state.items()}
    model = build_umt5_encoder(state, umt5_config(**TINY_CONFIG))
    assert state == {}  # the loader took the tensors over
    loaded = dict(model.named_parameters())
    assert {key: loaded[key].data_ptr() for key in pointers} == pointers
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert not any(parameter.requires_grad for parameter in model.parameters()) and not model.training

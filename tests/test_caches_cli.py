"""``pusa-fw generate --cache NAME --cache-params JSON`` and the run-file keys ``cache`` / ``cache_params``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from pusa_fw.cli import main
from pusa_fw.errors import InputError
from pusa_fw_wan.cli.commands import GenerateCommand, config_from_args
from pusa_fw_wan.cli.generate_config import GenerateConfig, build_cache, validate_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _parse(argv: list[str]) -> GenerateConfig:
    parser = argparse.ArgumentParser()
    GenerateCommand().add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_flags_and_run_file_keys_pick_a_cache(tmp_path: Path) -> None:
    config = _parse(["--cache", "teacache", "--cache-params", '{"threshold": 0.25, "max_skips": 2}'])
    cache = build_cache(config)
    assert (cache.name, cache.threshold, cache.max_skips) == ("teacache", 0.25, 2)
    assert build_cache(validate_config({}, "option")).name == "none"
    run = tmp_path / "run.toml"
    run.write_text('prompt = "a cat"\ncache = "framecache"\ncache_params = {threshold = 0.4, chunk = 2}\n')
    cache = build_cache(_parse(["--config", str(run)]))
    assert (cache.name, cache.threshold, cache.chunk) == ("framecache", 0.4, 2)


@pytest.mark.parametrize(("argv", "fragments"), [
    (["--cache-params", "{threshold: 1}"], ["--cache-params", "not a JSON object"]),
    (["--cache", "teacache", "--cache-params", '{"treshold": 0.1}'], ["cache 'teacache'", "treshold"]),
    (["--cache", "teacache", "--cache-params", '{"threshold": -1}'], ["threshold", "greater than or equal"]),
    (["--cache", "tea"], ["unknown cache 'tea'", "teacache"]),
])
def test_bad_cache_input_is_one_line(argv: list[str], fragments: list[str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["generate", "--prompt", "x", *argv])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_generate_with_teacache_records_the_work_and_framecache_needs_partial(tmp_path: Path) -> None:
    from pusa_fw_wan.testing.tiny import build_tiny_wan

    tiny = build_tiny_wan(tmp_path / "tiny")
    base = {"model": tiny.root, "vae": tiny.vae, "text_encoder": tiny.text_encoder, "tokenizer": tiny.tokenizer,
            "prompt": "a cat", "height": 32, "width": 48, "num_frames": 9, "num_steps": 6, "cfg": 1.0}
    from pusa_fw_wan.cli.generate_run import run_generate

    plain = run_generate(validate_config({**base, "out": tmp_path / "plain.mp4"}, "option"))
    cached = run_generate(validate_config({**base, "out": tmp_path / "tea.mp4", "cache": "teacache",
                                           "cache_params": {"threshold": 1e9}}, "option"))
    record = json.loads((tmp_path / "tea.json").read_text())["cache"]
    assert record["name"] == "teacache" and record["params"]["threshold"] == 1e9
    assert record["work"]["calls"] == 2 and record["work"]["token_block_fraction"] == pytest.approx(2 / 6)
    assert not torch.equal(plain.result.latents, cached.result.latents)
    assert json.loads((tmp_path / "plain.json").read_text())["cache"]["name"] == "none"
    from pusa_fw.backbone import supports_partial
    from pusa_fw_wan.dit.model import WanDiT

    if not supports_partial(WanDiT):  # until WanDiT implements velocity_partial: the one-line refusal
        with pytest.raises(InputError, match="WanDiT has none: use --cache teacache"):
            run_generate(validate_config({**base, "out": tmp_path / "fc.mp4", "cache": "framecache"}, "option"))

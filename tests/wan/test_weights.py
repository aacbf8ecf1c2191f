"""The one weights module: every format reads back the same tensors, pickle is refused, keys are reported
the same way for every model, writes are atomic, and no other module of the plugin reads weights itself."""

from __future__ import annotations

import ast
import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from pusa_fw.errors import CheckpointError
from pusa_fw_wan.weights import (
    WEIGHT_SUFFIXES,
    compare_keys,
    read_shapes,
    read_tensor_file,
    write_tensor_file,
)

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "pusa_fw_wan"
TENSORS = {"a.weight": torch.arange(6.0).reshape(2, 3), "b.bias": torch.tensor([1, -2], dtype=torch.int64)}


def _assert_same(read: dict[str, torch.Tensor]) -> None:
    assert sorted(read) == sorted(TENSORS)
    for name, tensor in TENSORS.items():
        assert read[name].dtype == tensor.dtype and torch.equal(read[name], tensor), name


@pytest.mark.parametrize("suffix", WEIGHT_SUFFIXES)
def test_every_suffix_reads_back_the_same_tensors(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        write_tensor_file(path, TENSORS, {"format": "pt"})
    else:
        torch.save(dict(TENSORS), path)
    tensors, metadata = read_tensor_file(path)
    _assert_same(tensors)
    assert metadata == ({"format": "pt"} if suffix == ".safetensors" else {})
    assert {name: shape for name, (shape, _) in read_shapes([path]).items()} == {
        name: tuple(tensor.shape) for name, tensor in TENSORS.items()
    }


def test_shard_index_reads_all_shards_and_wrappers_are_removed(tmp_path: Path) -> None:
    save_file({"a.weight": TENSORS["a.weight"]}, str(tmp_path / "part-1.safetensors"))
    save_file({"b.bias": TENSORS["b.bias"]}, str(tmp_path / "part-2.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    weight_map = {"a.weight": "part-1.safetensors", "b.bias": "part-2.safetensors"}
    index.write_text(json.dumps({"weight_map": weight_map}))
    _assert_same(read_tensor_file(index)[0])
    torch.save({"state_dict": dict(TENSORS), "epoch": 3}, tmp_path / "trainer.ckpt")
    _assert_same(read_tensor_file(tmp_path / "trainer.ckpt")[0])
    (tmp_path / "part-2.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"lists shards that are missing: \['part-2.safetensors'\]"):
        read_tensor_file(index)


def test_bad_files_are_one_line_checkpoint_errors(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(1), "scale": Fraction(1, 2)}, tmp_path / "pickled.pt")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file" * 4)
    (tmp_path / "weights.npz").write_bytes(b"x")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    cases = {
        tmp_path / "pickled.pt": "without pickle",
        broken: "cannot read LoRA file .* as safetensors",
        tmp_path / "weights.npz": "unknown extension '.npz'",
        tmp_path / "list.pth": "holds a list, not a dict of tensors",
        tmp_path / "absent.safetensors": "does not exist",
    }
    for path, pattern in cases.items():
        with pytest.raises(CheckpointError, match=pattern) as error:
            read_tensor_file(path, what="LoRA file")
        assert "\n" not in str(error.value)


def test_a_failed_write_leaves_no_file_behind(tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    write_tensor_file(target, TENSORS)
    before = target.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own error type for a non-tensor value
        write_tensor_file(target, {"a.weight": "not a tensor"})  # type: ignore[dict-item]
    assert target.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out.safetensors"]


key_names = st.text("abc.", min_size=1, max_size=4)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple)


@given(
    found=st.dictionaries(key_names, shapes, max_size=6),
    expected=st.dictionaries(key_names, shapes, max_size=6),
)
def test_key_report_is_the_set_difference_and_the_shape_check(found: dict, expected: dict) -> None:
    report = compare_keys(found, expected)
    assert set(report.missing) == set(expected) - set(found)
    assert set(report.unexpected) == set(found) - set(expected)
    assert {name for name, _, _ in report.mismatched} == {
        name for name in set(found) & set(expected) if found[name] != expected[name]
    }
    assert report.ok == (found == expected)
    if report.ok:
        report.raise_if_bad("x.safetensors", "the model", "Fix it.")
    else:
        pattern = r"^checkpoint x.safetensors does not fit the model; .*\. Fix it\.$"
        with pytest.raises(CheckpointError, match=pattern):
            report.raise_if_bad("x.safetensors", "the model", "Fix it.")


_IO_MODULES = {"safetensors", "tempfile"}
# A training checkpoint directory is swapped in whole (a temporary directory, then a rename); the core's
# atomic writer works per file, so that module keeps its directory-level tempfile/os.replace.
_DIRECTORY_SWAPS = {"train/checkpoint.py": {"import tempfile", "os.replace"}}


def _weight_io(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for each torch.load call, safetensors/tempfile import and os.replace call."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                modules = [alias.name for alias in node.names]
            found += [(node.lineno, f"import {m}") for m in modules if m.split(".")[0] in _IO_MODULES]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = f"{owner.id}.{node.func.attr}" if isinstance(owner, ast.Name) else ""
            if name in {"torch.load", "torch.save", "os.replace"}:
                found.append((node.lineno, name))
    return found


def test_no_module_outside_weights_reads_or_writes_weight_files_itself() -> None:
    """One reader and one writer: `torch.load`, safetensors and temp files appear only in `weights/`."""
    offenders = [
        f"{module.relative_to(PLUGIN)}:{line}: {what}"
        for module in sorted(PLUGIN.rglob("*.py"))
        if module.parent.name != "weights"
        for line, what in _weight_io(ast.parse(module.read_text()))
        if what not in _DIRECTORY_SWAPS.get(module.relative_to(PLUGIN).as_posix(), set())
    ]
    assert not offenders, f"weight file I/O outside pusa_fw_wan.weights: {offenders}"

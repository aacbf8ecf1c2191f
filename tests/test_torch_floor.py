"""The torch floor in pyproject.toml covers every torch API the code uses that is newer than torch 2.4.

`FIRST_RELEASE` is the committed table: a source pattern -> the first torch release that has it (public
name or keyword). The test fails when

- a listed API is used while its first release is above the declared floor (``torch>=X.Y``);
- the code imports a name from ``torch.distributed.*`` / ``torch.nn.attention`` (or passes a listed
  keyword) that the table does not list: look up its first release and add it.

Versions (from the PyTorch release notes and docs of each release):
- ``torch.distributed.fsdp.{fully_shard, FSDPModule, MixedPrecisionPolicy}``: public in 2.6 (before:
  ``torch.distributed._composable.fsdp``).
- ``torch.distributed.tensor.{DTensor, distribute_tensor}`` and ``torch.distributed.tensor._utils``: 2.5
  (before: ``torch.distributed._tensor``).
- ``dcp.save/load(..., no_dist=)``: 2.6 (the 2.2-2.5 ``save``/``load`` had no ``no_dist``; only the
  deprecated ``save_state_dict``/``load_state_dict`` did).
- ``StateDictOptions(broadcast_from_rank0=)``: 2.4; ``torch.distributed.checkpoint.state_dict``: 2.2;
  ``init_device_mesh`` / ``DeviceMesh`` in ``torch.distributed.device_mesh``: 2.2.
- ``init_process_group(device_id=)``: 2.3; ``torch.nn.attention.{SDPBackend, sdpa_kernel}``: 2.3.
- ``torch.get_autocast_dtype`` / ``torch.is_autocast_enabled(device_type)``: 2.4.
- ``torch.float8_e4m3fn`` / ``float8_e5m2``: 2.1; ``load_state_dict(assign=)``, ``torch.load(mmap=)``: 2.1.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pusa_fw", "plugins", "schedules", "benchmarks")

FIRST_RELEASE: dict[str, tuple[int, int]] = {
    # public FSDP2
    "torch.distributed.fsdp:fully_shard": (2, 6),
    "torch.distributed.fsdp:FSDPModule": (2, 6),
    "torch.distributed.fsdp:MixedPrecisionPolicy": (2, 6),
    # public DTensor
    "torch.distributed.tensor:DTensor": (2, 5),
    "torch.distributed.tensor:distribute_tensor": (2, 5),
    "torch.distributed.tensor._utils:compute_local_shape_and_global_offset": (2, 5),
    # DCP and state dicts
    "torch.distributed.checkpoint.state_dict:StateDictOptions": (2, 2),
    "torch.distributed.checkpoint.state_dict:get_model_state_dict": (2, 2),
    "torch.distributed.checkpoint.state_dict:set_model_state_dict": (2, 2),
    "torch.distributed.checkpoint.state_dict:get_optimizer_state_dict": (2, 2),
    "torch.distributed.checkpoint.state_dict:set_optimizer_state_dict": (2, 2),
    "torch.distributed.checkpoint.metadata:TensorStorageMetadata": (2, 0),
    "keyword:no_dist=": (2, 6),
    "keyword:broadcast_from_rank0=": (2, 4),
    "keyword:device_id=": (2, 3),
    # meshes and functional collectives
    "torch.distributed.device_mesh:init_device_mesh": (2, 2),
    "torch.distributed.device_mesh:DeviceMesh": (2, 2),
    "torch.distributed.nn.functional:all_to_all_single": (1, 10),
    "torch.distributed.nn.functional:all_gather": (1, 10),
    # attention and autocast
    "torch.nn.attention:SDPBackend": (2, 3),
    "torch.nn.attention:sdpa_kernel": (2, 3),
    "call:torch.get_autocast_dtype(": (2, 4),
    "call:torch._assert_async(": (2, 1),  # the (tensor, message) overload
}

IMPORT = re.compile(r"^\s*from (torch\.(?:distributed|nn\.attention)[\w.]*) import \(?([^)\n]*)", re.MULTILINE)
MULTILINE_IMPORT = re.compile(r"^\s*from (torch\.(?:distributed|nn\.attention)[\w.]*) import \(\n(.*?)\)",
                              re.MULTILINE | re.DOTALL)


def declared_floor() -> tuple[int, int]:
    text = (ROOT / "pyproject.toml").read_text()
    found = re.findall(r'"torch>=(\d+)\.(\d+)[^"]*"', text)
    assert len(found) == 1, f"expected one torch>=X.Y requirement in pyproject.toml, found {found}"
    return int(found[0][0]), int(found[0][1])


def source_text() -> dict[Path, str]:
    return {path: path.read_text() for root in SOURCES for path in (ROOT / root).rglob("*.py")}


def used_apis() -> dict[str, list[str]]:
    """Every imported torch.distributed / nn.attention name, and every listed keyword or call, with files."""
    used: dict[str, list[str]] = {}
    for path, text in source_text().items():
        where = str(path.relative_to(ROOT))
        for module, names in [*IMPORT.findall(text), *MULTILINE_IMPORT.findall(text)]:
            for name in re.split(r"[,\s]+", names.split("#")[0]):
                if name and name not in ("(", "as") and name.isidentifier():
                    used.setdefault(f"{module}:{name}", []).append(where)
        for key in FIRST_RELEASE:
            kind, _, pattern = key.partition(":")
            if kind in ("keyword", "call") and pattern in text:
                used.setdefault(key, []).append(where)
    return used


def test_every_used_api_is_in_the_table() -> None:
    unlisted = {api: files for api, files in used_apis().items() if api not in FIRST_RELEASE}
    assert not unlisted, (
        f"torch APIs not in FIRST_RELEASE: {unlisted}; add each with the first torch release that has it"
    )


def test_the_declared_floor_has_every_used_api() -> None:
    floor = declared_floor()
    too_new = {api: FIRST_RELEASE[api] for api in used_apis() if FIRST_RELEASE.get(api, (0, 0)) > floor}
    assert not too_new, f"pyproject declares torch>={floor[0]}.{floor[1]} but the code uses {too_new}"


def test_the_scan_finds_the_apis_that_set_the_floor() -> None:
    """Guard against a scan that silently finds nothing (which would pass the two tests above)."""
    used = used_apis()
    assert "torch.distributed.fsdp:FSDPModule" in used
    assert "keyword:no_dist=" in used
    assert "torch.distributed.tensor:DTensor" in used
    assert max(FIRST_RELEASE[api] for api in used if api in FIRST_RELEASE) == declared_floor()

"""One distributed context (`ParallelContext`) and a trainer package without import cycles."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch

import pusa_fw_train
from import_walk import imported_modules, package_modules
from pusa_fw.errors import InputError
from pusa_fw_train.parallel import ParallelContext, parallel_context


def test_the_trainer_package_has_no_import_cycle() -> None:
    modules = {
        f"{dotted}.{path.stem}".removesuffix(".__init__"): (path, dotted)
        for path, dotted in package_modules(pusa_fw_train)
    }
    graph = {
        name: {imported for _, imported in imported_modules(path, dotted) if imported in modules and imported != name}
        for name, (path, dotted) in modules.items()
    }
    assert graph["pusa_fw_train.trainer"] >= {"pusa_fw_train.state", "pusa_fw_train.parallel"}
    visiting, done = set(), set()

    def visit(name: str, trail: list[str]) -> None:
        assert name not in visiting, "import cycle: " + " -> ".join([*trail, name])
        if name in done:
            return
        visiting.add(name)
        for other in sorted(graph[name]):
            visit(other, [*trail, name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_one_process_context_is_plain_and_carries_the_configured_timeout(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = parallel_context("auto", "lora", "cpu", timedelta(seconds=42))
    assert isinstance(context, ParallelContext) and not context.is_distributed and context.is_main
    assert context.timeout == timedelta(seconds=42) and context.device == torch.device("cpu")
    indices, loss_fn = context.split([3, 1, 2])
    assert indices == [3, 1, 2] and loss_fn is None
    with context.main_rank_work() as is_main:
        assert is_main
    live = torch.ones(3)
    copy = context.full_tensor(live)
    live.add_(1.0)
    assert torch.equal(copy, torch.ones(3)), "a checkpoint tensor must be a copy, not the live buffer"


def test_strategy_none_under_a_multi_process_launch_is_one_line(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="distributed='none' but 2 processes") as caught:
        parallel_context("none", "lora", "cpu")
    assert "\n" not in str(caught.value)

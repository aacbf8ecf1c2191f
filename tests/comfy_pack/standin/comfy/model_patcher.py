"""Stand-in: `ModelPatcher` (clone, wrappers, callbacks, model options)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch

events: list[str] = []
"""What the sampler protocol did, in order ("pre_run", "prepare_state", "cleanup"); the tests read it."""


class ModelPatcher:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.wrappers: dict[str, dict[str, list[Callable]]] = {}
        self.callbacks: dict[str, dict[str, list[Callable]]] = {}
        self.load_device = self.offload_device = torch.device("cpu")

    def clone(self) -> ModelPatcher:
        twin = ModelPatcher(self.model)
        twin.model_options = copy.deepcopy(self.model_options)
        twin.wrappers = {kind: {key: list(group) for key, group in groups.items()}
                         for kind, groups in self.wrappers.items()}
        twin.callbacks = copy.deepcopy(self.callbacks)
        return twin

    def add_wrapper_with_key(self, wrapper_type: str, key: str, wrapper: Callable) -> None:
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def memory_required(self, input_shape: list[int]) -> int:
        return self.model.memory_required(input_shape)

    def model_dtype(self) -> torch.dtype:
        return self.model.get_dtype()

    def get_nested_additional_models(self) -> list[Any]:
        return []

    def pre_run(self) -> None:
        self.model.current_patcher = self
        events.append("pre_run")

    def prepare_state(self, timestep: torch.Tensor) -> None:
        events.append("prepare_state")

    def cleanup(self) -> None:
        self.model.current_patcher = None
        events.append("cleanup")

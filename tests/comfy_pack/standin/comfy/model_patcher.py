"""Stand-in: `ModelPatcher` (clone, wrappers, callbacks, model options)."""

from __future__ import annotations

import copy
from typing import Any, Callable


class ModelPatcher:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_options: dict[str, Any] = {"transformer_options": {}}
        self.wrappers: dict[str, dict[str, list[Callable]]] = {}
        self.callbacks: dict[str, dict[str, list[Callable]]] = {}

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

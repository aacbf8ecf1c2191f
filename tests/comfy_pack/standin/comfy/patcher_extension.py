"""Stand-in: wrapper registry and executor (ComfyUI's `comfy.patcher_extension` behaviour)."""

from __future__ import annotations

import copy
from typing import Any, Callable


class WrappersMP:
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"


def get_all_wrappers(wrapper_type: str, transformer_options: dict) -> list[Callable]:
    found: list[Callable] = []
    for group in transformer_options.get("wrappers", {}).get(wrapper_type, {}).values():
        found.extend(group)
    return found


class WrapperExecutor:
    """Calls the wrappers outermost first; the last one's executor calls the original function."""

    def __init__(self, original: Callable, wrappers: list[Callable], index: int = 0) -> None:
        self.original, self.wrappers, self.index = original, list(wrappers), index

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: Any, wrappers: list[Callable]) -> WrapperExecutor:
        return cls(original, wrappers)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return WrapperExecutor(self.original, self.wrappers, self.index + 1).execute(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        if self.index >= len(self.wrappers):
            return self.original(*args, **kwargs)
        return self.wrappers[self.index](self, *args, **kwargs)


def copy_nested_dicts(value: dict) -> dict:
    return {key: copy_nested_dicts(item) if isinstance(item, dict) else copy.copy(item) for key, item in value.items()}


def merge_nested_dicts(target: dict, source: dict, copy_dict1: bool = True) -> dict:
    merged = copy_nested_dicts(target) if copy_dict1 else target
    for key, item in source.items():
        if isinstance(item, dict):
            merge_nested_dicts(merged.setdefault(key, {}), item, copy_dict1=False)
        elif isinstance(item, list):
            merged.setdefault(key, []).extend(item)
        else:
            merged[key] = item
    return merged

"""Stand-in: ComfyUI's model folder registry (folder name -> (folders, extensions)), as custom nodes use it.

`models_dir` is ComfyUI's ``models`` folder; the tests point it at a temporary folder (`reset`). A file
name is a path relative to one of the registered folders, with ``/`` separators; an empty extension set
lists every file.
"""

from __future__ import annotations

import os

models_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {}


def reset(models: str) -> None:
    global models_dir
    models_dir = models
    folder_names_and_paths.clear()


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    folders, _ = folder_names_and_paths.setdefault(folder_name, ([], set()))
    if full_folder_path not in folders:
        folders.insert(0, full_folder_path) if is_default else folders.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list[str]:
    return list(folder_names_and_paths[folder_name][0])


def get_filename_list(folder_name: str) -> list[str]:
    folders, extensions = folder_names_and_paths[folder_name]
    names: set[str] = set()
    for folder in folders:
        for root, _, files in os.walk(folder, followlinks=True):
            for file in files:
                if not extensions or os.path.splitext(file)[1].lower() in extensions:
                    names.add(os.path.relpath(os.path.join(root, file), folder).replace(os.sep, "/"))
    return sorted(names)


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    relative = os.path.relpath(os.path.join(os.sep, filename), os.sep)  # ComfyUI also drops leading ../
    for folder in folder_names_and_paths[folder_name][0]:
        candidate = os.path.join(folder, relative)
        if os.path.isfile(candidate):
            return candidate
    return None

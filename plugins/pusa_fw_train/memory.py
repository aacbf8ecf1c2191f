"""The memory options of a run and what they resolve to: the storage dtype of the frozen base
(``weights_dtype``), how the base is built (`build_base`), the device (``device = "auto"``) and FSDP2 mixed
precision. The combinations that cannot work are refused by the config (`pusa_fw_train.memory_options`).

``weights_dtype`` is the dtype the backbone stores its large frozen weights in (for Wan: the block
linears; `pusa_fw_wan.dit.storage`); they are computed in the run's precision inside the layer. The LoRA
factors and their AdamW state stay float32 whatever it is. ``auto`` is bfloat16 for a LoRA under
``precision = "bf16"`` and float32 otherwise; an fp8 file is kept in fp8 only when asked
(``float8_e4m3fn`` keeps its bits and scales). A full fine-tune trains every weight, so its weights are
float32.
"""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

from pusa_fw.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .adapter import TrainAdapter
    from .config import TrainConfig
    from .parallel import ParallelContext

__all__ = [
    "build_base",
    "fsdp_mixed_precision",
    "resolve_device",
    "resolve_gradient_checkpointing",
    "resolve_weights_dtype",
]


def resolve_weights_dtype(config: TrainConfig, adapter: TrainAdapter | None = None) -> str:
    """The storage dtype name of the run's frozen base (``auto`` resolved; see the module docstring).

    ``auto`` is float32 for a backbone whose adapter's ``build_model`` takes no ``weights_dtype``.
    """
    if config.mode == "full":
        return "float32"
    if config.weights_dtype != "auto":
        return config.weights_dtype
    if adapter is not None and not _accepts(adapter, "weights_dtype"):
        return "float32"
    return "bfloat16" if config.precision == "bf16" else "float32"


def _accepts(adapter: TrainAdapter, keyword: str) -> bool:
    parameters = inspect.signature(adapter.build_model).parameters
    return keyword in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def build_base(config: TrainConfig, adapter: TrainAdapter, device: torch.device | str) -> nn.Module:
    """The backbone's model from its adapter, its frozen base in the run's storage dtype.

    An adapter whose ``build_model`` takes ``weights_dtype`` and ``device`` keywords stores the large
    weights in that dtype as it reads them and puts them on `device` (Wan: meta-device construction and
    streaming assignment, never a float32 copy of a low-precision base); a block-swap run loads on the
    CPU (the swapped blocks stay there). Other adapters build on the CPU in float32.

    Raises:
        InputError: a `weights_dtype` other than float32 asked of an adapter that cannot store one.
    """
    storage = resolve_weights_dtype(config, adapter)
    options: dict[str, Any] = {}
    if storage != "float32":
        if not _accepts(adapter, "weights_dtype"):
            raise InputError(
                f"weights_dtype = {config.weights_dtype!r} but the {config.model.backbone!r} training "
                "adapter's build_model takes no weights_dtype; use weights_dtype = 'float32'"
            )
        options["weights_dtype"] = storage
    if not config.block_swap and _accepts(adapter, "device"):
        options["device"] = str(device)
    model = config.model
    return adapter.build_model(model.path, model.architecture, model.init_seed, **options)


_OFF = {"block_swap": "0", "activation_offload": "false", "token_chunks": "1"}


def resolve_gradient_checkpointing(config: TrainConfig, *, can: bool) -> bool:
    """Whether the run recomputes block activations in the backward.

    ``gradient_checkpointing = None`` (the default) is on for a LoRA when the model `can` (it has
    ``enable_gradient_checkpointing``) and off otherwise; true or false is what was asked.

    Raises:
        InputError: ``block_swap``, ``activation_offload`` or ``token_chunks`` on a model that cannot
            checkpoint (they act on checkpointed blocks).
    """
    wanted = config.gradient_checkpointing
    if wanted is None:
        wanted = config.mode == "lora" and can
    asked = {"block_swap": config.block_swap > 0, "activation_offload": config.activation_offload,
             "token_chunks": config.token_chunks > 1}
    for field, on in asked.items():
        if on and not can:
            raise InputError(
                f"{field} needs gradient checkpointing, but the {config.model.backbone!r} model has no "
                f"enable_gradient_checkpointing; set {field} = {_OFF[field]}"
            )
    return wanted


def resolve_device(name: str) -> str:
    """``"auto"``: the local rank's GPU (``LOCAL_RANK``, torchrun) when CUDA is available, else ``"cpu"``.

    Raises:
        InputError: a name torch does not know as a device.
    """
    import torch

    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0') or 0)}"
    try:
        torch.device(name)
    except RuntimeError:
        raise InputError(f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    return name


def fsdp_mixed_precision(config: TrainConfig, context: ParallelContext) -> dict[str, Any]:
    """`wrap_model` options of an FSDP2 run: bf16 parameters and fp32 gradient reduction under bf16.

    Empty for every other strategy (DDP reduces the fp32 trainable gradients as they are) and under
    ``precision = "fp32"``.
    """
    import torch

    if config.precision != "bf16" or context.strategy != "fsdp" or not context.is_distributed:
        return {}
    param_dtype: torch.dtype = torch.bfloat16
    return {"param_dtype": param_dtype, "reduce_dtype": torch.float32}

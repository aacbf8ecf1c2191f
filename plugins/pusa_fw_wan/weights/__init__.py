"""Reading and writing weight files without pickle: one reader, one key report, one suffix list.

- `files`: `read_tensor_file` (safetensors, .pt/.pth/.bin/.ckpt, shard indexes), `read_shapes`,
  `iter_file_tensors`, `shard_files`, `write_tensor_file` (atomic), and the suffix lists.
- `keys`: `compare_keys` -> `KeyReport` (missing, unexpected and mis-shaped keys, one error format).
- `safetensors`: header-only reads (`read_header`, `read_metadata`), streamed tensor reads and streamed
  atomic writes of big files.
"""

from pusa_fw_wan.weights import files as _files
from pusa_fw_wan.weights import keys as _keys
from pusa_fw_wan.weights import safetensors as _safetensors
from pusa_fw_wan.weights.files import *  # noqa: F403 - the names listed in files.__all__
from pusa_fw_wan.weights.keys import *  # noqa: F403 - the names listed in keys.__all__
from pusa_fw_wan.weights.safetensors import *  # noqa: F403 - the names listed in safetensors.__all__

__all__ = [*_files.__all__, *_keys.__all__, *_safetensors.__all__]

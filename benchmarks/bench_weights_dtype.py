"""Error of each weights_dtype against float32 on the reference fixture DiT, and its stored size.

Loads ``tests/fixtures/wan_reference/dit/single`` (dim 256, 2 layers) in float32, stores a copy of its
large linears in each dtype, and runs the three per-frame rows of ``dit_vectorized_io``. Prints the
end-to-end velocity error (max-abs, relative L2) and the worst per-layer error (each large linear fed the
float32 model's own input). tests/wan/test_weights_dtype.py bounds these numbers.

    python benchmarks/bench_weights_dtype.py [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file

from pusa_fw_wan import WanDiT
from pusa_fw_wan.testing.storage_error import measure_storage_error

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "wan_reference" / "dit"
DTYPES = ("float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")


def measure() -> list[dict[str, object]]:
    model = WanDiT.from_pretrained(FIXTURE / "single")
    case = load_file(str(FIXTURE / "dit_vectorized_io.safetensors"))
    rows = case["frame_timesteps"].shape[0]
    inputs = {
        "latents": case["x"][None].expand(rows, -1, -1, -1, -1).contiguous(),
        "sigmas": case["frame_timesteps"] / 1000.0,
        "context": case["context"][None].expand(rows, -1, -1).contiguous(),
    }
    return [dataclasses.asdict(measure_storage_error(model, name, **inputs)) for name in DTYPES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args(argv)
    results = measure()
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{'weights_dtype':<15}{'stored KB':>10}{'vel max-abs':>13}{'vel rel':>10}"
        f"{'layer max-abs':>15}{'layer rel':>11}  worst layer"
    )
    for row in results:
        print(
            f"{row['weights_dtype']:<15}{row['stored_bytes'] / 1024:>10.0f}{row['velocity_max_abs']:>13.2e}"
            f"{row['velocity_relative']:>10.2e}{row['layer_max_abs']:>15.2e}{row['layer_relative']:>11.2e}"
            f"  {row['worst_layer']}"
        )


if __name__ == "__main__":
    main()

"""LoRA EMA semantics: the EMA is of the factors A and B separately (documented on `EMA`), and how far its
product is from the EMA of the merged delta B @ A is measured here, as the docstring states."""

from __future__ import annotations

import pytest

from pusa_fw_train import Trainer
from pusa_fw_wan.testing.train import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("decay", "expected"), [(0.9, 0.042), (0.99, 0.32)])
def test_factor_ema_differs_from_the_merged_delta_ema_by_the_stated_amount(tmp_path, decay, expected):
    trainer = Trainer(tiny_config(tmp_path / "run", max_steps=30, ema_decay=decay, precision="fp32"))
    modules = sorted({name.rsplit(".lora_", 1)[0] for name in trainer.tensors})

    def deltas(tensors):
        return {m: tensors[f"{m}.lora_B.weight"].detach().double() @ tensors[f"{m}.lora_A.weight"].detach().double()
                for m in modules}

    merged_ema = deltas(trainer.tensors)

    def follow(record):
        for module, delta in deltas(trainer.tensors).items():
            merged_ema[module] += (1.0 - decay) * (delta - merged_ema[module])

    trainer.run(progress=follow)
    of_factors = deltas(trainer.ema.shadow)
    difference = sum(float((of_factors[m] - merged_ema[m]).square().sum()) for m in modules) ** 0.5
    size = sum(float(merged_ema[m].square().sum()) for m in modules) ** 0.5
    assert size > 0 and abs(difference / size - expected) < 0.01, difference / size

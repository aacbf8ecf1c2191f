"""The smaller defects of the trainer, each pinned: frame weights of mean 1 under the run's own sigma law,
validation in every sigma bin, device-synchronised step times, prefetching with the same sample order."""

from __future__ import annotations

import pytest
import torch

from pusa_fw.fafm import bsmntw_weights, law_mean, normalised_frame_weights
from pusa_fw.ptss import PTSS

pytestmark = pytest.mark.usefixtures("one_thread")

LAWS = {
    "uniform-shift5": PTSS(p_async=1.0, shift=5.0),
    "official-grid": PTSS(p_async=1.0, shift=5.0, num_train_steps=1000),
    "logit-normal": PTSS(p_async=0.5, shift=1.0, marginal="logit_normal", uniform_fraction=0.2),
    "uniform-shift1-held": PTSS(p_async=0.5, shift=1.0, held_probability=0.5, held_frames=2),
}


@pytest.mark.parametrize("law", list(LAWS))
def test_bsmntw_weights_have_mean_one_under_the_runs_own_law(law):
    ptss = LAWS[law]
    draw = ptss.draw(4000, 50, torch.Generator().manual_seed(11))
    counted = draw.sigmas[draw.loss_mask]
    weights = normalised_frame_weights(bsmntw_weights, ptss)(counted)
    assert abs(float(weights.double().mean()) - 1.0) < 0.01, law


def test_the_grid_normalised_weights_are_off_under_other_laws():
    """The defect the normalisation fixes: means 1.31 (uniform, no shift) and 1.66 (logit-normal, no shift)."""
    assert abs(law_mean(bsmntw_weights, LAWS["official-grid"]) - 1.0) < 1e-6
    assert abs(law_mean(bsmntw_weights, LAWS["uniform-shift5"]) - 1.0) < 1e-4, "the grid's continuous limit"
    assert abs(law_mean(bsmntw_weights, PTSS(shift=1.0)) - 1.31) < 0.01
    assert abs(law_mean(bsmntw_weights, PTSS(marginal="logit_normal", shift=1.0)) - 1.66) < 0.01


def test_validation_measures_every_sigma_bin_and_leaves_held_frames_out(tmp_path):
    from pusa_fw_train import Trainer
    from pusa_fw_train.validation import plan_sigma_vectors
    from pusa_fw_wan.testing.train import tiny_config

    t2v, i2v = plan_sigma_vectors(["t2v", "i2v"], 3, sigma_bins=5)
    assert torch.allclose(t2v.sigmas, torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]).unsqueeze(1).expand(5, 3))
    assert i2v.counted.tolist() == [False, True, True]
    assert bool((i2v.sigmas[:, 0] == i2v.sigmas[0, 0]).all()), "a held frame keeps the plan's held sigma"
    assert torch.equal(i2v.sigmas[:, 1:], t2v.sigmas[:, 1:])
    config = tiny_config(tmp_path / "run", max_steps=1, **{"validation.every": 1, "validation.num_samples": 1})
    metrics = Trainer(config).validate()
    bins = sorted(key for key in metrics if key.startswith("val/sigma_"))
    assert bins == [f"val/sigma_{k / 5:.2f}-{(k + 1) / 5:.2f}" for k in range(5)]


def test_prefetching_keeps_the_sample_order_and_the_weights_bit_exact(tmp_path):
    from pusa_fw_train import Trainer
    from pusa_fw_wan.testing.train import tiny_config

    results = {}
    for prefetch in (0, 3):
        config = tiny_config(tmp_path / f"p{prefetch}", max_steps=5, **{"data.prefetch": prefetch})
        trainer = Trainer(config)
        trainer.run()
        results[prefetch] = ({name: tensor.detach().clone() for name, tensor in trainer.tensors.items()},
                             trainer.position)
    (synchronous, position), (prefetched, prefetched_position) = results[0], results[3]
    assert position == prefetched_position
    assert all(torch.equal(synchronous[name], prefetched[name]) for name in synchronous)


def test_a_loading_error_in_the_prefetch_thread_reaches_the_training_loop():
    from pusa_fw.training_data import InMemorySource
    from pusa_fw_train.loader import BatchLoader
    from pusa_fw_train.order import DataOrder, OrderPosition

    source = InMemorySource.random(4, (2, 1, 2, 2), (1, 2))

    def load(index: int):
        if index == 3:
            raise OSError("disk gone")
        return source.load(index)

    order = DataOrder(source, 1, seed=0)
    loader = BatchLoader(order, OrderPosition(), lambda indices: (list(indices), None), load, prefetch=2)
    with pytest.raises(OSError, match="disk gone"):
        for _ in range(8):
            loader.next()
    loader.close()


def test_logged_step_times_wait_for_the_device(tmp_path, monkeypatch):
    import pusa_fw_train.metrics as metrics
    import pusa_fw_train.trainer_loop as trainer_module
    from pusa_fw_train import Trainer
    from pusa_fw_wan.testing.train import tiny_config

    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(device))
    metrics.device_synchronize(torch.device("cuda", 1))
    metrics.device_synchronize(torch.device("cpu"))
    assert synchronised == [torch.device("cuda", 1)], "only a CUDA device is synchronised"
    calls = []
    monkeypatch.setattr(trainer_module, "device_synchronize", calls.append)
    Trainer(tiny_config(tmp_path / "run", max_steps=4, **{"logging.every": 2})).run()
    assert calls == [torch.device("cpu")] * 4, "before and after each of the 2 logged steps"

"""Plan validation: every broken invariant is an error that names the step and frame."""

from __future__ import annotations

import json

import pytest
import torch

from pusa_fw.errors import PlanError
from pusa_fw.plan import Plan


def make(sigmas, inputs=None, windows=None, held=None, ring=False) -> Plan:
    sigmas = torch.tensor(sigmas, dtype=torch.float32)
    steps, frames = sigmas.shape[0] - 1, sigmas.shape[1]
    inputs = sigmas[:-1].clone() if inputs is None else torch.tensor(inputs, dtype=torch.float32)
    windows = torch.tensor([[0, frames]] * steps) if windows is None else torch.tensor(windows)
    held = torch.zeros(frames, dtype=torch.bool) if held is None else torch.tensor(held)
    return Plan(sigmas, inputs, windows, held, ring=ring)


def test_valid_plan_and_derived_masks() -> None:
    plan = make([[1.0, 0.2], [0.5, 0.2], [0.0, 0.0]], held=[False, True])
    assert plan.num_steps == 2 and plan.num_latent_frames == 2
    assert plan.update_mask().tolist() == [[True, False], [True, True]]
    assert plan.remaining_updates().tolist() == [[2, 1], [1, 1]]
    assert plan.context_mask().tolist() == [[False, True], [False, True]]
    assert plan.model_calls() == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigmas": [[1.0], [float("nan")], [0.0]]}, r"plan.sigmas\[1, 0\] = nan"),
        ({"sigmas": [[1.0], [1.5], [0.0]]}, r"plan.sigmas\[1, 0\] = 1.5"),
        ({"sigmas": [[1.0, 1.0], [0.5, 0.5], [0.0, 0.1]]}, "frame 1 ends at sigma 0.1"),
        ({"sigmas": [[1.0, 1.0], [0.5, 0.4], [0.6, 0.0], [0.0, 0.0]]}, "frame 0 goes up .* at step 1"),
        ({"sigmas": [[1.0, 0.0], [0.0, 0.0]]}, "frame 1 is not held but starts at sigma 0"),
        ({"sigmas": [[1.0, 1.0], [0.0, 0.0]], "windows": [[0, 1]]}, "frame 1 is updated at step 0 but lies outside"),
        ({"sigmas": [[1.0], [0.0]], "windows": [[0, 2]]}, r"window of step 0 is \(0, 2\)"),
        ({"sigmas": [[1.0], [0.0]], "inputs": [[0.5]]}, "cleaner than its state"),
        ({"sigmas": [[1.0, 0.0], [0.0, 0.0]], "inputs": [[1.0, 0.0]], "held": [False, False]},
         "not held but starts at sigma 0"),
        ({"sigmas": [[1.0, 0.0], [0.0, 0.0]], "inputs": [[1.0, 0.3]], "held": [False, True], "windows": [[0, 1]]},
         "outside that step's window"),
        ({"sigmas": [[1.0, 0.5], [0.0, 0.0]], "inputs": [[1.0, 0.7]], "held": [False, True]},
         "is updated in that step"),
    ],
)
def test_invalid_plans_name_step_and_frame(kwargs: dict, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        make(**kwargs)


def test_shape_errors_are_plan_errors() -> None:
    with pytest.raises(PlanError, match="input_sigmas has shape"):
        Plan(torch.ones(3, 2), torch.ones(1, 2), torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, dtype=torch.bool))
    with pytest.raises(PlanError, match="must be a torch.Tensor"):
        Plan([[1.0]], torch.ones(1, 1), torch.zeros(1, 2), torch.zeros(1, dtype=torch.bool))  # type: ignore[arg-type]


def test_ring_windows_wrap() -> None:
    plan = make([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], windows=[[2, 5]], ring=True)
    assert plan.window_frames(0).tolist() == [2, 0, 1]
    assert plan.window_slice(0) is None
    assert plan.window_mask().tolist() == [[True, True, True]]
    with pytest.raises(PlanError, match="window of step 0"):
        make([[1.0, 1.0], [0.0, 0.0]], windows=[[1, 4]], ring=True)


def test_held_frame_may_be_renoised_and_run_ends() -> None:
    plan = make([[0.0, 1.0], [0.0, 0.5], [0.4, 0.2], [0.0, 0.0]], held=[True, False])
    assert plan.renoise_mask()[1].tolist() == [True, False]
    assert plan.remaining_updates()[:, 0].tolist() == [0, 0, 1]  # the re-noise starts a new run


def test_pruned_drops_idle_steps_only() -> None:
    plan = make([[1.0, 1.0], [1.0, 1.0], [0.5, 1.0], [0.0, 0.0]])
    pruned = plan.pruned()
    assert pruned.num_steps == 2
    assert torch.equal(pruned.sigmas, plan.sigmas[[0, 2, 3]])
    with pytest.raises(PlanError, match="idle"):
        make([[0.0], [0.0]], held=[True]).pruned()


def test_summary_table_and_heatmap(tmp_path) -> None:
    plan = make([[1.0, 0.2], [0.5, 0.2], [0.0, 0.0]], inputs=[[1.0, 0.2], [0.5, 0.2]], held=[False, True])
    summary = plan.summary()
    assert json.loads(json.dumps(summary))["held_frames"] == [1]
    table = plan.table()
    rows = table.splitlines()
    assert rows[-2].startswith("   0  |##") and rows[-1].startswith("   1* |20")
    assert len(rows) == 3 + plan.num_latent_frames
    target = tmp_path / "plan.png"
    plan.save_heatmap(str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.png"]

"""The public surface: components by name, table or object, from Python, the CLI and a TOML run file."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

import pusa_fw
from pusa_fw.cli import main
from pusa_fw.errors import InputError, PlanError, UnknownComponentError

POLICIES = sorted(pusa_fw.list_components("policies"))
TASKS = sorted(pusa_fw.list_components("tasks"))
SIZES = {"rolling": 49, "loop": 49, "keyframes": 81}


def test_a_policy_object_a_name_with_params_and_a_table_give_the_same_plan() -> None:
    by_object = pusa_fw.get_task("i2v", policy=pusa_fw.get_policy("renoise", level=0.05))
    by_name = pusa_fw.get_task("i2v", policy="renoise", policy_params={"level": 0.05})
    by_table = pusa_fw.get_task("i2v", policy={"name": "renoise", "level": 0.05})
    plans = [task.plan(num_frames=17, num_steps=4) for task in (by_object, by_name, by_table)]
    for plan in plans[1:]:
        assert torch.equal(plan.sigmas, plans[0].sigmas) and torch.equal(plan.input_sigmas, plans[0].input_sigmas)
    assert (plans[0].sigmas[:, 0] == 0).all() and (plans[0].input_sigmas[:, 0] == 0.05).all()
    assert by_object.describe()["params"]["policy"] == {"name": "renoise", "level": 0.05}


def test_describe_rebuilds_the_task_including_combinators() -> None:
    schedule = {"name": "concat", "parts": ["shifted", {"name": "pyramid", "ar_step": 2}], "frames": [2]}
    task = pusa_fw.get_task("keyframes", positions=[0, 12], schedule=schedule, policy="late_release")
    again = pusa_fw.get_task(task.describe()["task"], **task.describe()["params"])
    assert again == task
    first, second = (t.plan(num_frames=17, num_steps=3) for t in (task, again))
    assert torch.equal(first.sigmas, second.sigmas)
    overlay = pusa_fw.get_schedule("overlay", first="shifted", second={"name": "trapezoid"})
    assert pusa_fw.get_task("t2v", schedule=overlay).plan(num_frames=9, num_steps=3).num_latent_frames == 3


def test_bad_component_arguments_say_what_to_do() -> None:
    with pytest.raises(ValidationError, match="policy_params apply to a policy given by name"):
        pusa_fw.get_task("i2v", policy=pusa_fw.get_policy("clean"), policy_params={"level": 0.1})
    with pytest.raises(ValidationError, match="strength apply to a policy given by name"):
        pusa_fw.get_task("i2v", policy=pusa_fw.get_policy("clean"), strength=0.5)
    with pytest.raises(UnknownComponentError, match="unknown conditioning policy 'renoize'.*'renoise'"):
        pusa_fw.get_task("i2v", policy="renoize")
    with pytest.raises(InputError, match="unknown component kind 'widgets'"):
        pusa_fw.list_components("widgets")
    with pytest.raises(ValidationError, match="level"):
        pusa_fw.get_policy("renoise", level=1.5)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("task_name", TASKS)
def test_every_policy_works_by_name_from_every_task(task_name: str, policy: str) -> None:
    task = pusa_fw.get_task(task_name, policy=policy)
    held = task.held_policy(0.3).path(pusa_fw.get_schedule("shifted").grid(1, 3)).sigmas
    if task_name == "v2v" and bool((held == 0).all()):  # e.g. clean, renoise: every frame stays its source
        with pytest.raises(PlanError, match=f"v2v with policy '{policy}' keeps every frame at its source"):
            task.plan(num_frames=17, num_steps=3)
        return
    plan = task.plan(num_frames=SIZES.get(task_name, 17), num_steps=3)
    assert plan.num_latent_frames == (SIZES.get(task_name, 17) - 1) // 4 + 1
    assert (plan.sigmas[-1] == 0).all()


def test_list_components_and_samplers() -> None:
    policies = pusa_fw.list_components("policies")
    assert {"clean", "multiplier", "renoise", "late_release", "hold_then_release", "ramp"} <= set(policies)
    assert all(policies.values()), "every built-in policy has a one-line summary"
    assert pusa_fw.list_components("policy") == policies
    assert {"euler", "unipc"} <= set(pusa_fw.list_components("samplers"))
    assert pusa_fw.get_sampler("unipc").name == "unipc"


def test_cli_takes_a_policy_table_and_the_steps_alias(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["plan", "i2v", "--num-frames", "17", "--steps", "4", "--json",
                   "--policy", '{"name": "renoise", "level": 0.05}'])
    summary = json.loads(capsys.readouterr().out)
    assert status == 0 and summary["num_steps"] == 4 and summary["num_latent_frames"] == 5
    assert summary["meta"]["params"]["policy"] == {"name": "renoise", "level": 0.05}
    status = main(["plan", "i2v", "--num-steps", "4", "--json", "--policy", "hold_then_release",
                   "--policy-params", '{"release_steps": 1}'])
    assert status == 0 and json.loads(capsys.readouterr().out)["meta"]["params"]["policy_params"] == {
        "release_steps": 1
    }


def test_run_file_takes_policy_and_schedule_tables(tmp_path) -> None:
    from pusa_fw_wan.cli.generate_config import load_run_file, validate_config
    from pusa_fw_wan.cli.generate_run import build_task

    run = tmp_path / "run.toml"
    run.write_text(
        'prompt = "x"\nsteps = 3\n[task]\nname = "i2v"\n'
        '[task.policy]\nname = "renoise"\nlevel = 0.05\n'
        '[task.schedule]\nname = "overlay"\nfirst = "shifted"\nsecond = {name = "trapezoid"}\n'
    )
    values, _ = load_run_file(run)
    config = validate_config(values, run.name)
    assert config.num_steps == 3
    plan = build_task(config).plan(num_frames=9, num_steps=config.num_steps)
    assert (plan.input_sigmas[:, 0] == 0.05).all()

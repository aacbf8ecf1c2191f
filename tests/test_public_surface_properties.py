"""Every registered task x every registered policy (random valid parameters) x every sampler, built through
the public surface (`get_task`, `get_sampler`), lands on x0 with the exact-velocity backbone; frames held
clean come out bit-exact."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pusa_fw
from pusa_fw.errors import PlanError
from pusa_fw.testing.contracts import assert_lands_on_x0
from pusa_fw.testing.strategies import task_plans

TASKS = sorted(pusa_fw.list_components("tasks"))
POLICIES = sorted(pusa_fw.list_components("policies"))
SAMPLERS = sorted(pusa_fw.list_components("samplers"))


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("task_name", TASKS)
@settings(max_examples=3)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_every_task_policy_and_sampler_lands_on_x0(
    task_name: str, policy: str, sampler: str, data: st.DataObject, seed: int
) -> None:
    try:
        _, plan = data.draw(task_plans(tasks=[task_name], policy_names=[policy]), label="plan")
    except PlanError as error:  # the one refusal a policy may cause: nothing left to generate
        assert task_name == "v2v" and "keeps every frame at its source" in str(error), str(error)
        return
    assert plan.meta["params"]["policy"] == policy
    assert_lands_on_x0(plan, pusa_fw.get_sampler(sampler), seed)


@pytest.mark.parametrize("policy", POLICIES)
def test_the_policy_strategy_draws_from_the_given_classes_with_random_valid_parameters(policy: str) -> None:
    from hypothesis import find

    from pusa_fw.components import lookup_class
    from pusa_fw.testing.strategies import policies

    cls = lookup_class("policies", policy)
    drawn = find(policies([cls]), lambda candidate: True)
    assert type(drawn) is cls
    numeric = [name for name, info in cls.model_fields.items() if info.annotation in (int, float)]
    if numeric:  # some draw differs from the defaults, and every draw validates (pydantic built it)
        assert find(policies([cls]), lambda candidate: candidate != cls()) != cls()

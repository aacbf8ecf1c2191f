"""Tools for plugin authors' tests.

- `pusa_fw.testing.fakes`: `ExactVelocityBackbone` (knows x0, returns the exact velocity), `FrameTargets`,
  `NullBackbone`, `ToyVelocityBackbone`.
- `pusa_fw.testing.strategies`: Hypothesis strategies for base grids, held frames, plans, task plans; they
  take the components to draw from as parameters and draw policies with random valid parameters.
- `pusa_fw.testing.contracts`: `ScheduleContract`, `PolicyContract`, `SamplerContract` to subclass.
- `pusa_fw.testing.plugin`: opt-in pytest plugin with `plugin_manager` / `register_plugin` fixtures.
"""

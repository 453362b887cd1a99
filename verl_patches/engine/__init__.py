"""The ``aggc_fsdp2`` engine: verl's FSDP2 engine with our GradClipper, and the configs that select it.

backend.py     -- the engine's registry key, and why the module builder must not see it
registry.py    -- registering engines with verl's public ``EngineRegistry.register`` (every device)
clip_engine.py -- ``ClipFSDPEngineConfig`` (an engine config that carries the clip settings) and the engine
config.py      -- ``ClipActorConfig``: the RL actor config whose ``clip`` / ``clip_config`` keys select it
"""

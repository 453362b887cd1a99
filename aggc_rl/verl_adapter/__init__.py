"""The thin layer between aggc_rl's clipping and verl: config blocks, the plugin, override checks.

Nothing here reaches into verl internals; those pieces live in ``verl_patches/``.
"""

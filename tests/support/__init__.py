"""Helpers shared by tests: tiny models built from configs, and a multi-process launcher."""

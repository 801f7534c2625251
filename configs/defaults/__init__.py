"""Shared defaults of the configs: base.py (every method) and one module per method."""

"""Run configurations: one file per experiment (`python main.py --config=configs/X.py`).

Each file's `get_config(preset)` builds its experiment from the shared defaults in
configs/defaults/ (base.py: every method's common sections; <method>.py: that method's
published settings), with the presets `paper` (default), `cpu` and `smoke`.
"""

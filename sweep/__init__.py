"""Sweeps: many runs of one workflow over combinations of inputs, prompts and seeds.

plan.py lists the items (targets.py and prompts.py read what the user names), manifest.py
records each finished item, grid.py draws the X/Y contact sheet, affinity.py and scheduler.py
send items to workers; cli/sweep.py is the ``app.py sweep`` command.
"""

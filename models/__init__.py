"""Model files and how they are loaded. Nothing here imports nodes/ or the UI."""

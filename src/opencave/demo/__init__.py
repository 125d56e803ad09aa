"""The synthetic demo datastack every fresh opencave server starts with."""

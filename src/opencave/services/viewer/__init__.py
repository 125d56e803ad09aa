"""Neuroglancer for opencave's datastacks: the states and links that open a datastack's layers."""

"""Neuroglancer for opencave's datastacks: the states and links that open a datastack's layers."""

# The viewer served by opencave itself (``/neuroglancer/``): every datastack's default viewer site.
BUNDLED_VIEWER_SITE = "{local_server}/neuroglancer"

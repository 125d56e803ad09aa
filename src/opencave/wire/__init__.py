"""Wire formats shared by the client and the server: URL templates, error bodies, versions.

Nothing here imports a web framework or a database driver, so the client stays light.
"""

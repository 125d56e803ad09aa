"""Meshes of L2 nodes for the graphene mesh source (manifests plus Draco fragments).

Modules: layout (fragment names, Draco grid, info keys), assignment (which voxels of a chunk
belong to which node), chunk (zmesh + Draco), store (SQL), service (making, listing, serving),
worker (consumes queued remesh requests).
Nothing is imported here, so the chunkedgraph service can import ``layout`` without a cycle.
"""

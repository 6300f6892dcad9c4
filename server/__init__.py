"""imagegraph: a node-graph image-generation server.

Nothing heavy is imported here: `/health` must answer before torch or diffusers are loaded.
"""

__version__ = "0.1.0"

"""One module per kind of action, each registering its code with ``@handles`` (see action_registry.py)."""

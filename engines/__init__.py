"""Engine adapters: how a model spec becomes an engine command line, and how to tell the engine is ready. Each
engine's module is one `EngineAdapter` (adapter.py); `registry.ADAPTERS` holds them by name.

Nothing here speaks HTTP to clients; the router does. `launcher` is what supervisord runs. The package root
stays import-light (stdlib only) so scripts/install.py can use `engines.build` before the venv exists.
"""

"""``tinyllm serve``: an OpenAI- and Ollama-compatible gateway that observes every call.

The modules are described in docs/architecture.md ("The gateway"); ``tinyllm.cli.serve``
runs it.
"""

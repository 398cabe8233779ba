"""Real servers the tests talk to over real sockets: a replay of recorded Ollama
responses (``ollama_replay``) and a scripted misbehaving HTTP server (``fault_server``)."""

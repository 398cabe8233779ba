"""The gateway's configuration file: what it accepts, and every problem at once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tinyllm.serve.config import ConfigError, default_config, load_config, parse_config

GOOD = """
models:
  - name: gemma3-270m
    provider: local
  - name: big
    provider: openai
    base_url: http://127.0.0.1:8000/v1
    model: upstream-model-name
    api_key_env: UPSTREAM_KEY
  - name: llama
    provider: ollama
keys:
  - alias: team-a
    key_env: TEAM_A_KEY
    models: [gemma3-270m]
    rpm: 600
    tpm: 200000
  - alias: team-b
    key_sha256: %s
"""


def test_the_documented_example_parses() -> None:
    digest = hashlib.sha256(b"secret-b").hexdigest()
    config = parse_config(GOOD % digest, source="g.yaml",
                          environ={"UPSTREAM_KEY": "up-key", "TEAM_A_KEY": "secret-a"})
    big = config.models["big"]
    assert (big.provider, big.base_url, big.upstream_model, big.api_key) == (
        "openai", "http://127.0.0.1:8000/v1", "upstream-model-name", "up-key")
    assert config.models["llama"].base_url == "http://127.0.0.1:11434"
    assert config.models["gemma3-270m"].upstream_model == "gemma3-270m"
    a, b = config.keys
    assert (a.alias, a.sha256, a.models, a.rpm, a.tpm) == (
        "team-a", hashlib.sha256(b"secret-a").hexdigest(), ("gemma3-270m",), 600, 200000)
    assert (b.alias, b.sha256, b.models) == ("team-b", digest, None)
    assert "secret" not in repr(config) and "up-key" not in repr(config)


def test_every_problem_is_listed_with_the_file_and_the_entry() -> None:
    text = """
models:
  - name: big
    provider: openai
  - name: big
    provider: local
  - provider: nonsense
    name: "bad name!"
    colour: red
  - name: x
    provider: local
    base_url: http://a
  - name: y
    provider: openai
    base_url: ftp://a
    api_key_env: MISSING_KEY
keys:
  - alias: k
  - alias: k2
    key_env: A
    key_sha256: abc
  - alias: k3
    key_sha256: nothex
    models: [ghost]
    rpm: 0
extra: 1
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="g.yaml", environ={"A": "a"})
    problems = info.value.problems
    expected = [
        "g.yaml: top level: unknown key 'extra' (valid: keys, models)",
        "g.yaml: models[0] (big): base_url is required for provider openai",
        "g.yaml: models[1] (big): name 'big' is given twice",
        "g.yaml: models[2] (bad name!): name may contain only",
        "g.yaml: models[2] (bad name!): unknown key 'colour'",
        "g.yaml: models[2] (bad name!): provider 'nonsense' is not one of local, ollama, openai",
        "g.yaml: models[3] (x): base_url applies to providers ollama and openai",
        "g.yaml: models[4] (y): base_url must start with http:// or https://",
        "g.yaml: models[4] (y): api_key_env: the environment variable MISSING_KEY is not set",
        "g.yaml: keys[0] (k): key_env or key_sha256 is required",
        "g.yaml: keys[1] (k2): give key_env or key_sha256, not both",
        "g.yaml: keys[2] (k3): key_sha256 must be 64 hex digits",
        "g.yaml: keys[2] (k3): models: 'ghost' is not a configured model",
        "g.yaml: keys[2] (k3): rpm must be a whole number >= 1, got 0",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)


@pytest.mark.parametrize(("text", "words"), [
    ("", "expected a mapping"),
    ("models: [", "not valid YAML"),
    ("models: []", "must be a non-empty list"),
    ("keys: []", "models: required"),
    ("models:\n  - name: a\n    provider: local\n  - name: b\n    provider: local",
     "only one local model"),
])
def test_shapes_that_are_not_a_configuration(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        parse_config(text, source="g.yaml")


def test_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    path = tmp_path / "g.yaml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    path.write_text("models:\n  - name: m\n    provider: local\n")
    assert list(load_config(path).models) == ["m"]


def test_the_default_serves_the_embedded_model() -> None:
    config = default_config()
    assert [(r.name, r.provider) for r in config.models.values()] == [("gemma3-270m", "local")]
    assert config.keys == ()

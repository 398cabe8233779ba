"""The gateway's configuration: the models clients may ask for, the keys they use (with
their limits and budgets), and the prices and SLO its requests are held to.

Read from YAML (``tinyllm serve --config FILE``); without a file the gateway serves the
embedded model as ``gemma3-270m``. Every problem in a file is reported at once, one line
each: ``<file>: <entry>: <reason>``, and nothing starts. ``prices``, ``effective_date``
and ``slo`` have a cost file's shape (docs/cost-and-slo.md) and are read by its parsers.

Example:
    >>> config = parse_config('''
    ... models:
    ...   - name: big
    ...     provider: openai
    ...     base_url: http://127.0.0.1:8000/v1
    ... ''', source="gateway.yaml")
    >>> config.models["big"].upstream_model, config.models["big"].base_url
    ('big', 'http://127.0.0.1:8000/v1')
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tinyllm._files import FileProblem, read_text
from tinyllm._validation import unknown_keys
from tinyllm.errors import TinyLLMError
from tinyllm.models.local import DEFAULT_LOCAL_MODEL
from tinyllm.pricing import PriceError, PriceTable, default_prices, parse_prices
from tinyllm.slo import SLOConfig, SLOError, parse_slo

__all__ = [
    "BUDGET_PERIODS",
    "PROVIDERS",
    "ConfigError",
    "GatewayConfig",
    "KeySpec",
    "ModelRoute",
    "default_config",
    "load_config",
    "parse_config",
]

#: Where a model's requests go: the embedded model, an Ollama server, or any
#: OpenAI-compatible server (vLLM, llama.cpp's server, OpenAI, another tinyllm serve).
PROVIDERS = ("local", "ollama", "openai")
#: What a key's ``budget_usd`` is per: a UTC calendar day (the default) or month.
BUDGET_PERIODS = ("day", "month")
_NAME_RE = re.compile(r"^[\w.:/@+-]{1,128}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_TOP_KEYS = ("effective_date", "keys", "models", "prices", "slo")
_MODEL_KEYS = ("api_key_env", "base_url", "model", "name", "provider")
_KEY_KEYS = ("alias", "budget_period", "budget_usd", "key_env", "key_sha256", "models", "rpm",
             "tpm")


class ConfigError(TinyLLMError, ValueError):
    """A configuration file the gateway cannot run with; ``problems`` has one line each.

    Example:
        >>> str(ConfigError(["g.yaml: models[0]: provider is required"]))
        'g.yaml: models[0]: provider is required'
    """

    error_type = "bad_request"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ModelRoute:
    """One model clients may ask for, and where its requests go."""

    name: str
    provider: str
    base_url: str | None = None
    upstream_model: str = ""
    api_key: str | None = field(default=None, repr=False)  # read from api_key_env

    def __post_init__(self) -> None:
        if not self.upstream_model:
            object.__setattr__(self, "upstream_model", self.name)


@dataclass(frozen=True)
class KeySpec:
    """A client key: its alias (what metrics and logs show), its digest, its limits, and
    its budget (USD per UTC ``budget_period``: ``day`` or ``month``)."""

    alias: str
    sha256: str = field(repr=False)
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str = "day"


@dataclass(frozen=True)
class GatewayConfig:
    """What ``tinyllm serve`` runs: models by client-visible name, the keys (none: every
    request is let in), and the file's prices and SLO.

    ``prices`` is the file's ``prices`` section over the shipped table, ``price_section``
    the section alone (what the gateway layers over ``--prices``); both None without
    one. ``slo`` is the file's ``slo`` section, None without one.
    """

    models: Mapping[str, ModelRoute]
    keys: tuple[KeySpec, ...] = ()
    source: str = "<default>"
    prices: PriceTable | None = field(default=None, repr=False)
    price_section: PriceTable | None = field(default=None, repr=False)
    slo: SLOConfig | None = None


def default_config() -> GatewayConfig:
    """The embedded model (Gemma 3 270M) as ``gemma3-270m``, no keys.

    Example:
        >>> list(default_config().models)
        ['gemma3-270m']
    """
    route = ModelRoute(DEFAULT_LOCAL_MODEL, "local")
    return GatewayConfig({route.name: route})


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """The configuration in the YAML file ``path``; ``ConfigError`` lists every problem."""
    try:
        text = read_text(path)
    except FileProblem as exc:
        raise ConfigError([str(exc)]) from None
    return parse_config(text, source=os.fspath(path))


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[str] = []

    def add(self, where: str, reason: str) -> None:
        self.lines.append(f"{self.source}: {where}: {reason}")


def parse_config(
    text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """The configuration in the YAML ``text``; ``environ`` (default ``os.environ``) is
    where ``api_key_env`` and ``key_env`` are read."""
    env = os.environ if environ is None else environ
    problems = _Problems(source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError([f"{source}: {where}: not valid YAML: "
                           f"{getattr(exc, 'problem', None) or exc}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: top level: expected a mapping with 'models' (and "
                           f"optionally 'keys'), got {type(data).__name__}"])
    _unknown(data, _TOP_KEYS, "top level", problems)
    models = _models(data.get("models"), problems, env)
    keys = _keys(data.get("keys"), set(models), problems, env)
    section = _prices(data, source, problems)
    slo = _slo(data, source, problems)
    if problems.lines:
        raise ConfigError(problems.lines)
    prices = section.layered_over(default_prices()) if section is not None else None
    return GatewayConfig(models, keys, source, prices, section, slo)


def _prices(data: dict[str, Any], source: str, problems: _Problems) -> PriceTable | None:
    """The file's ``prices`` (and ``effective_date``), read as a cost file's are."""
    if "prices" not in data:
        if "effective_date" in data:
            problems.add("effective_date", "applies to the prices: give a prices section "
                                           "too")
        return None
    section: dict[str, Any] = {k: data[k] for k in ("effective_date", "prices") if k in data}
    try:
        return parse_prices(section, source=source)
    except PriceError as exc:  # already "<file>: prices.<model>: <reason>"
        problems.lines.extend(exc.problems)
        return None


def _slo(data: dict[str, Any], source: str, problems: _Problems) -> SLOConfig | None:
    """The file's ``slo`` section, read as a cost file's is."""
    if "slo" not in data:
        return None
    try:
        return parse_slo({"slo": data["slo"]}, source=source)
    except SLOError as exc:  # already "<file>: slo.<entry>: <reason>"
        problems.lines.extend(exc.problems)
        return None


def _unknown(entry: dict[str, Any], valid: tuple[str, ...], where: str,
             problems: _Problems) -> None:
    problems.lines += unknown_keys(entry, valid, f"{problems.source}: {where}")


def _text(entry: dict[str, Any], key: str, where: str, problems: _Problems,
          *, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            problems.add(where, f"{key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.add(where, f"{key} must be a non-empty string, got {value!r}")
        return None
    return value.strip()


def _env(entry: dict[str, Any], key: str, where: str, problems: _Problems,
         env: Mapping[str, str]) -> str | None:
    name = _text(entry, key, where, problems)
    if name is None:
        return None
    if not _ENV_RE.match(name):
        problems.add(where, f"{key} must name an environment variable (letters, digits, "
                            f"underscores), got {name!r}")
        return None
    value = env.get(name, "")
    if not value:
        problems.add(where, f"{key}: the environment variable {name} is not set")
        return None
    return value


def _models(raw: Any, problems: _Problems, env: Mapping[str, str]) -> dict[str, ModelRoute]:
    if raw is None:
        problems.add("models", "required: a list of models clients may ask for")
        return {}
    if not isinstance(raw, list) or not raw:
        problems.add("models", f"must be a non-empty list, got {raw!r}"[:200])
        return {}
    found: dict[str, ModelRoute] = {}
    for i, entry in enumerate(raw):
        where = f"models[{i}]"
        if not isinstance(entry, dict):
            problems.add(where, f"must be a mapping with name and provider, got {entry!r}"[:200])
            continue
        name = _text(entry, "name", where, problems, required=True)
        if name is not None:
            where = f"models[{i}] ({name})"
            if not _NAME_RE.match(name):
                problems.add(where, "name may contain only letters, digits and . _ - : / @ +"
                                    " (at most 128)")
            elif name in found:
                problems.add(where, f"name {name!r} is given twice")
        _unknown(entry, _MODEL_KEYS, where, problems)
        provider = _text(entry, "provider", where, problems, required=True)
        if provider is not None and provider not in PROVIDERS:
            problems.add(where, f"provider {provider!r} is not one of {', '.join(PROVIDERS)}")
            provider = None
        base_url = _text(entry, "base_url", where, problems)
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            problems.add(where, f"base_url must start with http:// or https://, got {base_url!r}")
        if provider == "local" and base_url is not None:
            problems.add(where, "base_url applies to providers ollama and openai; the local "
                                "model runs in-process")
        if provider == "openai" and base_url is None:
            problems.add(where, "base_url is required for provider openai (e.g. "
                                "http://127.0.0.1:8000/v1)")
        upstream = _text(entry, "model", where, problems)
        api_key = _env(entry, "api_key_env", where, problems, env)
        if name is None or provider is None or name in found:
            continue
        if provider == "ollama" and base_url is None:
            base_url = "http://127.0.0.1:11434"
        found[name] = ModelRoute(name, provider, base_url, upstream or name, api_key)
    locals_ = [r.name for r in found.values() if r.provider == "local"]
    if len(locals_) > 1:
        problems.add("models", f"only one local model can be served per gateway; got "
                               f"{', '.join(locals_)}")
    return found


def _limit(entry: dict[str, Any], key: str, where: str, problems: _Problems) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.add(where, f"{key} must be a whole number >= 1, got {value!r}")
        return None
    return value


def _budget(entry: dict[str, Any], where: str, problems: _Problems) -> tuple[float | None, str]:
    usd = entry.get("budget_usd")
    period = entry.get("budget_period", "day")
    if usd is not None and (isinstance(usd, bool) or not isinstance(usd, int | float)
                            or not (math.isfinite(usd) and usd > 0)):
        problems.add(where, f"budget_usd must be a number > 0 (USD per day or month), "
                            f"got {usd!r}"[:200])
        usd = None
    if period not in BUDGET_PERIODS:
        problems.add(where, f"budget_period {period!r} is not one of "
                            f"{', '.join(BUDGET_PERIODS)}"[:200])
        period = "day"
    elif "budget_period" in entry and "budget_usd" not in entry:
        problems.add(where, "budget_period applies to a budget: give budget_usd too")
    return (None if usd is None else float(usd)), period


def _keys(raw: Any, models: set[str], problems: _Problems,
          env: Mapping[str, str]) -> tuple[KeySpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        problems.add("keys", f"must be a non-empty list, got {raw!r}"[:200])
        return ()
    found: list[KeySpec] = []
    aliases: set[str] = set()
    digests: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"keys[{i}]"
        if not isinstance(entry, dict):
            problems.add(where, f"must be a mapping with alias and key_env or key_sha256, "
                                f"got {type(entry).__name__}")
            continue
        alias = _text(entry, "alias", where, problems, required=True)
        if alias is not None:
            where = f"keys[{i}] ({alias})"
            if not _NAME_RE.match(alias):
                problems.add(where, "alias may contain only letters, digits and . _ - : / @ +")
            elif alias in aliases:
                problems.add(where, f"alias {alias!r} is given twice")
            aliases.add(alias)
        _unknown(entry, _KEY_KEYS, where, problems)
        digest = None
        if "key_env" in entry and "key_sha256" in entry:
            problems.add(where, "give key_env or key_sha256, not both")
        elif "key_env" in entry:
            key = _env(entry, "key_env", where, problems, env)
            if key is not None:
                digest = hashlib.sha256(key.encode()).hexdigest()
        elif "key_sha256" in entry:
            value = entry["key_sha256"]
            if not isinstance(value, str) or not _SHA256_RE.match(value.lower()):
                problems.add(where, "key_sha256 must be 64 hex digits (sha256 of the key), "
                                    "quoted ('...') so YAML reads it as text")
            else:
                digest = value.lower()
        else:
            problems.add(where, "key_env or key_sha256 is required (the key itself never "
                                "goes in the file)")
        if digest is not None and digest in digests:
            problems.add(where, "the same key is given twice")
        allowed = entry.get("models")
        allowed_models: tuple[str, ...] | None = None
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(m, str) for m in allowed):
                problems.add(where, f"models must be a list of model names, got {allowed!r}"[:200])
            else:
                for name in allowed:
                    if name not in models:
                        problems.add(where, f"models: {name!r} is not a configured model "
                                            f"(configured: {', '.join(sorted(models))})")
                allowed_models = tuple(allowed)
        rpm, tpm = (_limit(entry, k, where, problems) for k in ("rpm", "tpm"))
        budget_usd, budget_period = _budget(entry, where, problems)
        if alias is None or digest is None:
            continue
        digests.add(digest)
        found.append(KeySpec(alias, digest, allowed_models, rpm, tpm, budget_usd,
                             budget_period))
    return tuple(found)

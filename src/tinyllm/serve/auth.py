"""Client keys: who is calling, what they may use, how fast.

With ``keys`` configured, every model API call needs ``Authorization: Bearer <key>``
(401 without one or with an unknown one), may use only the key's ``models`` (403
otherwise), and is held to the key's ``rpm`` and ``tpm``: token buckets holding a
minute's worth, refilled continuously (429 with ``Retry-After`` when empty). Requests
are taken when a call arrives; tokens are charged when it is done (they are known only
then), so a key may overdraw once, and waits for the refill to pay the debt. A key with
a budget is refused once its spend for the day or month has reached it
(``tinyllm.serve.budgets``). Keys are compared by their SHA-256 digest; the key itself
is never logged, stored or kept. Metrics, logs and the store see the key's alias.

Example:
    >>> import hashlib
    >>> from tinyllm.serve.config import KeySpec
    >>> keys = Keys([KeySpec("team-a", hashlib.sha256(b"s3cret").hexdigest())])
    >>> keys.identify(b"Bearer s3cret").alias
    'team-a'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tinyllm.metrics.collector import get_metrics_collector
from tinyllm.serve.budgets import Budget, refusal
from tinyllm.serve.config import KeySpec
from tinyllm.serve.errors import GatewayError
from tinyllm.serve.limits import RedisLimits, SharedBucket

if TYPE_CHECKING:
    from tinyllm.metrics.collector import MetricsCollector

__all__ = ["Key", "Keys", "Rejection"]


class Key:
    """A configured key as the gateway uses it.

    ``collector`` is where the key's spend and remaining budget are recorded (default:
    the process-wide collector, resolved when first used).
    """

    __slots__ = ("_collector", "alias", "budget", "models", "rpm", "tpm")

    def __init__(self, spec: KeySpec, limits: RedisLimits | None = None,
                 collector: MetricsCollector | None = None) -> None:
        self.alias = spec.alias
        self.models = frozenset(spec.models) if spec.models is not None else None
        # Redis keys by the key's digest prefix, never by the key or its alias alone
        # (two gateways may give one alias to different keys).
        name = f"{spec.sha256[:16]}:{spec.alias}"
        self.rpm = SharedBucket(limits, f"{name}:rpm", spec.rpm) if spec.rpm else None
        self.tpm = SharedBucket(limits, f"{name}:tpm", spec.tpm) if spec.tpm else None
        self.budget = Budget(spec.alias, spec.budget_usd, spec.budget_period, backend=limits,
                             name=name, collector=collector) if spec.budget_usd else None
        self._collector = collector

    async def charge_tokens(self, tokens: int) -> None:
        """Count a finished call's tokens against the key's ``tpm``."""
        if self.tpm is not None and tokens:
            await self.tpm.charge(tokens)

    async def settle(self, tokens: int, cost_usd: float | None) -> None:
        """Charge a finished call to the key: its tokens against ``tpm``, its cost
        (``request.cost_usd``; None: unpriced) to ``gateway_key_cost_usd_total`` and the
        budget's spend."""
        if cost_usd is not None:  # 0 too: a key on free models shows a spend of 0
            collector = self._collector
            if collector is None:
                collector = self._collector = get_metrics_collector()
            collector.record_gateway_key_cost(self.alias, cost_usd)
        await self.charge_tokens(tokens)
        if self.budget is not None:
            await self.budget.add(cost_usd)


class Rejection(GatewayError):
    """A call refused for a key: ``alias`` (None: no or an unknown key) and ``reason``
    (``missing_key``, ``invalid_key``, ``model_not_allowed``, ``budget``, ``rpm``,
    ``tpm``)."""

    def __init__(self, alias: str | None, reason: str, error: GatewayError) -> None:
        super().__init__(error.status, error.message, code=error.code, param=error.param,
                         retry_after=error.retry_after, kind=error.kind,
                         headers=error.extra_headers)
        self.alias = alias
        self.reason = reason


class Keys:
    """The configured keys, looked up by the digest of the bearer token."""

    def __init__(self, specs: Sequence[KeySpec], limits: RedisLimits | None = None,
                 collector: MetricsCollector | None = None) -> None:
        self._by_digest = {spec.sha256: Key(spec, limits, collector) for spec in specs}

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    @property
    def budgets(self) -> list[Budget]:
        """The budgets of the keys that have one."""
        return [k.budget for k in self._by_digest.values() if k.budget is not None]

    def identify(self, authorization: bytes | None) -> Key:
        """The key of an ``Authorization`` header value; 401 naming what is missing."""
        if not authorization:
            raise Rejection(None, "missing_key", GatewayError(
                401, "an API key is required: send Authorization: Bearer <key>",
                code="missing_api_key"))
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise Rejection(None, "invalid_key", GatewayError(
                401, "the Authorization header must be 'Bearer <key>'",
                code="invalid_api_key"))
        digest = hashlib.sha256(token.strip()).hexdigest()
        key = self._by_digest.get(digest)
        if key is None:
            # Digests of different keys never collide in practice; compare_digest keeps
            # the miss from telling an attacker how close a guess came.
            hmac.compare_digest(digest, digest)
            raise Rejection(None, "invalid_key", GatewayError(
                401, "the API key is not valid for this gateway", code="invalid_api_key"))
        return key

    async def check(self, authorization: bytes | None, model: str) -> Key:
        """The caller's key, allowed ``model``, within its budget and its rates."""
        key = self.identify(authorization)
        if key.models is not None and model not in key.models:
            raise Rejection(key.alias, "model_not_allowed", GatewayError(
                403, f"key {key.alias!r} may not use model {model!r}; it may use: "
                     f"{', '.join(sorted(key.models))}", code="model_not_allowed",
                param="model"))
        # The budget before the rates: a refused call takes nothing from the buckets.
        budget = key.budget
        if budget is not None and await budget.exhausted():
            raise Rejection(key.alias, "budget", refusal(budget))
        if key.tpm is not None:
            wait = await key.tpm.wait()
            if wait:
                raise Rejection(key.alias, "tpm", GatewayError(
                    429, f"key {key.alias!r} is over its {key.tpm.capacity:g} tokens per "
                         "minute", code="rate_limited", retry_after=wait))
        if key.rpm is not None:
            wait = await key.rpm.take()
            if wait:
                raise Rejection(key.alias, "rpm", GatewayError(
                    429, f"key {key.alias!r} is over its {key.rpm.capacity:g} requests per "
                         "minute", code="rate_limited", retry_after=wait))
        return key

    def may_use(self, authorization: bytes | None, model: str) -> bool:
        """Whether the caller's key may use ``model`` (for ``/v1/models``)."""
        key = self.identify(authorization)
        return key.models is None or model in key.models

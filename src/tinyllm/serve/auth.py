"""Client keys: who is calling, what they may use, how fast.

With ``keys`` configured, every model API call needs ``Authorization: Bearer <key>``
(401 without one or with an unknown one), may use only the key's ``models`` (403
otherwise), and is held to the key's ``rpm`` and ``tpm``: token buckets holding a
minute's worth, refilled continuously (429 with ``Retry-After`` when empty). Requests
are taken when a call arrives; tokens are charged when it is done (they are known only
then), so a key may overdraw once, and waits for the refill to pay the debt. Keys are
compared by their SHA-256 digest; the key itself is never logged, stored or kept.
Metrics, logs and the store see the key's alias.

Example:
    >>> import hashlib
    >>> from tinyllm.serve.config import KeySpec
    >>> keys = Keys([KeySpec("team-a", hashlib.sha256(b"s3cret").hexdigest())])
    >>> keys.check(b"Bearer s3cret", "any-model").alias
    'team-a'
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Sequence

from tinyllm.serve.config import KeySpec
from tinyllm.serve.errors import GatewayError

__all__ = ["Key", "Keys", "MinuteBucket", "Rejection"]


class MinuteBucket:
    """A token bucket holding ``per_minute`` tokens, refilled at ``per_minute / 60`` a
    second; ``take`` returns 0 when granted, else the seconds until it would be.

    Example:
        >>> bucket = MinuteBucket(2, clock=lambda: 0.0)
        >>> bucket.take(), bucket.take(), bucket.take() > 0
        (0.0, 0.0, True)
    """

    __slots__ = ("_clock", "_level", "_lock", "_rate", "_stamp", "capacity")

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._level = self.capacity
        self._clock = clock
        self._stamp = clock()
        self._lock = threading.Lock()

    def _refill(self) -> float:
        now = self._clock()
        level = min(self.capacity, self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        return level

    def take(self, amount: float = 1.0) -> float:
        with self._lock:
            level = self._refill()
            if level >= amount:
                self._level = level - amount
                return 0.0
            self._level = level
            return (amount - level) / self._rate

    def wait(self) -> float:
        """0 while anything is left, else the seconds until something is (a bucket that
        is charged after the fact, as tokens are, may be in debt)."""
        with self._lock:
            level = self._level = self._refill()
            return 0.0 if level > 0 else (1e-9 - level) / self._rate

    def charge(self, amount: float) -> None:
        """Take ``amount`` whatever is left: the bucket may go into debt, which the
        refill pays back before the next call is let in."""
        with self._lock:
            self._level = self._refill() - amount


class Key:
    """A configured key as the gateway uses it."""

    __slots__ = ("alias", "models", "rpm", "tpm")

    def __init__(self, spec: KeySpec) -> None:
        self.alias = spec.alias
        self.models = frozenset(spec.models) if spec.models is not None else None
        self.rpm = MinuteBucket(spec.rpm) if spec.rpm else None
        self.tpm = MinuteBucket(spec.tpm) if spec.tpm else None

    def charge_tokens(self, tokens: int) -> None:
        """Count a finished call's tokens against the key's ``tpm``."""
        if self.tpm is not None and tokens:
            self.tpm.charge(tokens)


class Rejection(GatewayError):
    """A call refused for a key: ``alias`` (None: no or an unknown key) and ``reason``
    (``missing_key``, ``invalid_key``, ``model_not_allowed``, ``rpm``, ``tpm``)."""

    def __init__(self, alias: str | None, reason: str, error: GatewayError) -> None:
        super().__init__(error.status, error.message, code=error.code, param=error.param,
                         retry_after=error.retry_after)
        self.alias = alias
        self.reason = reason


class Keys:
    """The configured keys, looked up by the digest of the bearer token."""

    def __init__(self, specs: Sequence[KeySpec]) -> None:
        self._by_digest = {spec.sha256: Key(spec) for spec in specs}

    def __bool__(self) -> bool:
        return bool(self._by_digest)

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

    def check(self, authorization: bytes | None, model: str) -> Key:
        """The caller's key, allowed ``model`` and within its request rate."""
        key = self.identify(authorization)
        if key.models is not None and model not in key.models:
            raise Rejection(key.alias, "model_not_allowed", GatewayError(
                403, f"key {key.alias!r} may not use model {model!r}; it may use: "
                     f"{', '.join(sorted(key.models))}", code="model_not_allowed",
                param="model"))
        if key.tpm is not None:
            wait = key.tpm.wait()
            if wait:
                raise Rejection(key.alias, "tpm", GatewayError(
                    429, f"key {key.alias!r} is over its {key.tpm.capacity:g} tokens per "
                         "minute", code="rate_limited", retry_after=wait))
        if key.rpm is not None:
            wait = key.rpm.take()
            if wait:
                raise Rejection(key.alias, "rpm", GatewayError(
                    429, f"key {key.alias!r} is over its {key.rpm.capacity:g} requests per "
                         "minute", code="rate_limited", retry_after=wait))
        return key

    def may_use(self, authorization: bytes | None, model: str) -> bool:
        """Whether the caller's key may use ``model`` (for ``/v1/models``)."""
        key = self.identify(authorization)
        return key.models is None or model in key.models

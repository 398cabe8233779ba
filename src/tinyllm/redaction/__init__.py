"""One redaction policy for all that tinyllm records: logs, events, span attributes, metadata.

Example:
    >>> from tinyllm.redaction import RedactionPolicy
    >>> policy = RedactionPolicy()
    >>> policy.redact({"headers": {"Authorization": "Bearer sk-abc123"}, "prompt": "Hello"})
    {'headers': {'Authorization': '[REDACTED]'}, 'prompt': '[NOT CAPTURED: 5 chars]'}
    >>> policy.redact_text("curl -H 'Authorization: Bearer abc.def' https://u:hunter2@host/?token=x")
    "curl -H 'Authorization: Bearer [REDACTED]' https://u:[REDACTED]@host/?token=[REDACTED]"

Three rules, applied to a *copy* (the input is never changed):

1. **Secret keys.** A mapping key that names a credential (``authorization``, ``api_key``,
   ``password``, ``token``, ``cookie``, anything ending in ``_api_key``, ...; compared
   case-insensitively with ``-`` and ``_`` treated alike, and for dotted attribute names
   such as ``http.request.header.authorization`` by the last segment too) has its value
   replaced by ``[REDACTED]``, whatever its type. ``None`` and ``""`` stay as they are:
   they hold no secret, and "no key was sent" is worth seeing.
2. **Secret-looking text.** Every string, under any key, is scanned for ``Bearer <token>``
   (the word ``Bearer`` is kept), ``sk-...`` style API keys (and GitHub, Hugging Face,
   Slack, Stripe, Google and GitLab tokens), AWS access key ids and secret access keys
   (40 base64 characters mixing cases and digits), JWTs, basic-auth credentials in URLs
   (``https://user:[REDACTED]@host``), email addresses, and ``name=value``,
   ``"name": "value"`` and ``Name: value`` pairs whose name is a secret key (for
   ``name=value`` also the query parameters ``key``, ``sig``, ``signature``, ``auth``).
   A secret is found also right after an escape sequence (``\\nsk-...`` in a ``repr``)
   and inside a pair's value (``text='... api_key=...'``).
3. **Content.** Prompt and completion text is not recorded unless ``capture_content=True``
   (or ``TINYLLM_CAPTURE_CONTENT=true``), following OpenTelemetry's GenAI conventions.
   The value under a content key (``prompt``, ``completion``, ``messages``,
   ``gen_ai.input.messages``, ...) becomes ``[NOT CAPTURED: 5 chars]`` for a string,
   ``[NOT CAPTURED: 2 items]`` for a list or tuple, ``[NOT CAPTURED: 3 keys]`` for a
   mapping, ``[NOT CAPTURED]`` otherwise: its size is kept because it is useful (and not
   sensitive), its text is not. With ``capture_content=True`` content is kept but still
   goes through rules 1 and 2.

Redaction is idempotent: redacting a redacted value changes nothing.
"""

from tinyllm.redaction._default import (
    configure_redaction,
    get_redaction_policy,
    redact,
    redact_text,
    reset_redaction,
)
from tinyllm.redaction._policy import RedactionPolicy
from tinyllm.redaction._rules import NOT_CAPTURED, REDACTED

__all__ = [
    "NOT_CAPTURED",
    "REDACTED",
    "RedactionPolicy",
    "configure_redaction",
    "get_redaction_policy",
    "redact",
    "redact_text",
    "reset_redaction",
]

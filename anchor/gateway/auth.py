"""Who may do what: roles, scopes and the short-lived access tokens the gateway issues.

Flow: a client holds an API key (created with ``village anchor keys create``; PostgreSQL keeps only its hash)
and trades it at ``POST /v1/auth/token`` for a JWT, either by sending it in ``X-API-Key`` or through the OAuth2
client-credentials grant (``grant_type=client_credentials`` with ``client_id`` = the key ID and
``client_secret`` = the key, in the form body or HTTP Basic). Every other route wants ``Authorization: Bearer
<jwt>`` (the events WebSocket also takes ``?access_token=``).

Tokens are HS256 JWTs signed with a 32-byte random secret kept in ``<data dir>/anchor/jwt.secret`` (mode 0600,
created on first start). Why not EdDSA with the node's Ed25519 key: only this anchor verifies its tokens, so a
public-key signature buys nothing but a ~20x slower check per request, and the node's identity key stays
dedicated to the mesh. Rotating the secret (delete the file, restart) invalidates every token at once.

This module is sans-IO: callers pass the wall-clock time (``now_s``, seconds since the epoch); pyjwt's own
clock checks are turned off and expiry is checked here against that injected time.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import logging
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt

from anchor.gateway.errors import Forbidden, GatewayError, Unauthenticated
from anchor.gateway.roles import (
    ALL_SCOPES,
    ROLE_DEFAULT_SCOPES,
    ROLE_SCOPES,
    ROLES,
    SCOPE_EVENTS_READ,
    SCOPE_KEYS_ADMIN,
    SCOPE_MAILBOX_READ,
    SCOPE_MESSAGES_SEND,
    SCOPE_NODE_READ,
)
from node.errors import StartupError
from node.identity import ensure_private_dir
from node.ipprefix import source_prefixes
from node.privatefile import (
    LOOSE_MODE,
    OTHER_OWNER,
    SYMLINK,
    PrivateFileRefused,
    read_private_file,
    remove_stale_temporaries,
    write_private_file_atomically,
)

log = logging.getLogger("village.anchor.gateway")

ALGORITHM = "HS256"
SECRET_BYTES = 32  # 256-bit HMAC key, the size RFC 7518 asks for HS256
MIN_DISTINCT_BYTES = 16  # a shared secret file with fewer distinct byte values is refused (not random)
SECRET_FILE = "jwt.secret"
LOCK_FILE = ".jwt.secret.lock"  # flock-ed for the whole load-or-create (two starts never race)
CLOCK_SKEW_S = 5.0  # tokens whose iat lies this far in the future are refused
VERIFIED_CACHE_MAX = 4096  # tokens whose signature and claims were checked, kept so a token is decoded once


__all__ = [  # the roles and scopes are re-exported: routes and tests import them from here
    "ALL_SCOPES",
    "ROLES",
    "ROLE_DEFAULT_SCOPES",
    "ROLE_SCOPES",
    "SCOPE_EVENTS_READ",
    "SCOPE_KEYS_ADMIN",
    "SCOPE_MAILBOX_READ",
    "SCOPE_MESSAGES_SEND",
    "SCOPE_NODE_READ",
    "IssuedToken",
    "Principal",
    "TokenIssuer",
    "basic_credentials",
    "bearer_token",
    "check_role_scopes",
    "load_or_create_secret",
    "load_shared_secret",
    "narrow_scopes",
]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    key_id: str
    role: str
    scopes: frozenset[str]
    token_id: str
    expires_at_s: float

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"this token lacks the {scope!r} scope (it has: {' '.join(sorted(self.scopes)) or 'none'})")


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    token_type: str
    expires_in: int
    scope: str


def check_role_scopes(role: str, scopes: Iterable[str] | None) -> frozenset[str]:
    """The scopes a key of ``role`` gets: all of the role's, or the requested subset; a GatewayError otherwise."""
    if role not in ROLE_SCOPES:
        raise GatewayError(f"unknown role {role!r} (roles: {', '.join(ROLES)})", code="bad_role")
    allowed = ROLE_SCOPES[role]
    if scopes is None:
        return ROLE_DEFAULT_SCOPES[role]
    wanted = frozenset(scopes)
    unknown = wanted - frozenset(ALL_SCOPES)
    if unknown:
        raise GatewayError(
            f"unknown scope(s) {' '.join(sorted(unknown))} (scopes: {' '.join(ALL_SCOPES)})", code="bad_scope"
        )
    extra = wanted - allowed
    if extra:
        raise GatewayError(f"role {role!r} cannot hold scope(s) {' '.join(sorted(extra))}", code="bad_scope")
    return wanted


def narrow_scopes(granted: frozenset[str], requested: str | None) -> frozenset[str]:
    """OAuth2 ``scope`` parameter: a space-separated subset of what the key holds (RFC 6749 §3.3)."""
    if requested is None or not requested.strip():
        return granted
    wanted = frozenset(requested.split())
    extra = wanted - granted
    if extra:
        raise Forbidden(f"the key does not hold scope(s) {' '.join(sorted(extra))}", code="invalid_scope")
    return wanted


# The per-IP rate limit counts an IPv6 client by its /64 (one subscriber, or one cloud VM, gets a whole /64 and can
# pick any of its 2^64 addresses per request) and by its /48 too, in a second bucket IPV6_SITE_FACTOR times larger: a
# free tunnel-broker /48 (or a /56 home delegation) holds 65,536 (256) /64s. The prefixes are node.ipprefix's, which
# the QUIC listener's per-source bounds use as well.
IPV6_SITE_FACTOR = 16


def ip_bucket(host: str) -> str:
    """The per-IP rate-limit bucket of a client address: IPv4 by its address (/32), IPv6 by its /64, an IPv6
    address that embeds an IPv4 one (IPv4-mapped ``::ffff:192.0.2.7``, 6to4 ``2002:c000:0207::/48``, NAT64
    ``64:ff9b::192.0.2.7``) as that IPv4 address. Anything else (``unknown``, a Unix socket path) is its own bucket."""
    return source_prefixes(host)[0]


def ip_buckets(host: str) -> list[tuple[str, int]]:
    """Every rate-limit bucket a request from ``host`` takes a token from, each with how many times the per-IP
    rate and burst it gets: :func:`ip_bucket`'s, and for native IPv6 also its /48 (``IPV6_SITE_FACTOR`` times)."""
    prefix, site = source_prefixes(host)
    return [(prefix, 1)] if site is None else [(prefix, 1), (site, IPV6_SITE_FACTOR)]


def load_or_create_secret(data_dir: Path, name: str = SECRET_FILE) -> bytes:
    """The HS256 key in ``<data_dir>/anchor/jwt.secret`` (or another 32-byte key of the anchor's: ``name``, e.g. the
    MCP memory's sealing key), created (0600) if missing; refused if loose.

    The whole load-or-create runs under an exclusive ``flock`` on ``anchor/.jwt.secret.lock``, so two starts on one
    data directory never race: the second waits and reads the first one's secret. Creation writes a fresh temporary
    file (0600, O_EXCL|O_NOFOLLOW) in the same directory, fsyncs it, renames it into place (``os.replace``: no hard
    links, which Android's SELinux denies) and fsyncs the directory. A start interrupted at any point leaves either
    no ``jwt.secret`` or a whole one, never an empty file; its temporary file is removed, under the lock, at the
    next start. An existing **empty** file (what an interrupted start of an older version left) has signed nothing,
    so it is replaced by a new secret, with a log line. A non-empty file shorter than 32 bytes is refused with how to
    fix it: it may be a damaged secret or the wrong file, and replacing it silently would invalidate tokens or
    destroy data. Every failure is a :class:`StartupError` naming the file."""
    directory = data_dir / "anchor"
    ensure_private_dir(directory)
    st = directory.stat()
    if st.st_uid != os.geteuid():
        raise StartupError(f"{directory} belongs to another user (uid {st.st_uid}): the anchor's secret cannot be kept")
    if st.st_mode & 0o022:
        raise StartupError(f"{directory} is writable by group or others; run: chmod 700 {directory}")
    path = directory / name
    lock_path = directory / (LOCK_FILE if name == SECRET_FILE else f".{name}.lock")
    try:
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(f"{lock_path} cannot be opened: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise StartupError(f"{lock_path} cannot be locked: {exc.strerror}") from None
        try:
            remove_stale_temporaries(path)  # left by an interrupted start (none runs now)
            secret = _read_secret(path)
            if secret is None:
                return _create_secret(path)
            if not secret:
                log.warning("%s is empty (an interrupted first start): making a new secret", path)
                return _create_secret(path)
            if len(secret) < SECRET_BYTES:
                raise StartupError(
                    f"{path} holds {len(secret)} bytes, fewer than the {SECRET_BYTES} of a secret: it is damaged or "
                    f"not this anchor's; move it away (every token it signed stops working) and start again to make "
                    f"a new one"
                )
            return secret
        except OSError as exc:
            raise StartupError(f"{path} cannot be created: {exc.strerror}") from None
    finally:
        os.close(lock_fd)  # releases the lock


def load_shared_secret(path: Path) -> bytes:
    """The HS256 key the gateway replicas of one anchor share (``[anchor] jwt_secret_file``): a regular file of this
    user's, 0600 or tighter, of at least 32 bytes. Never created here: every replica must read the same bytes, so
    the operator makes it once (``head -c 32 /dev/urandom > FILE; chmod 600 FILE``) and gives it to each one.
    Every failure is a :class:`StartupError` naming the file."""
    secret = _read_secret(path)
    if secret is None:
        raise StartupError(
            f"anchor.jwt_secret_file {path} does not exist; make it once and give every replica the same file: "
            f"head -c 32 /dev/urandom > {path}; chmod 600 {path}"
        )
    advice = f"make a random one: head -c 32 /dev/urandom > {path}; chmod 600 {path}"
    if len(secret) < SECRET_BYTES:
        raise StartupError(
            f"anchor.jwt_secret_file {path} holds {len(secret)} bytes; at least {SECRET_BYTES} needed; {advice}"
        )
    if len(set(secret)) < MIN_DISTINCT_BYTES:
        # 32 random bytes hold ~30 distinct values (fewer than 16: about 1 in 10^15); a password or a repeated byte
        # holds far fewer, and anyone who guesses it can sign tokens for every replica.
        raise StartupError(
            f"anchor.jwt_secret_file {path} does not look random ({len(set(secret))} distinct byte values, fewer "
            f"than {MIN_DISTINCT_BYTES}): a guessable secret lets anyone sign access tokens; {advice}"
        )
    return secret


def _read_secret(path: Path) -> bytes | None:
    """The file's bytes (None if it does not exist); refused unless a regular file of this user's, 0600 or tighter
    (:func:`node.privatefile.read_private_file`: no symlink followed, no FIFO blocking the start)."""
    try:
        return read_private_file(path, SECRET_BYTES * 64)
    except PrivateFileRefused as exc:
        advice = {
            SYMLINK: "the secret must be a regular file",
            OTHER_OWNER: "it is not this anchor's secret",
            LOOSE_MODE: f"run: chmod 600 {path}",
        }.get(exc.reason)
        raise StartupError(f"{exc}; {advice}" if advice else str(exc)) from None
    except OSError as exc:
        raise StartupError(f"{path} cannot be read: {exc.strerror}") from None


def _create_secret(path: Path) -> bytes:
    """Write a new secret to ``path`` atomically (the caller holds the lock); the secret."""
    secret = secrets.token_bytes(SECRET_BYTES)
    write_private_file_atomically(path, secret)
    return secret


def issuer_name(peer_id_hex: str, cluster: str = "") -> str:
    """The ``iss`` of this anchor's tokens: ``aivillage-anchor:<peer ID hex>`` for a lone anchor,
    ``aivillage-anchor:cluster:<name>`` for the replicas of a cluster — never equal, whatever the cluster's name
    (a name may be 64 hex digits), so a lone anchor's token is not a cluster's nor the reverse."""
    return f"aivillage-anchor:cluster:{cluster}" if cluster else f"aivillage-anchor:{peer_id_hex}"


class TokenIssuer:
    """Issues and checks this anchor's access tokens. ``issuer`` names the anchor (its peer ID)."""

    def __init__(self, secret: bytes, *, issuer: str, ttl_s: float) -> None:
        self._secret = secret
        self.issuer = issuer
        self.ttl_s = ttl_s
        # Token -> (its principal, iat) once its signature and claims passed: every request of a client carries
        # the same token, and the HMAC and JSON work (~50 us) need not be repeated. Only tokens this issuer signed
        # get here (a forged one fails the signature and is never kept); expiry is still checked per request, and
        # revocation is the key's state, checked by the caller. Bounded: the oldest entry goes first.
        self._verified: dict[str, tuple[Principal, int]] = {}

    def issue(self, *, key_id: str, role: str, scopes: frozenset[str], now_s: float) -> IssuedToken:
        claims = {
            "iss": self.issuer,
            "sub": key_id,
            "role": role,
            "scope": " ".join(sorted(scopes)),
            "iat": int(now_s),
            "exp": int(now_s + self.ttl_s),
            "jti": secrets.token_hex(8),
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, "Bearer", int(self.ttl_s), claims["scope"])  # type: ignore[arg-type]

    def verify(self, token: str, *, now_s: float) -> Principal:
        """Signature, issuer, claims and expiry; every failure is :class:`Unauthenticated`."""
        known = self._verified.get(token)
        if known is not None:
            principal, iat = known
            self._check_times(principal.expires_at_s, iat, now_s)
            return principal
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={
                    "require": ["iss", "sub", "exp", "iat", "jti", "role", "scope"],
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid access token: {exc}", code="invalid_token") from exc
        exp, iat = claims["exp"], claims["iat"]
        role, scope = claims["role"], claims["scope"]
        if not all(isinstance(v, int) for v in (exp, iat)) or not all(isinstance(v, str) for v in (role, scope)):
            raise Unauthenticated("invalid access token: malformed claims", code="invalid_token")
        self._check_times(exp, iat, now_s)
        if role not in ROLE_SCOPES:
            raise Unauthenticated("invalid access token: unknown role", code="invalid_token")
        scopes = frozenset(scope.split()) & ROLE_SCOPES[role]
        principal = Principal(str(claims["sub"]), role, scopes, str(claims["jti"]), float(exp))
        if len(self._verified) >= VERIFIED_CACHE_MAX:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (principal, iat)
        return principal

    @staticmethod
    def _check_times(exp: float, iat: int, now_s: float) -> None:
        if now_s >= exp:
            raise Unauthenticated("access token expired; ask POST /v1/auth/token for a new one", code="token_expired")
        if iat > now_s + CLOCK_SKEW_S:
            raise Unauthenticated("invalid access token: issued in the future", code="invalid_token")


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; Unauthenticated if absent or another scheme."""
    if not authorization:
        raise Unauthenticated("missing Authorization: Bearer <token> header", code="missing_token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("expected Authorization: Bearer <token>", code="missing_token")
    return token.strip()


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(client_id, client_secret) from ``Authorization: Basic ...`` (RFC 6749 §2.3.1), None if not Basic."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthenticated("malformed Basic credentials", code="invalid_client") from exc
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        raise Unauthenticated("malformed Basic credentials", code="invalid_client")
    return client_id, client_secret

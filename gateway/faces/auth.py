"""Who may call: bearer tokens and client certificates -> a Caller, and what that caller may do.

The core of it is transport-neutral (`Access`); gRPC reads the `authorization` metadata and the
peer's certificate from its context (`grpc_caller`), HTTP from its header and TLS transport
(`http_auth_middleware`). Authentication answers UNAUTHENTICATED/401; a caller acting on an
account it may not touch gets PERMISSION_DENIED/403; both happen before any budget is spent or
any upstream call is made. Tokens are configured as SHA-256 hashes and are never logged,
echoed in errors or put in metrics.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
import structlog
from aiohttp import web

from gateway.config import ALL_ACCOUNTS, AuthSettings, TlsSettings
from gateway.core.accounts import Accounts
from gateway.domain import BucketKey, Target
from gateway.errors import ErrorKind, GatewayError
from gateway.faces.request_ids import of_request

log = structlog.get_logger(__name__)

#: HTTP paths open to anyone: probes must work without credentials.
OPEN_PATHS: frozenset[str] = frozenset({"/healthz", "/readyz", "/openapi.json"})
METRICS_PATH = "/metrics"
#: The live page's cookie (gateway/faces/ui.py, docs/security.md): the caller's bearer token,
#: set by the page's sign-in form, HttpOnly and SameSite=Strict. The browser's EventSource
#: cannot send an Authorization header, so the page's requests authenticate with it.
UI_COOKIE = "transfer_gateway_token"
#: The header the page's own fetches send: with it, the cookie counts for a POST (a cross-site
#: form cannot send a custom header, and no CORS preflight is ever answered yes).
UI_HEADER = "X-Transfer-Gateway-UI"
#: Paths where the cookie counts for a GET without UI_HEADER (the page and its stream).
UI_PREFIX = "/ui"

_BEARER = "bearer "


def hash_token(token: str) -> str:
    """What `auth.callers[].token_sha256` holds for `token` (hex SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its name, the accounts it may act on (None: all), and how it
    proved who it is."""

    name: str
    accounts: frozenset[str] | None
    method: Literal["token", "certificate", "sigv4", "anonymous"]

    def may_act_on(self, account_id: str) -> bool:
        return self.accounts is None or account_id in self.accounts


ANONYMOUS = Caller("anonymous", None, "anonymous")
#: Where routes find the caller the middleware authenticated.
CALLER_KEY: web.RequestKey[Caller] = web.RequestKey("transfer_gateway.caller", Caller)


class Access:
    """Authentication and authorization for every transport, from `auth` settings and the
    configured accounts."""

    def __init__(self, settings: AuthSettings, accounts: Accounts, *, mtls: bool = False) -> None:
        self.settings = settings
        self.accounts = accounts
        self._mtls = mtls
        self._by_name: dict[str, Caller] = {}
        self._by_hash: dict[str, Caller] = {}
        for c in settings.callers:
            allowed = None if ALL_ACCOUNTS in c.accounts else frozenset(c.accounts)
            self._by_name[c.name] = Caller(c.name, allowed, "token")
            if c.token_sha256:
                self._by_hash[c.token_sha256] = self._by_name[c.name]

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def caller_named(self, name: str, method: Literal["sigv4"]) -> Caller:
        """The configured caller `name`, authenticated by `method` elsewhere (the AWS face
        verifies SigV4 itself); KeyError for a name that is not configured."""
        known = self._by_name[name]
        return Caller(known.name, known.accounts, method)

    def authenticate(self, authorization: str | None, certificate_cn: str | None) -> Caller:
        """The caller behind an `authorization` value and/or a verified client certificate's
        common name; raises UNAUTHENTICATED. With no callers configured, everyone is anonymous."""
        if not self.enabled:
            return ANONYMOUS
        by_token = self._from_token(authorization) if authorization else None
        by_cert = None
        if self._mtls and certificate_cn:
            known = self._by_name.get(certificate_cn)
            if known is None and by_token is None:
                raise _unauthenticated("the client certificate names no configured caller")
            if known is not None:
                by_cert = Caller(known.name, known.accounts, "certificate")
        if by_token and by_cert and by_token.name != by_cert.name:
            raise _unauthenticated("the bearer token and the client certificate name two callers")
        caller = by_token or by_cert
        if caller is None:
            how = "a bearer token (authorization: Bearer <token>)"
            if self._mtls:
                how += " or a client certificate naming a caller"
            raise _unauthenticated(f"this gateway needs {how}")
        return caller

    def _from_token(self, authorization: str) -> Caller:
        if not authorization[: len(_BEARER)].lower() == _BEARER:
            raise _unauthenticated("the authorization must be 'Bearer <token>'")
        digest = hash_token(authorization[len(_BEARER) :].strip())
        # Compare against every hash in constant time: how long a failed look-up takes says
        # nothing about how close a guess was.
        found = None
        for known, caller in self._by_hash.items():
            if hmac.compare_digest(known, digest):
                found = caller
        if found is None:
            raise _unauthenticated("the bearer token is not recognised")
        return found

    def authorize(self, caller: Caller, target: Target | BucketKey) -> None:
        """May `caller` act on the target's account, and does the gateway serve it there?
        PERMISSION_DENIED comes first, so a caller learns nothing of accounts it may not use."""
        if not caller.may_act_on(target.account_id):
            raise GatewayError(
                ErrorKind.PERMISSION_DENIED,
                f"caller {caller.name!r} may not act on account {target.account_id}",
                {"caller": caller.name, "account_id": target.account_id},
            )
        self.accounts.check(target)


def _unauthenticated(message: str) -> GatewayError:
    return GatewayError(ErrorKind.UNAUTHENTICATED, message)


#: Why a request with two Authorization values is refused (the AWS face words it its own way).
TWO_AUTHORIZATIONS = "the request carries more than one authorization value: send exactly one"


def one_authorization(values: Iterable[str | bytes]) -> str | None:
    """The request's one `authorization` value (None when there is none); more than one is
    UNAUTHENTICATED. Two values are ambiguous, and the faces used to settle it differently
    (gRPC took the last, HTTP the first), so [B's token, A's token] acted as A on one face and
    as B on the other: no face picks one."""
    found = [v if isinstance(v, str) else v.decode("latin-1") for v in values]
    if len(found) > 1:
        raise _unauthenticated(TWO_AUTHORIZATIONS)
    return found[0] if found else None


# ---- gRPC ---------------------------------------------------------------------------------


def grpc_caller(access: Access, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
    """The caller of a gRPC call: `authorization` metadata, and the peer certificate's CN when
    mutual TLS is on (gRPC has verified the certificate against the client CA by then)."""
    if not access.enabled:
        return ANONYMOUS
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    names = list((context.auth_context() or {}).get("x509_common_name") or [])
    cn = names[0].decode() if names else None
    return access.authenticate(one_authorization(values), cn)


def grpc_server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS for the gRPC face from the PEM files; with a client CA, client certificates are
    required and verified."""
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("TLS needs tls.cert_file and tls.key_file")
    ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


# ---- HTTP ---------------------------------------------------------------------------------


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """TLS for the HTTP face from the same PEM files as gRPC."""
    if tls.cert_file is None or tls.key_file is None:
        raise ValueError("TLS needs tls.cert_file and tls.key_file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_common_name(request: web.Request) -> str | None:
    """The subject CN of the request's client certificate (verified by TLS), if it has one."""
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _cookie_counts(request: web.Request) -> bool:
    """The page's cookie stands in for the Authorization header on the page's own requests:
    GETs under /ui, and requests sent by its script with UI_HEADER (the jobs cancel button)."""
    if request.headers.get(UI_HEADER) == "1":
        return True
    under_ui = request.path == UI_PREFIX or request.path.startswith(UI_PREFIX + "/")
    return under_ui and request.method in ("GET", "HEAD")


def http_caller(access: Access, request: web.Request) -> Caller:
    """The caller of an HTTP request: its Authorization header (exactly one), else the page's
    cookie where it counts, and the client certificate's CN; raises UNAUTHENTICATED."""
    if not access.enabled:
        return ANONYMOUS
    authorization = one_authorization(request.headers.getall("Authorization", ()))
    if authorization is None and _cookie_counts(request):
        token = request.cookies.get(UI_COOKIE)
        if token:
            authorization = _BEARER + urllib.parse.unquote(token)
    return access.authenticate(authorization, peer_common_name(request))


def http_auth_middleware(
    access: Access,
    render_error: Callable[[GatewayError], web.StreamResponse],
    *,
    open_paths: Collection[str] = OPEN_PATHS,
    skip: Callable[[web.Request], bool] | None = None,
) -> Any:
    """An aiohttp middleware: authenticates every request but the open paths (and /metrics
    unless `auth.metrics_require_auth`), stores the Caller under CALLER_KEY, and renders
    UNAUTHENTICATED with `render_error` (the face's own error body). Authorization per account
    is the route's, after it has validated the target: `access.authorize(request[CALLER_KEY],
    target)`. `skip` exempts routes with an auth scheme of their own."""
    metrics_open = not access.settings.metrics_require_auth

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in open_paths or (path == METRICS_PATH and metrics_open):
            return await handler(request)
        if skip is not None and skip(request):
            return await handler(request)
        try:
            caller = http_caller(access, request)
        except GatewayError as exc:
            # Refused before any call begins, so no call.end will tell of it: this line is a
            # failed login's only trace (the gRPC and AWS faces log theirs as call.end).
            log.warning(
                "http.refused",
                request_id=of_request(request),
                face="http",
                method=request.method,
                path=path,
                outcome=exc.kind.grpc_code.name,
                reason=exc.kind.reason,
                message=str(exc),
            )
            response = render_error(exc)
            response.headers["WWW-Authenticate"] = 'Bearer realm="transfer-gateway"'
            return response
        request[CALLER_KEY] = caller
        return await handler(request)

    return authenticate


def request_caller(request: web.Request) -> Caller:
    """The caller the middleware authenticated (anonymous where no middleware runs)."""
    caller = request.get(CALLER_KEY)
    return caller if isinstance(caller, Caller) else ANONYMOUS


__all__ = [
    "ANONYMOUS",
    "CALLER_KEY",
    "Access",
    "Caller",
    "grpc_caller",
    "grpc_server_credentials",
    "hash_token",
    "http_auth_middleware",
    "http_caller",
    "one_authorization",
    "peer_common_name",
    "request_caller",
    "server_ssl_context",
]

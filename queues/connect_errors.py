"""Why connecting to Redis failed, in words an operator can act on.

redis-py reports a refused TLS certificate as ``Error 1 connecting to host:port. [SSL:
CERTIFICATE_VERIFY_FAILED] ...`` and a wrong password as ``invalid username-password
pair``; :func:`describe` says which setting to look at instead. Its text never holds the
URL's password: redis-py's messages name the host and port only, and the callers print the
URL through :func:`queues.connection.redact`.
"""

from __future__ import annotations

import ssl

import redis

_CA_HINT = ("give the CA that signed the server's certificate in the URL: "
            "rediss://host:port/0?ssl_ca_certs=/path/to/ca.pem")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def describe(exc: BaseException) -> str:
    """One line about ``exc`` (an error met while connecting or talking to Redis)."""
    chain = _chain(exc)
    verify = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if verify is not None or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        reason = getattr(verify, "verify_message", None) or "the certificate was refused"
        return f"TLS certificate verification failed ({reason}): {_CA_HINT}"
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        return (f"TLS handshake failed ({tls.reason or tls}): is that port serving TLS, "
                "and does the URL say rediss:// only for a TLS port?")
    if isinstance(exc, redis.AuthenticationError):
        return ("authentication failed: wrong user name or password, or the user is "
                "disabled (" + str(exc) + ")")
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return f"refused by the Redis user's ACL ({exc}); see `seawall acl`"
    return str(exc)


def is_permanent(exc: BaseException) -> bool:
    """True for a failure that waiting will not cure (a refused certificate, a failed TLS
    handshake, a wrong password): a command should stop and say so, not retry."""
    chain = _chain(exc)
    return (any(isinstance(e, ssl.SSLError) for e in chain)
            or "CERTIFICATE_VERIFY_FAILED" in str(exc)
            or isinstance(exc, redis.AuthenticationError))


__all__ = ["describe", "is_permanent"]

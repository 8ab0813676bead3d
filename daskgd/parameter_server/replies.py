"""The parameter server's replies: what an error reply raises, and how often a failed
idempotent call is tried (shared by the client and its shard calls)."""

from __future__ import annotations

from typing import Any

from daskgd.errors import (
    BadMessageError,
    ParameterServerError,
    ResumeRejectedError,
    SupersededError,
    UnknownJobError,
)

__all__ = ["ERRORS", "RETRIES", "RETRY_DELAY", "raise_for_reply"]

#: Attempts of an idempotent call whose connection failed, before the failure is raised.
RETRIES = 3
RETRY_DELAY = 0.5

#: A reply's error ``kind`` -> the exception raised for it (any other kind:
#: :class:`~daskgd.errors.ParameterServerError`).
ERRORS: dict[str, type[ParameterServerError]] = {
    "unknown_job": UnknownJobError,
    "bad_message": BadMessageError,
    "bad_resume": ResumeRejectedError,
    "superseded": SupersededError,
}


def raise_for_reply(op: str, reply: Any) -> dict[str, Any]:
    """Return ``reply`` unless it is an error reply; then raise its exception.

    Parameters
    ----------
    op : str
        The operation (``"push"``...), for the message.
    reply : dict
        The handler's reply.

    Raises
    ------
    ParameterServerError
        The subclass :data:`ERRORS` maps the reply's ``kind`` to.
    """
    if not isinstance(reply, dict):
        raise ParameterServerError(f"daskgd_{op}: malformed reply {reply!r}", op=op)
    if reply.get("status") != "error":
        return reply
    kind = reply.get("kind") or "internal"
    cls = ERRORS.get(kind, ParameterServerError)
    raise cls(str(reply.get("message")), op=op, kind=kind)

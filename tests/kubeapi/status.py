"""kube-apiserver's ``Status`` error bodies, built as its error constructors build them.

Each function mirrors one constructor of kubernetes/apimachinery
pkg/api/errors/errors.go @ eed236ceee2c19c2753a3d93ac0631dc20750454
(``NewNotFound``, ``NewAlreadyExists``, ``NewConflict``, ``NewInvalid``,
``NewGenericServerResponse``...): same code, reason, message and details.
A ``StatusError`` carries one through the server to the response writer.
"""

from __future__ import annotations

OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"
# kubernetes/apiserver pkg/registry/generic/registry/store.go (OptimisticLockErrorMsg)


class StatusError(Exception):
    """An answer that is a ``Status`` (code, body and extra headers such as Retry-After)."""

    def __init__(self, body: dict, headers=None) -> None:
        super().__init__(body.get("message", ""))
        self.body = body
        self.headers = dict(headers or {})

    @property
    def code(self) -> int:
        return self.body["code"]


def status(code: int, reason: str, message: str, details=None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details is not None:
        body["details"] = {key: value for key, value in details.items() if value not in ("", None, 0, [])}
    return body


def qualified(group: str, resource: str) -> str:
    """``GroupResource.String()``: ``ippools.whereabouts.cni.cncf.io``, or ``pods`` in the core group."""
    return f"{resource}.{group}" if group else resource


def _object_details(group: str, resource: str, name: str) -> dict:
    return {"name": name, "group": group, "kind": resource}


def not_found(group: str, resource: str, name: str) -> StatusError:
    return StatusError(status(404, "NotFound", f'{qualified(group, resource)} "{name}" not found',
                              _object_details(group, resource, name)))


def already_exists(group: str, resource: str, name: str) -> StatusError:
    return StatusError(status(409, "AlreadyExists", f'{qualified(group, resource)} "{name}" already exists',
                              _object_details(group, resource, name)))


def conflict(group: str, resource: str, name: str, why: str = OPTIMISTIC_LOCK) -> StatusError:
    return StatusError(status(409, "Conflict",
                              f'Operation cannot be fulfilled on {qualified(group, resource)} "{name}": {why}',
                              _object_details(group, resource, name)))


def invalid(group: str, kind: str, name: str, causes: list) -> StatusError:
    """``NewInvalid``: causes are ``(type, field, message)``; the message aggregates them as ``ToAggregate``."""
    texts = [f"{field}: {message}" if field else message for _, field, message in causes]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    group_kind = f"{kind}.{group}" if group else kind
    details = {"name": name, "group": group, "kind": kind,
               "causes": [{"reason": kind_, "message": message, "field": field} for kind_, field, message in causes]}
    return StatusError(status(422, "Invalid", f'{group_kind} "{name}" is invalid: {summary}', details))


def patch_rejected() -> StatusError:
    """A JSON Patch that does not apply (a failed ``test`` included).

    kubernetes/apiserver pkg/endpoints/handlers/patch.go @
    24a394e516bfda066d7e2221d7d92c052de27c54 (``applyJSPatch``) answers
    ``NewGenericServerResponse(http.StatusUnprocessableEntity, "",
    schema.GroupResource{}, "", err.Error(), 0, false)``: reason Invalid, the
    generic 422 message (the patch library's own error is dropped) and empty
    details.
    """
    return StatusError(status(422, "Invalid", "the server rejected our request due to an error in our request", {}))


def bad_request(message: str) -> StatusError:
    return StatusError(status(400, "BadRequest", message))


def unauthorized() -> StatusError:
    """kubernetes/apiserver pkg/endpoints/filters/authentication.go: ``NewUnauthorized("Unauthorized")``."""
    return StatusError(status(401, "Unauthorized", "Unauthorized"))


def forbidden(user: str, verb: str, group: str, resource: str, namespace: str, name: str) -> StatusError:
    """``ForbiddenStatusError`` of kubernetes/apiserver pkg/endpoints/handlers/responsewriters/errors.go."""
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    why = f'User "{user}" cannot {verb} resource "{resource}" in API group "{group}" {scope}'
    subject = f'{qualified(group, resource)} "{name}"' if name else qualified(group, resource)
    return StatusError(status(403, "Forbidden", f"{subject} is forbidden: {why}",
                              _object_details(group, resource, name)))


def expired(message: str) -> StatusError:
    """``NewResourceExpired``: 410 with reason Expired (a watch or continue token older than the compaction)."""
    return StatusError(status(410, "Expired", message))


def too_many_requests(retry_after: int) -> StatusError:
    """``NewTooManyRequests`` with priority-and-fairness' message (pkg/server/filters/priority-and-fairness.go)."""
    return StatusError(status(429, "TooManyRequests", "Too many requests, please try again later.",
                              {"retryAfterSeconds": retry_after}), {"Retry-After": str(retry_after)})


def internal_error(why: str) -> StatusError:
    return StatusError(status(500, "InternalError", f"Internal error occurred: {why}", {"causes": [{"message": why}]}))


def service_unavailable(why: str) -> StatusError:
    return StatusError(status(503, "ServiceUnavailable", why))


def timeout(why: str) -> StatusError:
    return StatusError(status(504, "Timeout", f"Timeout: {why}"))


def method_not_allowed(group: str, resource: str, verb: str) -> StatusError:
    return StatusError(status(405, "MethodNotAllowed", f"{verb} is not supported on resources of kind "
                              f'"{qualified(group, resource)}"', {"group": group, "kind": resource}))


def unsupported_media_type(content_type: str) -> StatusError:
    return StatusError(status(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - '
                              f'accepted media types include: application/json-patch+json, '
                              f'application/merge-patch+json; got "{content_type}"'))

"""RFC 7807 errors as exception classes; one Flask handler renders them as problem+json."""

from flask import Response, json

TYPE_BASE = "https://developer.idlayr.com/docs/api-reference/errors#"


class Problem(Exception):
    """An API error: its problem type, HTTP status and a human detail."""

    status = 400
    title = "Bad Request"
    kind = "bad_request"

    def __init__(self, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}

    def to_response(self) -> Response:
        """Render as application/problem+json with any extra headers (Retry-After)."""
        body = {
            "type": TYPE_BASE + self.kind,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        response = Response(json.dumps(body), status=self.status, mimetype="application/problem+json")
        response.headers.update(self.headers)
        return response


class BadRequest(Problem):
    pass


class PhoneFormatInvalid(Problem):
    kind = "phone_format_invalid"


class Unauthorized(Problem):
    status, title, kind = 401, "Unauthorized", "unauthorized"


class CheckNotFound(Problem):
    status, title, kind = 404, "Not Found", "check_not_found"


class UnsupportedMediaType(Problem):
    status, title, kind = 415, "Unsupported Media Type", "unsupported_media_type"


class TooManyRequests(Problem):
    status, title, kind = 429, "Too Many Requests", "rate_limited"


class InjectedFault(Problem):
    """A status answer requested through /_emulator/faults."""

    def __init__(self, status: int, retry_after: int | None):
        self.status = status
        self.title = "Injected fault"
        self.kind = "injected_fault"
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(f"emulator fault: HTTP {status}", headers)

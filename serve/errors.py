"""HTTP errors with a one-line JSON body: ``{"error": "<what is wrong and what to do>", "status": N}``.

Messages that come from exceptions (the runtime's, the tuner's, Ray's) go through
``client_message`` first: the cause under Ray's wrapper, its first line (tav.runtime's ``first_line``,
uncut), then serve's own rules: server paths cut to their last component, shell-only advice
(``--flags``) dropped. The full detail stays in the server log under the request id.
"""

import re

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tav.runtime.command import first_line

from .schemas import one_line

# An absolute path: a '/' not inside a word, then anything up to whitespace, a quote or punctuation that ends a path.
_ABS_PATH = re.compile(r"(?<![\w.:/])/[^\s'\"`,;()\[\]{}]*")


def root_cause(err: BaseException) -> BaseException:
    """The exception under Ray's wrappers (RayTaskError keeps the original as ``.cause``)."""
    seen = 0
    while isinstance(getattr(err, "cause", None), BaseException) and seen < 8:
        err, seen = err.cause, seen + 1
    return err


def client_message(err: BaseException) -> str:
    """One line fit for an HTTP client: no traceback, no Ray header, no server path, no command-line advice."""
    err = root_cause(err)
    line = _ABS_PATH.sub(lambda m: m.group(0).rstrip("/.").rsplit("/", 1)[-1] or "/", first_line(err, None))
    parts = [part for part in line.split("; ") if not re.search(r"(^|\s)--[a-z]", part)]
    return "; ".join(parts) or type(err).__name__


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    message = " ".join(str(message).split()) or "error"  # one line, whatever the message held
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def busy(message: str, retry_after_s: int) -> ApiError:
    return ApiError(503, message, {"Retry-After": str(retry_after_s)})


def install_handlers(app) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return error_response(err.status, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        errors = err.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(422, "the body is not valid JSON; send a JSON object such as {\"prompt\": \"...\"}")
        return error_response(422, "invalid request: " + one_line(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        message = err.detail if isinstance(err.detail, str) else str(err.detail)
        if err.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see the README's Serving section"
        return error_response(err.status_code, message, getattr(err, "headers", None))

"""HTTP errors with a one-line JSON body: ``{"error": "<what is wrong and what to do>", "status": N}``."""

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .schemas import one_line


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
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

"""The HTTP API (FastAPI), built per ingress replica around its ``IngressService``.

Routes:
    GET    /healthz, /readyz                    no token
    GET    /, /docs, /static/...                the studio page and the API reference: static files, no token
                                                (they hold no data; every call they make sends the token)
    GET    /openapi.json                        the OpenAPI document
    GET    /v1/service                          the base's frames and size, whether it tunes, request defaults
    GET    /v1/videos, /v1/videos/{video_id}    the packs and their metadata
    GET    /v1/videos/{video_id}/preview        a small gif of the frames the video was tuned on
    POST   /v1/videos/{video_id}/generate       JSON -> video bytes, per-stage Server-Timing;
                                                with "async": true -> 202 + a job that follows the steps
    POST   /v1/videos                           multipart clip + caption + options -> 202 + job id
    GET    /v1/jobs, /v1/jobs/{job_id}          records, newest first: state, progress, loss curve, times, error
    GET    /v1/jobs/{job_id}/result             an async generate's video
    DELETE /v1/jobs/{job_id}                    cancel: the task stops, its files go, the record says cancelled
Every request leaves one JSON log line and per-route metrics; every response carries a strict
Content-Security-Policy (the studio's scripts are files of this origin, never inline).
"""

import asyncio
import hmac
import json
import logging
import time
import uuid

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .errors import ApiError, error_response, install_handlers
from .schemas import GenerateRequest
from .static_pages import SECURITY_HEADERS, add_static_routes

log = logging.getLogger("tav.serve.access")


def create_app(service) -> FastAPI:
    # FastAPI's own /docs loads its assets from a CDN and its /openapi.json needs no token: both are ours instead.
    app = FastAPI(title="tav-serve", summary="Tune-A-Video: edit tuned videos from prompts, tune new ones",
                  docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    _install_access_log(app, service)
    token = Depends(_token_check(service))
    _add_routes(app, service, token)
    add_static_routes(app, token)
    return app


def _token_check(service):
    """The dependency that refuses a request without the configured bearer token (none configured: all pass)."""
    async def require_token(request: Request) -> None:
        token = service.config.token
        if token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(401, "wrong bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    return require_token


def _install_access_log(app: FastAPI, service) -> None:
    """Every request: a request id, one JSON log line, per-route metrics; an unhandled error becomes a JSON 500."""
    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        # Behind Ray Serve's proxy the request carries the proxy's id (the client's X-Request-ID, or a new one),
        # and the proxy puts it on the response: one id, one header. Without a proxy (an ASGI test), ours.
        given = request.headers.get("x-request-id")
        request_id = given or uuid.uuid4().hex
        request.state.request_id = request_id
        status = 500
        try:
            try:
                response = await call_next(request)
            except Exception as err:  # a bug of ours: one JSON line for the client, the traceback for the server log
                log.exception("request %s: unhandled %s", request_id, type(err).__name__)
                response = error_response(500, f"internal error ({type(err).__name__}); the server log has the details "
                                               f"under request id {request_id}")
            status = response.status_code
            if not given:
                response.headers["X-Request-ID"] = request_id
            response.headers.update(SECURITY_HEADERS)
            return response
        finally:
            seconds = time.perf_counter() - started
            route = getattr(request.scope.get("route"), "path", "unmatched")
            service.metrics.observe(route, request.method, status, seconds)
            line = {"event": "request", "request_id": request_id, "method": request.method, "route": route,
                    "path": request.url.path, "status": status, "ms": round(seconds * 1000, 1),
                    "video_id": request.path_params.get("video_id"),
                    "client": request.client.host if request.client else None}
            log.info(json.dumps(line))


def _add_routes(app: FastAPI, service, token) -> None:
    """The routes of the module docstring; ``token`` guards all but the health checks."""
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        await service.check_ready()
        return {"status": "ready"}

    @app.get("/v1/service", dependencies=[token])
    async def describe_service():
        return await asyncio.to_thread(service.describe_service)

    @app.get("/v1/videos", dependencies=[token])
    async def list_videos():
        return {"videos": await service.list_videos()}

    @app.get("/v1/videos/{video_id}", dependencies=[token])
    async def get_video(video_id: str):
        return await service.describe_video(video_id)

    @app.post("/v1/videos/{video_id}/generate", dependencies=[token])
    async def generate(video_id: str, body: GenerateRequest, request: Request):
        if body.run_async:
            job = await service.generate_async(video_id, body, request.state.request_id)
            return JSONResponse(job, status_code=202, headers={"Location": job["status_url"]})
        result = await service.generate(video_id, body, request.state.request_id)
        timing = ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in result["timings"].items())
        headers = {"Server-Timing": timing, "X-TAV-Video": video_id,
                   "X-TAV-Frames": "x".join(map(str, result["shape"])), "X-TAV-Node": result["node"]}
        return Response(result["body"], media_type=result["media_type"], headers=headers)

    @app.post("/v1/videos", status_code=202, dependencies=[token])
    async def upload_video(request: Request):
        job = await service.jobs.submit(request)
        return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['job_id']}"})

    @app.get("/v1/videos/{video_id}/preview", dependencies=[token])
    async def get_preview(video_id: str):
        return Response(await service.preview(video_id), media_type="image/gif",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/v1/jobs", dependencies=[token])
    async def list_jobs():
        return {"jobs": await service.jobs.listing()}

    @app.get("/v1/jobs/{job_id}", dependencies=[token])
    async def get_job(job_id: str):
        return await service.jobs.status(job_id)

    @app.get("/v1/jobs/{job_id}/result", dependencies=[token])
    async def get_result(job_id: str):
        body, media_type = await service.result(job_id)
        return Response(body, media_type=media_type)

    @app.delete("/v1/jobs/{job_id}", dependencies=[token])
    async def cancel_job(job_id: str):
        return await service.jobs.cancel(job_id)

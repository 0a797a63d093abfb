"""The studio page (/), the API reference (/docs) and their static files, served by the ingress itself.

No build step and no CDN: plain HTML, CSS and ES modules in tav/serve/static/, and Swagger UI's
files from the swagger-ui-bundle package, so both pages work on an offline network. The files
hold no data and need no token; the pages ask for it once and send it with every API call. The
OpenAPI document itself is behind the token like every route but the health checks.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
# Scripts and styles only from this origin (no inline script, no on...= attributes, no eval); results and previews
# are fetched with the token and shown from blob: URLs.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer"}


def swagger_ui_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    return Path(swagger_ui_bundle.swagger_ui_path)


def add_static_routes(app: FastAPI, token) -> None:
    @app.get("/", include_in_schema=False)
    async def studio():
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def api_reference():
        return FileResponse(STATIC_DIR / "docs.html")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[token])
    async def openapi():
        return app.openapi()

    swagger = swagger_ui_dir()
    if swagger is not None:  # mounted before /static: the longer prefix must match first
        app.mount("/static/swagger", StaticFiles(directory=swagger), name="swagger")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

"""``create_app``: one ASGI application mounting every CAVE service under CAVE's prefixes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from opencave import __version__
from opencave.runtime import Runtime
from opencave.server.errors import install_error_handlers
from opencave.server.faults import FaultMiddleware
from opencave.server.limits import BodyLimitMiddleware
from opencave.server.routing import PrefixedRouter
from opencave.server.routers import annotation, auth_api, chunkedgraph, connectivity, info, jobs, l2cache, materialize, meshing, nglstate, pending, schema, skeleton, viewer, volumes
from opencave.server.web import browser, mat_views, pages

# Endpoints of these services take small JSON bodies at most.
SMALL_BODY_PREFIXES = {"/auth": 64 * 1024, "/sticky_auth": 64 * 1024, "/info": 64 * 1024, "/schema": 64 * 1024}


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        """The runtime's background work runs while the app serves."""
        runtime.start()
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)

    app = FastAPI(
        title="opencave",
        version=__version__,
        description="CAVE services: auth, info, schema, chunkedgraph, L2 cache, meshing, annotation engine, materialization, Neuroglancer states, skeletons, volumes.",
        docs_url="/api/doc",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    for router in (auth_api.router, info.router, schema.router, chunkedgraph.router, l2cache.router, annotation.router, materialize.router, meshing.router, volumes.router, nglstate.router, skeleton.router, connectivity.router, jobs.router, pages.router, browser.router, pending.router, mat_views.router, viewer.router):
        app.include_router(PrefixedRouter(router))

    app.add_middleware(FaultMiddleware)  # innermost: its answers pass the body limit and CORS layers
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=runtime.settings.max_body_bytes,
        prefix_limits={**SMALL_BODY_PREFIXES, nglstate.BODY_LIMIT_PREFIX: nglstate.MAX_BODY_BYTES},
        path_limits=[(annotation.IMPORT_PATH, runtime.settings.max_import_bytes)],
    )
    if runtime.settings.cors_origins:
        # Outermost, so every answer (413s too) carries the headers. Bearer tokens, not
        # cookies, authenticate cross-origin calls (Neuroglancer's middleauth), so
        # credentials stay off and any listed origin may call.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(runtime.settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["WWW-Authenticate"],
            max_age=3600,
        )
    return app

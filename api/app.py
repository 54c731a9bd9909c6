"""The serving API's routes. `create_app` builds the ASGI app (FastAPI inside the `Guard` middleware) that
`cli.py serve` runs under uvicorn and the tests drive through FastAPI's test client and a real server.

Every error is JSON `{"error": message}`: 404 for an unknown dataset, user, item, impression or banner; 422 for
a body that does not validate; 409 when an item has nothing live to decide among; 413, 401, 403 and 429 from
the guard.
"""

from __future__ import annotations

import json
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException

import access
import limits
import services
from api.batching import GroupCommit
from api.guard import MAX_BODY_BYTES, Guard, RateLimiter
from services.serving import Event, NoLiveVariants, Serving, UnknownDataset, UnknownUser

log = logging.getLogger(__name__)


def _id(value: object) -> object:
    """Ids are text; a JSON number (MovieLens ids are numbers) is taken as its text, a boolean is not."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Id = Annotated[str, BeforeValidator(_id), Field(min_length=1, max_length=128, pattern=r"\S")]


class VariantsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    n: int = Field(4, ge=1, le=int(limits.VARIANTS_PER_USER.high))
    dataset: Id | None = None


class DecideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: Id
    item_id: Id
    dataset: Id | None = None


class EventRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    impression_id: str = Field(min_length=1, max_length=64)
    event: Literal["click", "conversion"]


class Variant(BaseModel):
    variant_id: int
    title: str
    body: str
    cta: str
    predicted_ctr: float | None
    banners: dict[str, str]


class VariantsResponse(BaseModel):
    variants: list[Variant]
    generated: bool = Field(description="true when the variants were written for this request, false when "
                                        "they came from the store")


class Decision(BaseModel):
    impression_id: str
    segment: str
    variant: Variant


class EventResponse(BaseModel):
    impression_id: str
    event: str
    status: Literal["recorded", "duplicate"] = Field(description="duplicate: recorded before, nothing changed")


@dataclass(frozen=True)
class ServeConfig:
    dataset: str = services.common.DEFAULT_DATASET
    secrets: Path | None = None  # a secrets.toml; None: Streamlit's usual places, as the dashboard reads them
    rate_limit: float = 2000.0  # requests a second per API key (or per address when open); 0: no limit
    max_body: int = MAX_BODY_BYTES
    commit_batch: int = 1000  # writes per group commit; 1 commits every request alone (the bench's baseline)


def read_secrets(path: Path | None) -> dict:
    """The secrets the dashboard uses; a named file that is missing or does not parse is an error."""
    if path is None:
        return dict(access.read_secrets())
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise access.AccessMisconfigured(f"The secrets file {path} cannot be read: {exc}") from exc


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for problem in exc.errors():
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


def _base_url(request: Request) -> str:
    """This server's address as the caller used it (Starlette's `base_url` parses the whole URL: slower)."""
    host = request.headers.get("host") or "{}:{}".format(*request.scope.get("server", ("localhost", 80)))
    return f"{request.scope.get('scheme', 'http')}://{host}{request.scope.get('root_path', '')}/"


def _public(variant: dict, base: str) -> dict:
    """A variant with its banners as URLs of this server."""
    sizes = variant["banners"]
    return {**variant, "banners": {size: f"{base}v1/banners/{variant['variant_id']}/{size}.png" for size in sizes}}


def _routes(app: FastAPI, cfg: ServeConfig, serving: Serving, commits: GroupCommit) -> None:
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "dataset": cfg.dataset}

    @app.post("/v1/variants", response_model=VariantsResponse)
    def variants(body: VariantsRequest, request: Request) -> dict:
        """N checked variants of an item for a user: written once per (dataset, user, item, adapter), stored
        and kept live, then served from the store."""
        made, generated = services.serving.variants_for(body.dataset or cfg.dataset, body.user_id, body.item_id,
                                                        body.n)
        return {"variants": [_public(v, _base_url(request)) for v in made], "generated": generated}

    @app.get("/v1/banners/{variant_id}/{size}.png", response_class=FileResponse)
    def banner(variant_id: int, size: str) -> FileResponse:
        path = services.serving.banner_path(variant_id, size)
        if not path.is_file():
            raise services.serving.NotFound(f"The {size} banner of variant {variant_id} is missing from disk")
        return FileResponse(path, media_type="image/png")

    variant_json: dict[tuple[str, int], str] = {}  # (base URL, variant id) -> the variant as JSON, made once

    @app.post("/v1/decide", response_model=Decision)
    async def decide(body: DecideRequest, request: Request) -> Response:
        """Thompson sampling over the item's live variants for the user's taste segment; the impression is
        logged (committed) before the answer."""
        impression, variant = serving.decide(body.user_id, body.item_id, body.dataset)
        await commits.submit(impression)
        base = _base_url(request)
        key = (base, variant["variant_id"])
        if key not in variant_json:
            if len(variant_json) > 10_000:
                variant_json.clear()
            variant_json[key] = json.dumps(_public(variant, base))
        head = json.dumps({"impression_id": impression["id"], "segment": impression["segment"]})
        return Response(f'{head[:-1]}, "variant": {variant_json[key]}}}', media_type="application/json")

    @app.post("/v1/events", response_model=EventResponse)
    async def events(body: EventRequest) -> Response:
        """A click or conversion for an impression; idempotent, so a retry changes nothing."""
        outcome = await commits.submit(Event(body.impression_id, body.event))
        if outcome == "unknown":
            raise services.serving.NotFound(f"Unknown impression '{body.impression_id}'")
        return Response(json.dumps({"impression_id": body.impression_id, "event": body.event, "status": outcome}),
                        media_type="application/json")

    @app.get("/v1/report")
    def report(item_id: Annotated[str, Query(min_length=1, max_length=128)],
               dataset: Annotated[str | None, Query(max_length=64)] = None) -> dict:
        """Per variant and source: impressions, clicks, conversions, CTR with its 95% Wilson interval."""
        frame = services.serving.report(dataset or cfg.dataset, item_id)
        frame["variant_id"] = frame["variant_id"].astype("Int64").astype(object)
        rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
        return {"item_id": item_id, "confidence": 0.95, "variants": rows}


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    async def not_found(_request: Request, exc: Exception) -> JSONResponse:
        return _error(404, exc.args[0] if exc.args else str(exc))

    for missing in (UnknownDataset, UnknownUser, services.serving.UnknownItem, services.serving.NotFound):
        app.add_exception_handler(missing, not_found)

    @app.exception_handler(NoLiveVariants)
    async def nothing_live(_request: Request, exc: NoLiveVariants) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(Exception)
    async def failed(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("Request failed")
        return _error(500, f"Internal error ({type(exc).__name__}); nothing was acknowledged, see the server log")

    @app.exception_handler(ValueError)
    async def refused(_request: Request, exc: ValueError) -> JSONResponse:
        return _error(422, str(exc))


def create_app(cfg: ServeConfig | None = None) -> Guard:
    """The API for one process: FastAPI routes behind the guard, one group-commit writer, deciders per dataset."""
    cfg = cfg or ServeConfig()
    secrets = read_secrets(cfg.secrets)
    policy = access.policy_from(secrets)
    keys = access.api_keys(secrets)
    services.common.ensure_demo_data()
    services.common.require_dataset(cfg.dataset)
    serving = Serving(cfg.dataset)
    commits = GroupCommit(serving.write, cfg.commit_batch)

    app = FastAPI(title="AdLoop serving API", version="1",
                  description="Variants per request, bandit decisions and click events back into the loop.")
    _handlers(app)
    _routes(app, cfg, serving, commits)
    return Guard(app, policy, keys, RateLimiter(cfg.rate_limit), cfg.max_body)

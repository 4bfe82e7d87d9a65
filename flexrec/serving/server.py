"""``flexrec serve``: a trained model as an HTTP service (FastAPI + uvicorn).

Endpoints (all JSON):

- ``GET /health``: ``{"status": "ok", ...}`` and the batching counters.
- ``GET /model``: the policy, its needs (with their instructions), the catalogue size and the
  limits of a request (:meth:`~flexrec.serving.recommender.Recommender.describe`).
- ``POST /rank``: a ranking with per-item probabilities (see :class:`RankRequest` and
  :mod:`flexrec.serving.recommender`).

Concurrent ``/rank`` requests are batched by :class:`~flexrec.serving.batcher.MicroBatcher` (one
model call for up to ``--max-batch-size`` requests that arrive within ``--max-wait-ms``). Every
error is a JSON object with one line, ``{"error": "..."}``: 400 for a body that is not JSON (the
body is read as JSON whatever its content type), 422 for a request the model cannot answer (a missing or mistyped field, an unknown item or need, too
many candidates), 404/405 for a wrong path or method, 503 when ``--max-queue`` requests are already
waiting; an unexpected failure answers 500 with one line and leaves the traceback in the server's
log only.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError
from starlette.exceptions import HTTPException

from flexrec.errors import ConfigError
from flexrec.serving.batcher import Busy, MicroBatcher
from flexrec.serving.recommender import DEFAULT_MAX_CANDIDATES, Recommender, RequestError

__all__ = ["RankRequest", "build_parser", "create_app", "parse_request", "serve_main"]

log = logging.getLogger("flexrec.serve")

ItemId = StrictInt | StrictStr


class RankRequest(BaseModel):
    """The body of ``POST /rank``."""

    model_config = ConfigDict(extra="forbid")

    candidates: list[ItemId] = Field(
        description="item ids of the catalogue to rank (e.g. MovieLens movieId), distinct"
    )
    history: list[ItemId] = Field(
        default_factory=list, description="item ids the user interacted with, oldest first"
    )
    ratings: list[float] | None = Field(
        default=None, description="the user's rating of each history item, if known"
    )
    history_text: list[str] | None = Field(
        default=None,
        description="free-text history lines, oldest first (LLM policies; instead of history)",
    )
    need: str | None = Field(default=None, description="a need of the model (default: its first)")
    instruction: str | None = Field(
        default=None,
        description="a free instruction (policies that read instructions), read instead of the "
        "need's own",
    )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status)


def _validation_message(errors: Sequence[Any]) -> str:
    """One line for pydantic's validation errors: the first one, and how many more."""
    if not errors:
        return "invalid request"
    # an item id is `int | str`: pydantic reports each branch of the union (loc ends in its tag)
    problems: dict[str, str] = {}
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        if len(loc) > 1 and loc[-1] in ("int", "str"):
            loc = loc[:-1]
            message = f"an item id is an integer or a string, not {error.get('input')!r}"
        else:
            message = str(error.get("msg", "invalid"))
        problems.setdefault(".".join(loc), message)
    where, message = next(iter(problems.items()))
    if not where:
        return f"the request body must be a JSON object ({message})"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return f"{where}: {message}{more}"


def parse_request(body: bytes) -> RankRequest:
    """The :class:`RankRequest` of a request body, whatever its content type.

    Raises:
        RequestError: 400 when the body is not JSON, 422 when it is not a valid request.
    """
    if not body.strip():
        raise RequestError("the request has no body: send a JSON object", 400)
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON ({exc})", 400) from exc
    if not isinstance(value, dict):
        raise RequestError(
            f"the request body must be a JSON object, not {type(value).__name__}", 422
        )
    try:
        return RankRequest.model_validate(value)
    except ValidationError as exc:
        raise RequestError(_validation_message(exc.errors())) from exc


def create_app(
    recommender: Recommender,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    max_queue: int = 256,
    on_ready: Any = None,
) -> FastAPI:
    """The FastAPI application serving ``recommender``.

    Args:
        recommender: the model's request checker and ranker.
        max_batch_size: the most requests ranked in one model call.
        max_wait_ms: how long a request waits for others to share its call.
        max_queue: the most requests waiting; more are answered 503.
        on_ready: called without arguments once the service accepts requests.
    """
    batcher: MicroBatcher[dict[str, Any], Any] = MicroBatcher(
        recommender.answer, max_batch_size, max_wait_ms, max_queue
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        if on_ready is not None:
            on_ready()
        yield
        await batcher.stop()

    app = FastAPI(
        title="flexrec",
        description="Rankings of a flexrec policy, with per-item probabilities.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "policy": recommender.model.kind, **batcher.stats.as_dict()}

    @app.get("/model")
    async def model() -> dict[str, Any]:
        return {
            **recommender.describe(),
            "batching": {
                "max_batch_size": max_batch_size,
                "max_wait_ms": max_wait_ms,
                "max_queue": max_queue,
            },
        }

    schema = RankRequest.model_json_schema()

    @app.post(
        "/rank",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}
        },
    )
    async def rank(request: Request) -> Any:
        try:
            body = parse_request(await request.body())
        except RequestError as exc:
            return _error(exc.status, str(exc))
        try:
            result = await batcher.submit(body.model_dump())
        except Busy as exc:
            return _error(503, f"the server is busy: {exc}")
        if isinstance(result, RequestError):
            return _error(result.status, str(result))
        return result

    return app


def build_parser() -> argparse.ArgumentParser:
    """The arguments of ``flexrec serve``."""
    parser = argparse.ArgumentParser(
        prog="flexrec serve",
        description="Serve a trained model over HTTP: POST /rank, GET /model, GET /health. "
        "MODEL is a checkpoint (.ckpt; its run's dataset must be readable), a run folder (its "
        "checkpoints/last.ckpt), or an export written by `flexrec export`.",
    )
    parser.add_argument("model", metavar="MODEL", help="checkpoint, run folder or export")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8000, help="port to listen on (8000; 0 picks a free one)"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=16, help="most requests per model call (16)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to share its model call (5 ms)",
    )
    parser.add_argument(
        "--max-queue", type=int, default=256, help="most waiting requests; more get 503 (256)"
    )
    parser.add_argument(
        "--max-candidates",
        type=int,
        default=DEFAULT_MAX_CANDIDATES,
        help=f"most candidates per request ({DEFAULT_MAX_CANDIDATES})",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (warning; info logs every request)",
    )
    return parser


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it a kept-alive connection waits ~40 ms per
    # response (Nagle's algorithm against the client's delayed ACK; measured 44 ms vs 0.3 ms)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    sock.set_inheritable(True)
    return sock


def _check(args: argparse.Namespace) -> None:
    for name in ("max_batch_size", "max_queue", "max_candidates"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise ConfigError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")


def serve_main(argv: Sequence[str]) -> int:
    """``flexrec serve MODEL [options]``: load the model, listen, serve until interrupted."""
    import torch
    import uvicorn

    from flexrec.serving.model import load_served_model

    args = build_parser().parse_args(list(argv))
    _check(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = load_served_model(args.model)
    recommender = Recommender(model, max_candidates=args.max_candidates)
    sock = _listen(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    needs = ", ".join(n.name for n in model.needs)
    print(
        f"flexrec serve: {model.kind} policy from {model.source} "
        f"({model.catalogue.num_items:,} items; needs: {needs})",
        flush=True,
    )

    def ready() -> None:
        print(f"flexrec serve: listening on http://{shown}:{port} (Ctrl-C stops)", flush=True)

    app = create_app(recommender, args.max_batch_size, args.max_wait_ms, args.max_queue, ready)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level == "info")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    print("flexrec serve: stopped", file=sys.stderr, flush=True)
    return 0

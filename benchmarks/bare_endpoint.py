"""A bare FastAPI webhook endpoint: the floor that Baton's ingress is measured against.

It does the least any GitHub App must do per delivery: read the raw body, verify
`X-Hub-Signature-256` and answer an empty `202` (`401` when the signature is wrong), as the
reference endpoint of `../shared/bench/ingress-wrk.sh` does. Nothing is parsed or stored. It
runs under uvicorn with the same settings as `baton serve`.

    BENCH_WEBHOOK_SECRET=... python benchmarks/bare_endpoint.py --port 8001

The secret comes from the environment, never from a process argument.
"""

from __future__ import annotations

import argparse
import os

import uvicorn
from fastapi import FastAPI, Request, Response
from githubkit.webhooks import verify

SECRET_ENV = "BENCH_WEBHOOK_SECRET"
WEBHOOK_PATH = "/api/github/webhooks"


def create_app(secret: str) -> FastAPI:
    """One webhook route that only verifies the signature, and a health route."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post(WEBHOOK_PATH)
    async def receive_delivery(request: Request) -> Response:
        body = await request.body()
        signature = request.headers.get("x-hub-signature-256", "")
        if not signature or not verify(secret, body, signature):
            return Response(status_code=401)
        return Response(status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        parser.error(f"set {SECRET_ENV}")
    uvicorn.run(
        create_app(secret), host=args.host, port=args.port, log_config=None, access_log=False
    )


if __name__ == "__main__":
    main()

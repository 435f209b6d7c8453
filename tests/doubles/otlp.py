"""An OTLP/HTTP trace receiver on loopback: it takes what a real exporter sends to `/v1/traces`
(protobuf `ExportTraceServiceRequest`, gzip or not) and keeps the spans, flattened."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Self

from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support import serve

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int
    status_code: int


class OtlpReceiver:
    """Receives spans at `endpoint` (the value for OTEL_EXPORTER_OTLP_ENDPOINT)."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._stack = ExitStack()
        self.requests = 0
        self.endpoint = ""

    def __enter__(self) -> Self:
        self.endpoint = self._stack.enter_context(serve(self._app()))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/traces")
        async def traces(request: Request) -> Response:
            body = await request.body()
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if request.headers.get("content-type") != PROTOBUF:
                return Response(status_code=415)
            export = ExportTraceServiceRequest.FromString(body)
            with self._lock:
                self.requests += 1
                self._spans.extend(_flattened(export))
            answer = ExportTraceServiceResponse().SerializeToString()
            return Response(answer, media_type=PROTOBUF)

        return app


def _flattened(export: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in export.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=_attributes(span.attributes),
                    resource=resource,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=span.status.code,
                )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None

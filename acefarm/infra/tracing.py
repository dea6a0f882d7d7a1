"""W3C trace context from the HTTP request through Kafka headers to the worker (OpenTelemetry).

Spans are recorded and exported only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (`configure_tracing`);
otherwise OpenTelemetry's no-op tracer is used and a `traceparent` that arrives with a request is still
passed along unchanged, so one job can be followed across services' logs either way. While a span
runs, `traced` binds its `trace_id` to every structlog line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind
from structlog.contextvars import bound_contextvars

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings

log = get_logger(__name__)

KafkaHeaders = list[tuple[str, bytes]]
_tracer = trace.get_tracer("acefarm")
_configured: list[str] = []


def configure_tracing(service: str, settings: Settings) -> bool:
    """Export this process's spans over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; True if so.

    Without an endpoint nothing is installed (the API's no-op tracer stays). Once per process.
    """
    endpoint = settings.otel_exporter_otlp_endpoint
    if not endpoint or _configured:
        return bool(_configured)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    trace.set_tracer_provider(provider)
    _configured.append(service)
    log.info("tracing.exporting", endpoint=endpoint)
    return True


def trace_headers() -> KafkaHeaders | None:
    """Kafka record headers carrying the current trace context (`traceparent`); None outside any trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(name, value.encode()) for name, value in carrier.items()] or None


def kafka_carrier(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    """A Kafka record's headers as a text carrier for `traced`."""
    return {name: value.decode("latin-1") for name, value in headers or () if value is not None}


def traced(
    name: str, carrier: Mapping[str, str] | None = None, kind: SpanKind = SpanKind.INTERNAL, **attributes: str
) -> AbstractContextManager[Span]:
    """A span `name`, continuing the trace in `carrier` (else the current one), current while the block runs.

    The trace id, when there is one, is bound to log lines as `trace_id` for the block. Without a trace to
    continue and without an exporter the span is a no-op one and nothing is made current: a long block
    (an SSE stream) then holds no context managers at all.
    """
    parent = propagate.extract(carrier) if carrier is not None else None
    span = _tracer.start_span(name, context=parent, kind=kind, attributes=attributes)
    if not span.is_recording() and not span.get_span_context().is_valid:
        return nullcontext(span)
    return _current(span)


@contextmanager
def _current(span: Span) -> Iterator[Span]:
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    with trace.use_span(span, end_on_exit=True), bound_contextvars(trace_id=trace_id):
        yield span

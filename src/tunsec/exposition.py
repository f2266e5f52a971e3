"""Metric families of thousands of series written straight in Prometheus's exposition formats.

prometheus_client makes a Sample (a label dict) per series and, to encode it, sorts and escapes
its labels one call at a time (OpenMetrics also checks the sample's name a character at a time):
~20 us a series, most of the ~0.6 s of CPU (more on a loaded machine) a scrape of 2,000 clients
with their ~22,000 per-SA and per-policy series took, on the event loop at once.  A
:class:`Written` family holds its samples as lines of text, each written with one f-string from
labels escaped once per SA; its header (HELP, TYPE) is still made by prometheus_client, so the
families read the same.  The few small families stay prometheus_client's (:func:`encode` puts
both kinds in one body, in order); both formats' sample lines are alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Encoder = Callable[[Collector], bytes]
_EOF = b"# EOF\n"


def label(value: str) -> str:
    """A label value as both formats escape it (backslash, newline, double quote)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(names: Sequence[str], values: Sequence[str]) -> str:
    """'name="value",...' in the order of names (the formats' own: sorted)."""
    return ",".join([f'{n}="{label(v)}"' for n, v in zip(names, values, strict=True)])


def value(v: float) -> str:
    """A sample's value as prometheus_client writes it (floatToGoString): a count below a million
    without the call (its float's repr, 'N.0'); Go's exponent form from there on."""
    if type(v) is int and 0 <= v < 1_000_000:
        return f"{v}.0"
    text: str = floatToGoString(v)  # type: ignore[no-untyped-call]
    return text


@dataclass(eq=False)
class Written:
    """A family whose samples are lines of text: ``sample_name{labels} value``."""

    name: str
    type: str            # "counter" or "gauge"
    documentation: str
    lines: list[str] = field(default_factory=list, repr=False)   # megabytes: never in a repr (a log line)

    def __post_init__(self) -> None:
        self.sample_name = f"{self.name}_total" if self.type == "counter" else self.name

    def add(self, label_text: str, v: float) -> None:
        """A sample; label_text as labels() makes it ('' for none)."""
        self.lines.append(f"{self.sample_name}{{{label_text}}} {value(v)}\n" if label_text
                          else f"{self.sample_name} {value(v)}\n")

    def header(self, encoder: Encoder) -> bytes:
        """HELP and TYPE as prometheus_client writes them, from the family without samples."""
        family = (CounterMetricFamily if self.type == "counter" else GaugeMetricFamily)(
            self.name, self.documentation, labels=())
        return _without_eof(encoder, encoder(_Families([family])))


def _without_eof(encoder: Encoder, data: bytes) -> bytes:
    """An OpenMetrics part without its "# EOF" (the body has one, at its end)."""
    return data.removesuffix(_EOF) if encoder is openmetrics.generate_latest else data


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def encode(encoder: Encoder, parts: Iterable[Metric | Written], tail: Collector) -> bytes:
    """The body: parts in order (runs of prometheus_client's families encoded by it, Written ones
    as they are), then the tail's families (a registry) and, in OpenMetrics, the one "# EOF"."""
    out: list[bytes] = []
    run: list[Metric] = []
    for part in parts:
        if isinstance(part, Written):
            if run:
                out.append(_without_eof(encoder, encoder(_Families(run))))
                run = []
            out.append(part.header(encoder))
            out.append("".join(part.lines).encode())
        else:
            run.append(part)
    if run:
        out.append(_without_eof(encoder, encoder(_Families(run))))
    out.append(encoder(tail))
    return b"".join(out)


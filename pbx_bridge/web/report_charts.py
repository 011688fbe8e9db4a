"""The summary report's four charts as SVG, with labels in the reader's language."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pbx_bridge.i18n import format_number
from pbx_bridge.reports.summary import Bucket, SummaryReport
from pbx_bridge.web.svg_charts import Series, stacked_columns, stacked_rows


def day_label(key: str, lang: str, t: Callable[..., str]) -> str:
    day = date.fromisoformat(key)
    if lang == "ru":
        return f"{day.day:02d}.{day.month:02d}"
    return f"{day.day} {t(f'month.short.{day.month}')}"


def source_label(key: str | None, t: Callable[..., str]) -> str:
    return key if key else t("reports.no_did")


def operator_label(key: str | None, t: Callable[..., str]) -> str:
    return key if key else t("reports.no_operator")


def build(
    report: SummaryReport, days: list[Bucket], t: Callable[..., str], lang: str
) -> dict[str, str]:
    def count(v: float) -> str:
        return format_number(v, lang)

    per_day = stacked_columns(
        [day_label(b.key or "", lang, t) for b in days],
        [Series("answered", t("reports.answered"), [b.answered for b in days]),
         Series("missed", t("reports.missed"), [b.missed for b in days]),
         Series("other", t("reports.unanswered_outbound"), [b.unanswered_outbound for b in days])],
        title=t("reports.chart.per_day"), fmt=count,
    )
    ops = report.by_operator
    per_operator = stacked_rows(
        [operator_label(b.key, t) for b in ops],
        [Series("answered", t("reports.answered"), [b.answered for b in ops]),
         Series("missed", t("reports.missed"), [b.missed for b in ops]),
         Series("other", t("reports.other_unanswered"),
                [b.calls - b.answered - b.missed for b in ops])],
        title=t("reports.chart.per_operator"), fmt=count,
    )
    dids = report.by_source
    per_source = stacked_rows(
        [source_label(b.key, t) for b in dids],
        [Series("answered", t("reports.answered"), [b.answered for b in dids]),
         Series("missed", t("reports.missed"), [b.missed for b in dids]),
         Series("other", t("reports.other_unanswered"), [b.unanswered_outbound for b in dids])],
        title=t("reports.chart.per_source"), fmt=count,
    )
    bands = report.wait_bands

    def band_label(low: float, high: float | None) -> str:
        if high is None:
            return t("reports.wait_over", seconds=count(low))
        return t("reports.wait_band", low=count(low), high=count(high))

    waits = stacked_columns(
        [band_label(b.low, b.high) for b in bands],
        [Series("answered", t("reports.answered"), [b.answered for b in bands]),
         Series("missed", t("reports.missed"), [b.missed for b in bands])],
        title=t("reports.chart.wait"), fmt=count, height=250,
    )
    return {"per_day": per_day, "per_operator": per_operator, "per_source": per_source, "waits": waits}

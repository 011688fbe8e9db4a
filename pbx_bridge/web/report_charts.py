"""The summary report's four charts as SVG, with labels in the reader's language."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date

from crm_sync.phones import normalize
from pbx_bridge.config import Settings
from pbx_bridge.web.i18n import format_number
from pbx_bridge.web.report_data import SummaryReport
from pbx_bridge.web.svg_charts import Series, stacked_columns, stacked_rows


def day_label(key: str, lang: str, t: Callable[..., str]) -> str:
    day = date.fromisoformat(key)
    if lang == "ru":
        return f"{day.day:02d}.{day.month:02d}"
    return f"{day.day} {t(f'month.short.{day.month}')}"


def did_names(settings: Settings) -> dict[str, str]:
    """DID (E.164) -> ad channel name: the CRM feature's crm.did_sources where that feature is in
    the tree (keys in any format), overridden by web.did_labels."""
    names: dict[str, str] = {}
    crm = getattr(settings, "crm", None)  # the CRM feature's settings section, when merged
    for raw, name in dict(getattr(crm, "did_sources", None) or {}).items():
        e164 = normalize(str(raw), settings.phone.default_region, settings.phone.max_extension_length)
        if e164:
            names[e164] = str(name)
    names.update(settings.web.did_labels)
    return names


def did_label(key: str, t: Callable[..., str], labels: Mapping[str, str]) -> str:
    if not key:
        return t("reports.no_did")
    named = labels.get(key)
    return f"{named} ({key})" if named else key


def build(
    report: SummaryReport, t: Callable[..., str], lang: str, did_labels: Mapping[str, str]
) -> dict[str, str]:
    def count(v: float) -> str:
        return format_number(v, lang)

    days = report.by_day
    per_day = stacked_columns(
        [day_label(b.key, lang, t) for b in days],
        [Series("answered", t("reports.answered"), [b.answered for b in days]),
         Series("missed", t("reports.missed"), [b.missed for b in days]),
         Series("other", t("reports.unanswered_outbound"), [b.unanswered_outbound for b in days])],
        title=t("reports.chart.per_day"), fmt=count,
    )
    ops = report.by_operator
    per_operator = stacked_rows(
        [b.key for b in ops],
        [Series("answered", t("reports.answered"), [b.answered for b in ops]),
         Series("missed", t("reports.missed"), [b.missed for b in ops]),
         Series("other", t("reports.other_unanswered"),
                [b.calls - b.answered - b.missed for b in ops])],
        title=t("reports.chart.per_operator"), fmt=count,
    )
    dids = report.by_did
    per_did = stacked_rows(
        [did_label(b.key, t, did_labels) for b in dids],
        [Series("answered", t("reports.answered"), [b.answered for b in dids]),
         Series("missed", t("reports.missed"), [b.missed for b in dids])],
        title=t("reports.chart.per_did"), fmt=count,
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
    return {"per_day": per_day, "per_operator": per_operator, "per_did": per_did, "waits": waits}

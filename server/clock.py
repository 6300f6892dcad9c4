from datetime import UTC, datetime


def utc_now() -> str:
    """ISO-8601 UTC with a fixed width, so string order is time order (SQLite sorts these as text)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")

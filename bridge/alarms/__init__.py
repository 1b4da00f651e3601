"""Alarms: conditions from the mapping (limits per telemetry field, states per station), their
Part 9 state machine, and the book that follows the event stream (docs/alarms.md)."""

"""Alarms: conditions from the mapping (limits per telemetry field, states per station) and the book
that follows the event stream (docs/alarms.md); their Part 9 state machine is the domain's
(bridge/domain/alarm_condition.py), as the events that carry it are."""

"""The Modbus TCP adapter: one `ModbusStationLink` per station PLC."""

from bridge.counters import LinkCounters
from bridge.modbus.link import ModbusStationLink

__all__ = ["LinkCounters", "ModbusStationLink"]

"""The Modbus TCP adapter: one `ModbusStationLink` per station PLC."""

from bridge.modbus.link import LinkCounters, ModbusStationLink

__all__ = ["LinkCounters", "ModbusStationLink"]

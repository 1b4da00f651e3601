"""Tools for the PLC side of a station: its register sheet, a handshake conformance check."""

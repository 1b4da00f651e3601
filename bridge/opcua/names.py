"""Every instance path and method name of the plant's address space, spelled once.

A node's NodeId is `ns=<line namespace>;s=<path>`, and its path is built here and nowhere else
(docs/opcua-model.md); the type model (uatypes) names the members each type declares.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.domain.model import Step

# Where `linebridge run` listens, and where its client commands connect, unless told otherwise.
DEFAULT_ENDPOINT = "opc.tcp://127.0.0.1:4840/"

PLANT = "Plant"
LINES = "Plant.Lines"

SUBMIT_ORDER = "SubmitOrder"
SUBMIT_TYPED_PREFIX = "SubmitOrder_"  # + product id: the typed twin of SubmitOrder
CANCEL_ORDER = "CancelOrder"
RELOAD_MAPPING = "ReloadMapping"
CLEAR_STATION_ERROR = "ClearStationError"
HISTORY_ROWS_DROPPED = "HistoryRowsDropped"
ACCEPTING_ORDERS = "AcceptingOrders"
ORDER_REFUSAL = "OrderRefusal"
ALARMS = "Alarms"


@dataclass(frozen=True)
class Paths:
    """The paths of one line's instances."""

    line_name: str

    @property
    def line(self) -> str:
        return f"{LINES}.{self.line_name}"

    @property
    def stations(self) -> str:
        return f"{self.line}.Stations"

    @property
    def orders(self) -> str:
        return f"{self.line}.Orders"

    @property
    def job_management(self) -> str:
        """ISA-95 Job Control: JobOrderControl and JobOrderResults under it (docs/isa95.md)."""
        return f"{self.line}.JobManagement"

    def on_line(self, name: str) -> str:
        """A variable or method right on the line object (HistoryRowsDropped, SubmitOrder, …)."""
        return f"{self.line}.{name}"

    def station(self, name: str) -> str:
        return f"{self.stations}.{name}"

    def station_value(self, station: str, folder: str, name: str) -> str:
        """A PLC value of a station: folder is Parameters, Results, Telemetry or Setpoints."""
        return f"{self.stations}.{station}.{folder}.{name}"

    def alarms(self, station: str) -> str:
        return f"{self.stations}.{station}.{ALARMS}"

    def alarm(self, station: str, name: str) -> str:
        """A station's alarm condition (Part 9): a telemetry field's name, or offline, held, …"""
        return f"{self.alarms(station)}.{name}"

    def order(self, order_id: str) -> str:
        return f"{self.orders}.{order_id}"

    def step(self, order_path: str, step: Step) -> str:
        return f"{order_path}.Steps.{step_name(step)}"


def shelving_state(condition_path: str) -> str:
    """An alarm condition's ShelvingState, where TimedShelve, OneShotShelve and Unshelve are called."""
    return f"{condition_path}.ShelvingState"


def step_name(step: Step) -> str:
    """unit-routeindex-station: unique within its order, and readable."""
    return f"{step.unit_index}-{step.route_index}-{step.station}"

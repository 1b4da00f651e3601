"""linebridge: the control-layer bridge between order systems (OPC UA) and station PLCs (Modbus)."""

import sys

# structlog imports rich when it is installed (typer's dependency, for help screens) only to offer
# boxed tracebacks, which this service never renders: it logs one event a line. Hidden from that
# import, rich stays out of a running bridge (4 MB of its resident memory, docs/telemetry.md);
# typer still finds it when it draws a help screen.
if "rich" not in sys.modules and "structlog" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]  # what `import rich` then fails on
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]

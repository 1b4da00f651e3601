"""The journal's tables, and the statements its batched rows (audit, alarm history) are written
with: one place to read what is on disk (sqlite.py migrates older journals up to it)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    product TEXT NOT NULL,
    options TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    state TEXT NOT NULL,
    current_station TEXT,
    fault_station TEXT,
    result_code INTEGER,
    created_at TEXT NOT NULL,
    completed_at TEXT,
    accept_index INTEGER NOT NULL,
    client TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS orders_open ON orders(state);
CREATE INDEX IF NOT EXISTS orders_completed ON orders(completed_at, order_id);
CREATE TABLE IF NOT EXISTS units (
    order_id TEXT NOT NULL REFERENCES orders(order_id),
    unit_index INTEGER NOT NULL,
    serial INTEGER NOT NULL UNIQUE,
    next_step INTEGER NOT NULL,
    state TEXT NOT NULL,
    parameters TEXT,
    PRIMARY KEY (order_id, unit_index)
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    unit_index INTEGER NOT NULL,
    route_index INTEGER NOT NULL,
    station TEXT NOT NULL,
    seq INTEGER NOT NULL,
    parameters TEXT NOT NULL,
    phase TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    results TEXT,
    result_code INTEGER,
    UNIQUE (order_id, unit_index, route_index)
);
CREATE INDEX IF NOT EXISTS steps_station ON steps(station, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id TEXT NOT NULL,
    state TEXT NOT NULL,
    station TEXT,
    unit_index INTEGER,
    result_code INTEGER,
    message TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_order ON events(order_id);
CREATE TABLE IF NOT EXISTS cleared (order_id TEXT PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pruned (order_id TEXT PRIMARY KEY, completed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    event TEXT NOT NULL,
    user TEXT NOT NULL,
    thumbprint TEXT NOT NULL,
    outcome TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    alarm TEXT NOT NULL,
    what TEXT NOT NULL,
    active INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    confirmed INTEGER NOT NULL,
    shelving TEXT NOT NULL,
    severity INTEGER NOT NULL,
    limit_name TEXT,
    value REAL,
    message TEXT NOT NULL,
    user TEXT NOT NULL,
    comment TEXT NOT NULL,
    unshelve_at REAL
);
CREATE INDEX IF NOT EXISTS alarms_by_alarm ON alarms(alarm, id);
"""
ORDER_COLUMNS = (
    "order_id, product, options, quantity, priority, state, current_station, fault_station, result_code,"
    " created_at, completed_at, accept_index, client"
)
AUDIT_COLUMNS = "at, event, user, thumbprint, outcome, channel"
ALARM_COLUMNS = (
    "at, alarm, what, active, acked, confirmed, shelving, severity, limit_name, value, message, user,"
    " comment, unshelve_at"
)


def insert_sql(table: str, columns: str) -> str:
    """An INSERT of `columns` (comma-separated), one placeholder each: the count cannot drift."""
    return f"INSERT INTO {table} ({columns}) VALUES ({','.join('?' * len(columns.split(',')))})"


ORDER_SQL = insert_sql("orders", ORDER_COLUMNS)
AUDIT_SQL = insert_sql("audit", AUDIT_COLUMNS)
ALARM_SQL = insert_sql("alarms", ALARM_COLUMNS)

"""The line as data: schema, checks and register codec of a mapping file."""

from bridge.mapping.codec import decode, encode
from bridge.mapping.fields import RegisterField
from bridge.mapping.loader import apply_deployment, load_deployment, load_mapping, parse_mapping
from bridge.mapping.model import Endpoint, LineMapping, StationType

__all__ = [
    "Endpoint",
    "LineMapping",
    "RegisterField",
    "StationType",
    "apply_deployment",
    "decode",
    "encode",
    "load_deployment",
    "load_mapping",
    "parse_mapping",
]

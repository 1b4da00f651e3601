"""Reading a mapping (and an optional deployment file) from YAML into a checked LineMapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bridge.errors import MappingError, MappingIssue
from bridge.mapping.checks import check, shared_endpoints
from bridge.mapping.model import Endpoint, LineMapping

# libyaml's parser where PyYAML has it (the pure-Python one spent 40 ms of a mapping's 43 ms load)
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):  # type: ignore[valid-type,misc]
    """A SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _construct_mapping(
    loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False
) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))  # type: ignore[no-untyped-call]


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError([MappingIssue("", f"cannot read file: {exc.strerror}")], source=str(path)) from exc
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at offset {exc.start}"
        raise MappingError([MappingIssue("", reason)], source=str(path)) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise MappingError([MappingIssue("", f"not valid YAML: {exc}")], source=str(path)) from exc


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part.startswith("function-"):
            continue  # pydantic's union/validator tags say nothing about the YAML
        else:
            path += f".{part}" if path else str(part)
    return path


def issues_from(error: ValidationError) -> list[MappingIssue]:
    issues = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        if item["type"].endswith("_type") and not isinstance(item.get("input"), dict | list):
            # strict types, as the JSON Schema: say what was there ("100" in quotes is text)
            message += f", not {type(item['input']).__name__} {item['input']!r}"
        issues.append(MappingIssue(_dotted(item["loc"]), message))
    return issues


def parse_mapping(data: Any, *, source: str = "") -> LineMapping:
    """A checked LineMapping from already-parsed YAML; raises MappingError listing every issue."""
    if not isinstance(data, dict):
        raise MappingError(
            [MappingIssue("", "the mapping must be a YAML mapping at the top level")], source=source
        )
    try:
        mapping = LineMapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(issues_from(exc), source=source) from None
    issues = check(mapping)
    if issues:
        raise MappingError(issues, source=source)
    return mapping


def load_mapping(path: str | Path) -> LineMapping:
    path = Path(path)
    return parse_mapping(_read_yaml(path), source=str(path))


class Deployment(BaseModel):
    """Where each station's PLC really is, so one mapping serves simulators and real PLCs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stations: dict[str, Endpoint]


def apply_deployment(
    mapping: LineMapping, endpoints: dict[str, Endpoint], *, source: str = ""
) -> LineMapping:
    """The mapping with the stations' endpoints replaced by `endpoints`."""
    unknown = [name for name in endpoints if name not in mapping.stations]
    if unknown:
        raise MappingError(
            [MappingIssue(f"stations.{name}", "not a station of the mapping") for name in unknown],
            source=source,
        )
    stations = {
        name: st.model_copy(update={"endpoint": endpoints.get(name, st.endpoint)})
        for name, st in mapping.stations.items()
    }
    deployed = mapping.model_copy(update={"stations": stations})
    issues = shared_endpoints(deployed)
    if issues:
        raise MappingError(issues, source=source)
    return deployed


def load_deployment(mapping: LineMapping, path: str | Path) -> LineMapping:
    path = Path(path)
    data = _read_yaml(path)
    try:
        deployment = Deployment.model_validate(data)
    except ValidationError as exc:
        raise MappingError(issues_from(exc), source=str(path)) from None
    return apply_deployment(mapping, deployment.stations, source=str(path))

"""JSON Schema from the contracts themselves: proto descriptors (proto3 JSON) and botocore shapes.

The OpenAPI document (gateway.faces.openapi) asks for a message or a shape and gets a `$ref`;
each schema is written once into the document's components. Nothing here knows a route.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

Schema = dict[str, Any]

#: proto3 JSON for the scalar types (protobuf's JSON mapping): 64-bit integers are strings.
_INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
_UINT32 = {"type": "integer", "format": "int32", "minimum": 0, "maximum": 2**32 - 1}
_INT64 = {"type": "string", "format": "int64", "pattern": r"^-?[0-9]{1,19}$"}
_SCALARS: Mapping[int, Schema] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_INT32: _INT32,
    FieldDescriptor.TYPE_SINT32: _INT32,
    FieldDescriptor.TYPE_SFIXED32: _INT32,
    FieldDescriptor.TYPE_UINT32: _UINT32,
    FieldDescriptor.TYPE_FIXED32: _UINT32,
    FieldDescriptor.TYPE_INT64: _INT64,
    FieldDescriptor.TYPE_SINT64: _INT64,
    FieldDescriptor.TYPE_SFIXED64: _INT64,
    FieldDescriptor.TYPE_UINT64: {**_INT64, "pattern": r"^[0-9]{1,20}$"},
    FieldDescriptor.TYPE_FIXED64: {**_INT64, "pattern": r"^[0-9]{1,20}$"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
#: The well-known types' own JSON forms.
_WELL_KNOWN: Mapping[str, Schema] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    # json_format writes 0, 3, 6 or 9 fraction digits: `0s`, `1.500s`.
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
}
ANY = "google.protobuf.Any"
TYPE_URL_PREFIX = "type.googleapis.com/"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


class ProtoSchemas:
    """Component schemas for proto messages in proto3 JSON (json_format's spelling): fields by
    their JSON names, enums as their value names, unknown fields refused.

    `facts` adds what the proto cannot say, by proto field name (`server_id`), full field name
    (`transfer_gateway.v1.CreateJobRequest.operation`) or full message name: patterns,
    narrowed enums, sizes, required fields, rules across fields.
    A message in `inputs` is read from callers (every field optional); any other is written
    by the gateway with every field that has no presence (always_print_fields_with_no_presence),
    so those are `required`, unless it is in `sparse` (rendered without the unpopulated
    fields: google.rpc.Status and its details). `any_types` says which messages a
    google.protobuf.Any field can hold (`@type` and the message's fields)."""

    def __init__(
        self,
        components: dict[str, Schema],
        *,
        facts: Mapping[str, Schema],
        inputs: Collection[str] = (),
        sparse: Callable[[str], bool] = lambda name: False,
        any_types: Mapping[str, Collection[Descriptor]] | None = None,
    ) -> None:
        self._components = components
        self._facts = facts
        self._inputs = frozenset(inputs)
        self._sparse = sparse
        self._any_types = any_types or {}

    def message(self, descriptor: Descriptor, *, packed: bool = False) -> Schema:
        """A `$ref` to the message's schema (written on first use); `packed`: as the content
        of a google.protobuf.Any (with `@type`)."""
        name = f"{ANY}.{descriptor.full_name}" if packed else descriptor.full_name
        if name not in self._components:
            self._components[name] = {}  # reserved first: messages may nest themselves
            self._components[name] = self._object(descriptor, descriptor.fields, packed=packed)
        return ref(name)

    def fields(self, descriptor: Descriptor, fields: Collection[FieldDescriptor]) -> Schema:
        """An inline object of some of a message's fields (an HTTP body without the path's)."""
        return self._object(descriptor, fields, packed=False)

    def field(self, field: FieldDescriptor) -> Schema:
        """One field's schema, facts applied (a query or path parameter)."""
        schema: Schema
        entry = field.message_type
        if entry is not None and _is_map(field):
            value = entry.fields_by_name["value"]
            schema = {"type": "object", "additionalProperties": self._single(value)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self._single(field)}
        else:
            schema = self._single(field)
        return _merge(schema, self._fact(field))

    def _object(
        self, descriptor: Descriptor, fields: Collection[FieldDescriptor], *, packed: bool
    ) -> Schema:
        full = descriptor.full_name
        properties: Schema = {}
        required: list[str] = []
        if packed:
            properties["@type"] = {"const": TYPE_URL_PREFIX + full}
            required.append("@type")
        for field in fields:
            properties[field.json_name] = self.field(field)
            written = full not in self._inputs and not self._sparse(full)
            if written and not field.has_presence:
                required.append(field.json_name)
        schema: Schema = {
            "type": "object",
            "description": f"{full} in proto3 JSON.",
            "properties": properties,
            "additionalProperties": False,
        }
        if required:
            schema["required"] = list(dict.fromkeys(required))
        return _merge(schema, self._facts.get(full, {}))

    def _single(self, field: FieldDescriptor) -> Schema:
        """A field's schema, one value of it (an element of a repeated field)."""
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        message = field.message_type
        if message is not None:
            if message.full_name in _WELL_KNOWN:
                return dict(_WELL_KNOWN[message.full_name])
            if message.full_name == ANY:
                return self._any(field)
            return self.message(message)
        return dict(_SCALARS[field.type])

    def _any(self, field: FieldDescriptor) -> Schema:
        held = self._any_types.get(field.full_name, ())
        if not held:
            return {
                "type": "object",
                "required": ["@type"],
                "properties": {"@type": {"type": "string"}},
            }
        variants = [self.message(m, packed=True) for m in held]
        return variants[0] if len(variants) == 1 else {"oneOf": variants}

    def _fact(self, field: FieldDescriptor) -> Schema:
        return dict(self._facts.get(field.full_name) or self._facts.get(field.name) or {})


def _is_map(field: FieldDescriptor) -> bool:
    entry = field.message_type
    return entry is not None and entry.GetOptions().map_entry and field.is_repeated


def _merge(schema: Schema, fact: Schema) -> Schema:
    """The fact's keywords over the derived ones (an array's `items` merged one level)."""
    out = dict(schema)
    for key, value in fact.items():
        if key == "items" and isinstance(value, dict) and isinstance(out.get("items"), dict):
            out["items"] = {**out["items"], **value}
        else:
            out[key] = value
    return out


# -- botocore shapes (the AWS-compatible face) -----------------------------------------------
def shape_schema(
    shape: Any, components: dict[str, Schema], prefix: str, *, closed: bool = True
) -> Schema:
    """JSON Schema of a botocore shape as AWS JSON 1.1 carries it: structures as objects with
    their required members, the model's patterns (anchored: AWS's match the whole value),
    lengths, ranges and enums; timestamps as epoch seconds. Structures become components
    named `prefix + shape name`. `closed`: no other members (an answer: botocore drops what
    its model lacks); an input's unknown members are ignored, as AWS ignores them."""
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        name = prefix + shape.name
        if name not in components:
            components[name] = {}
            members = {
                k: shape_schema(v, components, prefix, closed=closed)
                for k, v in shape.members.items()
            }
            schema: Schema = {"type": "object", "properties": members}
            if closed:
                schema["additionalProperties"] = False
            if shape.required_members:
                schema["required"] = list(shape.required_members)
            components[name] = schema
        return ref(name)
    if kind == "list":
        item = shape_schema(shape.member, components, prefix, closed=closed)
        out: Schema = {"type": "array", "items": item}
        _bounds(out, meta, "minItems", "maxItems")
        return out
    if kind == "map":
        return {
            "type": "object",
            "additionalProperties": shape_schema(shape.value, components, prefix, closed=closed),
        }
    if kind == "string":
        out = {"type": "string"}
        if shape.enum:
            out["enum"] = list(shape.enum)
        if "pattern" in meta:
            out["pattern"] = f"^(?:{meta['pattern']})$"
        _bounds(out, meta, "minLength", "maxLength")
        return out
    if kind in ("integer", "long"):
        out = {"type": "integer"}
        _bounds(out, meta, "minimum", "maximum")
        return out
    if kind in ("float", "double"):
        return {"type": "number"}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "timestamp":
        return {"type": "number", "description": "Seconds since the epoch."}
    if kind == "blob":
        return {"type": "string", "contentEncoding": "base64"}
    raise ValueError(f"no JSON Schema for botocore shape type {kind!r} ({shape.name})")


def _bounds(out: Schema, meta: Mapping[str, Any], low: str, high: str) -> None:
    if "min" in meta:
        out[low] = meta["min"]
    if "max" in meta:
        out[high] = meta["max"]


__all__ = ["ANY", "TYPE_URL_PREFIX", "ProtoSchemas", "Schema", "ref", "shape_schema"]

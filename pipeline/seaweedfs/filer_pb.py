"""The subset of SeaweedFS's ``filer.proto`` (package ``filer_pb``) that the bridge reads.

Built at run time from descriptors (no generated code, no protoc): field names and numbers are those of
upstream ``weed/pb/filer.proto``; fields we do not list are skipped by the protobuf decoder, so newer
servers stay compatible. Only ``SubscribeMetadata`` is called.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SUBSCRIBE_METADATA = "/filer_pb.SeaweedFiler/SubscribeMetadata"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "bool": _F.TYPE_BOOL,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
}

# message -> [(field, number, type, repeated)]; a type starting with "." names a message
_MESSAGES: dict[str, list[tuple[str, int, str, bool]]] = {
    "FileChunk": [
        ("file_id", 1, "string", False),
        ("offset", 2, "int64", False),
        ("size", 3, "uint64", False),
        ("e_tag", 5, "string", False),
        ("is_chunk_manifest", 11, "bool", False),
    ],
    "FuseAttributes": [
        ("file_size", 1, "uint64", False),
        ("mtime", 2, "int64", False),
        ("mime", 7, "string", False),
        ("md5", 14, "bytes", False),
    ],
    "Entry": [
        ("name", 1, "string", False),
        ("is_directory", 2, "bool", False),
        ("chunks", 3, ".filer_pb.FileChunk", True),
        ("attributes", 4, ".filer_pb.FuseAttributes", False),
        ("extended", 5, ".filer_pb.Entry.ExtendedEntry", True),
    ],
    "EventNotification": [
        ("old_entry", 1, ".filer_pb.Entry", False),
        ("new_entry", 2, ".filer_pb.Entry", False),
        ("delete_chunks", 3, "bool", False),
        ("new_parent_path", 4, "string", False),
        ("is_from_other_cluster", 5, "bool", False),
        ("signatures", 6, "int32", True),
    ],
    "SubscribeMetadataRequest": [
        ("client_name", 1, "string", False),
        ("path_prefix", 2, "string", False),
        ("since_ns", 3, "int64", False),
        ("signature", 4, "int32", False),
        ("path_prefixes", 6, "string", True),
        ("client_id", 7, "int32", False),
        ("until_ns", 8, "int64", False),
        ("client_epoch", 9, "int32", False),
        ("client_supports_batching", 11, "bool", False),
        ("client_supports_idle_heartbeat", 13, "bool", False),
    ],
    "SubscribeMetadataResponse": [
        ("directory", 1, "string", False),
        ("event_notification", 2, ".filer_pb.EventNotification", False),
        ("ts_ns", 3, "int64", False),
        ("events", 4, ".filer_pb.SubscribeMetadataResponse", True),
    ],
}


def _add_fields(message: descriptor_pb2.DescriptorProto, fields: list[tuple[str, int, str, bool]]) -> None:
    for name, number, kind, repeated in fields:
        field = message.field.add(name=name, number=number, json_name=name)
        field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
        if kind.startswith("."):
            field.type, field.type_name = _F.TYPE_MESSAGE, kind
        else:
            field.type = _SCALARS[kind]


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="mouthpiece/seaweedfs_filer.proto", package="filer_pb", syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        _add_fields(message, fields)
        if name == "Entry":  # map<string, bytes> extended = 5
            entry = message.nested_type.add(name="ExtendedEntry")
            _add_fields(entry, [("key", 1, "string", False), ("value", 2, "bytes", False)])
            entry.options.map_entry = True
    return proto


@cache
def messages() -> dict[str, Any]:
    """Message classes by name, built once in a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    described = pool.Add(_file())
    return {
        name: message_factory.GetMessageClass(described.message_types_by_name[name]) for name in _MESSAGES
    }


def request(**fields: Any) -> Any:
    """A ``SubscribeMetadataRequest``."""
    return messages()["SubscribeMetadataRequest"](**fields)


def decode_response(data: bytes) -> Any:
    """A ``SubscribeMetadataResponse`` from its wire bytes."""
    return messages()["SubscribeMetadataResponse"].FromString(data)

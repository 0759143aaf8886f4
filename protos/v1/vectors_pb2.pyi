from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Protocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROTOCOL_UNSPECIFIED: _ClassVar[Protocol]
    PROTOCOL_TCP: _ClassVar[Protocol]
    PROTOCOL_UDP: _ClassVar[Protocol]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_OUTBOUND: _ClassVar[Direction]
    DIRECTION_INBOUND: _ClassVar[Direction]
PROTOCOL_UNSPECIFIED: Protocol
PROTOCOL_TCP: Protocol
PROTOCOL_UDP: Protocol
DIRECTION_UNSPECIFIED: Direction
DIRECTION_OUTBOUND: Direction
DIRECTION_INBOUND: Direction

class Identity(_message.Message):
    __slots__ = ("node", "container_id", "container_name", "image_repository", "image_tag", "image_digest", "pod", "namespace")
    NODE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TAG_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    node: str
    container_id: str
    container_name: str
    image_repository: str
    image_tag: str
    image_digest: str
    pod: str
    namespace: str
    def __init__(self, node: _Optional[str] = ..., container_id: _Optional[str] = ..., container_name: _Optional[str] = ..., image_repository: _Optional[str] = ..., image_tag: _Optional[str] = ..., image_digest: _Optional[str] = ..., pod: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("address", "port", "protocol", "direction")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    address: str
    port: int
    protocol: Protocol
    direction: Direction
    def __init__(self, address: _Optional[str] = ..., port: _Optional[int] = ..., protocol: _Optional[_Union[Protocol, str]] = ..., direction: _Optional[_Union[Direction, str]] = ...) -> None: ...

class IdentityTable(_message.Message):
    __slots__ = ("identities",)
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    def __init__(self, identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ...) -> None: ...

class VectorColumns(_message.Message):
    __slots__ = ("count", "identity_table", "window_f64_le", "window_u32_le", "complete", "container_exited", "syscall_name_index_le16", "syscall_count_f64_le", "ngram_entry_le32", "executables", "endpoints", "endpoint_index", "sensitive_paths")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_TABLE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_F64_LE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_U32_LE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_EXITED_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAME_INDEX_LE16_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_COUNT_F64_LE_FIELD_NUMBER: _ClassVar[int]
    NGRAM_ENTRY_LE32_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_PATHS_FIELD_NUMBER: _ClassVar[int]
    count: int
    identity_table: bytes
    window_f64_le: bytes
    window_u32_le: bytes
    complete: _containers.RepeatedScalarFieldContainer[bool]
    container_exited: _containers.RepeatedScalarFieldContainer[bool]
    syscall_name_index_le16: bytes
    syscall_count_f64_le: bytes
    ngram_entry_le32: bytes
    executables: _containers.RepeatedScalarFieldContainer[str]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    endpoint_index: _containers.RepeatedScalarFieldContainer[int]
    sensitive_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, count: _Optional[int] = ..., identity_table: _Optional[bytes] = ..., window_f64_le: _Optional[bytes] = ..., window_u32_le: _Optional[bytes] = ..., complete: _Optional[_Iterable[bool]] = ..., container_exited: _Optional[_Iterable[bool]] = ..., syscall_name_index_le16: _Optional[bytes] = ..., syscall_count_f64_le: _Optional[bytes] = ..., ngram_entry_le32: _Optional[bytes] = ..., executables: _Optional[_Iterable[str]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., endpoint_index: _Optional[_Iterable[int]] = ..., sensitive_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class VectorBatch(_message.Message):
    __slots__ = ("sequence", "schema_version", "syscall_names", "columns")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAMES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    schema_version: int
    syscall_names: _containers.RepeatedScalarFieldContainer[str]
    columns: VectorColumns
    def __init__(self, sequence: _Optional[int] = ..., schema_version: _Optional[int] = ..., syscall_names: _Optional[_Iterable[str]] = ..., columns: _Optional[_Union[VectorColumns, _Mapping]] = ...) -> None: ...

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

class ProcessCounts(_message.Message):
    __slots__ = ("execs", "forks", "exits", "executables")
    EXECS_FIELD_NUMBER: _ClassVar[int]
    FORKS_FIELD_NUMBER: _ClassVar[int]
    EXITS_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    execs: float
    forks: float
    exits: float
    executables: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, execs: _Optional[float] = ..., forks: _Optional[float] = ..., exits: _Optional[float] = ..., executables: _Optional[_Iterable[str]] = ...) -> None: ...

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

class NetworkCounts(_message.Message):
    __slots__ = ("connects", "connects_failed", "accepts", "listens", "bytes_sent", "bytes_received", "packets_sent", "packets_received", "remote_addresses", "remote_ports", "dns_queries", "endpoints")
    CONNECTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_FIELD_NUMBER: _ClassVar[int]
    LISTENS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PACKETS_SENT_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORTS_FIELD_NUMBER: _ClassVar[int]
    DNS_QUERIES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    connects: float
    connects_failed: float
    accepts: float
    listens: float
    bytes_sent: float
    bytes_received: float
    packets_sent: float
    packets_received: float
    remote_addresses: float
    remote_ports: float
    dns_queries: float
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, connects: _Optional[float] = ..., connects_failed: _Optional[float] = ..., accepts: _Optional[float] = ..., listens: _Optional[float] = ..., bytes_sent: _Optional[float] = ..., bytes_received: _Optional[float] = ..., packets_sent: _Optional[float] = ..., packets_received: _Optional[float] = ..., remote_addresses: _Optional[float] = ..., remote_ports: _Optional[float] = ..., dns_queries: _Optional[float] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class FileCounts(_message.Message):
    __slots__ = ("write_opens", "sensitive_writes", "sensitive_paths")
    WRITE_OPENS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_WRITES_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_PATHS_FIELD_NUMBER: _ClassVar[int]
    write_opens: float
    sensitive_writes: float
    sensitive_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, write_opens: _Optional[float] = ..., sensitive_writes: _Optional[float] = ..., sensitive_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class SensorHealth(_message.Message):
    __slots__ = ("events_lost", "complete", "container_exited", "container_age_seconds")
    EVENTS_LOST_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_EXITED_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    events_lost: float
    complete: bool
    container_exited: bool
    container_age_seconds: float
    def __init__(self, events_lost: _Optional[float] = ..., complete: _Optional[bool] = ..., container_exited: _Optional[bool] = ..., container_age_seconds: _Optional[float] = ...) -> None: ...

class FeatureVector(_message.Message):
    __slots__ = ("identity", "window_start", "window_seconds", "syscall_name_index", "syscall_count", "process", "network", "file", "health", "ngram_spec", "ngram_bucket", "ngram_count")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    NGRAM_SPEC_FIELD_NUMBER: _ClassVar[int]
    NGRAM_BUCKET_FIELD_NUMBER: _ClassVar[int]
    NGRAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    window_start: float
    window_seconds: float
    syscall_name_index: _containers.RepeatedScalarFieldContainer[int]
    syscall_count: _containers.RepeatedScalarFieldContainer[float]
    process: ProcessCounts
    network: NetworkCounts
    file: FileCounts
    health: SensorHealth
    ngram_spec: int
    ngram_bucket: _containers.RepeatedScalarFieldContainer[int]
    ngram_count: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., window_start: _Optional[float] = ..., window_seconds: _Optional[float] = ..., syscall_name_index: _Optional[_Iterable[int]] = ..., syscall_count: _Optional[_Iterable[float]] = ..., process: _Optional[_Union[ProcessCounts, _Mapping]] = ..., network: _Optional[_Union[NetworkCounts, _Mapping]] = ..., file: _Optional[_Union[FileCounts, _Mapping]] = ..., health: _Optional[_Union[SensorHealth, _Mapping]] = ..., ngram_spec: _Optional[int] = ..., ngram_bucket: _Optional[_Iterable[int]] = ..., ngram_count: _Optional[_Iterable[int]] = ...) -> None: ...

class IdentityTable(_message.Message):
    __slots__ = ("identities",)
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    def __init__(self, identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ...) -> None: ...

class VectorColumns(_message.Message):
    __slots__ = ("count", "identities", "identity_table", "identity", "window_start", "window_seconds", "execs", "forks", "exits", "connects", "connects_failed", "accepts", "listens", "bytes_sent", "bytes_received", "packets_sent", "packets_received", "remote_addresses", "remote_ports", "dns_queries", "write_opens", "sensitive_writes", "events_lost", "complete", "container_exited", "container_age_seconds", "syscall_lengths", "syscall_name_index", "syscall_count", "ngram_spec", "ngram_lengths", "ngram_bucket", "ngram_count", "ngram_bucket_le32", "ngram_count_le32", "ngram_entry_le32", "executable_lengths", "executables", "endpoints", "endpoint_lengths", "endpoint_index", "sensitive_path_lengths", "sensitive_paths", "window_f64_le", "window_u32_le", "syscall_name_index_le16", "syscall_count_f64_le")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_TABLE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXECS_FIELD_NUMBER: _ClassVar[int]
    FORKS_FIELD_NUMBER: _ClassVar[int]
    EXITS_FIELD_NUMBER: _ClassVar[int]
    CONNECTS_FIELD_NUMBER: _ClassVar[int]
    CONNECTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_FIELD_NUMBER: _ClassVar[int]
    LISTENS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PACKETS_SENT_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    REMOTE_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORTS_FIELD_NUMBER: _ClassVar[int]
    DNS_QUERIES_FIELD_NUMBER: _ClassVar[int]
    WRITE_OPENS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_WRITES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_LOST_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_EXITED_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAME_INDEX_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_COUNT_FIELD_NUMBER: _ClassVar[int]
    NGRAM_SPEC_FIELD_NUMBER: _ClassVar[int]
    NGRAM_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    NGRAM_BUCKET_FIELD_NUMBER: _ClassVar[int]
    NGRAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    NGRAM_BUCKET_LE32_FIELD_NUMBER: _ClassVar[int]
    NGRAM_COUNT_LE32_FIELD_NUMBER: _ClassVar[int]
    NGRAM_ENTRY_LE32_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLE_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_PATH_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_PATHS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_F64_LE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_U32_LE_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAME_INDEX_LE16_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_COUNT_F64_LE_FIELD_NUMBER: _ClassVar[int]
    count: int
    identities: _containers.RepeatedCompositeFieldContainer[Identity]
    identity_table: bytes
    identity: _containers.RepeatedScalarFieldContainer[int]
    window_start: _containers.RepeatedScalarFieldContainer[float]
    window_seconds: _containers.RepeatedScalarFieldContainer[float]
    execs: _containers.RepeatedScalarFieldContainer[float]
    forks: _containers.RepeatedScalarFieldContainer[float]
    exits: _containers.RepeatedScalarFieldContainer[float]
    connects: _containers.RepeatedScalarFieldContainer[float]
    connects_failed: _containers.RepeatedScalarFieldContainer[float]
    accepts: _containers.RepeatedScalarFieldContainer[float]
    listens: _containers.RepeatedScalarFieldContainer[float]
    bytes_sent: _containers.RepeatedScalarFieldContainer[float]
    bytes_received: _containers.RepeatedScalarFieldContainer[float]
    packets_sent: _containers.RepeatedScalarFieldContainer[float]
    packets_received: _containers.RepeatedScalarFieldContainer[float]
    remote_addresses: _containers.RepeatedScalarFieldContainer[float]
    remote_ports: _containers.RepeatedScalarFieldContainer[float]
    dns_queries: _containers.RepeatedScalarFieldContainer[float]
    write_opens: _containers.RepeatedScalarFieldContainer[float]
    sensitive_writes: _containers.RepeatedScalarFieldContainer[float]
    events_lost: _containers.RepeatedScalarFieldContainer[float]
    complete: _containers.RepeatedScalarFieldContainer[bool]
    container_exited: _containers.RepeatedScalarFieldContainer[bool]
    container_age_seconds: _containers.RepeatedScalarFieldContainer[float]
    syscall_lengths: _containers.RepeatedScalarFieldContainer[int]
    syscall_name_index: _containers.RepeatedScalarFieldContainer[int]
    syscall_count: _containers.RepeatedScalarFieldContainer[float]
    ngram_spec: int
    ngram_lengths: _containers.RepeatedScalarFieldContainer[int]
    ngram_bucket: _containers.RepeatedScalarFieldContainer[int]
    ngram_count: _containers.RepeatedScalarFieldContainer[int]
    ngram_bucket_le32: bytes
    ngram_count_le32: bytes
    ngram_entry_le32: bytes
    executable_lengths: _containers.RepeatedScalarFieldContainer[int]
    executables: _containers.RepeatedScalarFieldContainer[str]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    endpoint_lengths: _containers.RepeatedScalarFieldContainer[int]
    endpoint_index: _containers.RepeatedScalarFieldContainer[int]
    sensitive_path_lengths: _containers.RepeatedScalarFieldContainer[int]
    sensitive_paths: _containers.RepeatedScalarFieldContainer[str]
    window_f64_le: bytes
    window_u32_le: bytes
    syscall_name_index_le16: bytes
    syscall_count_f64_le: bytes
    def __init__(self, count: _Optional[int] = ..., identities: _Optional[_Iterable[_Union[Identity, _Mapping]]] = ..., identity_table: _Optional[bytes] = ..., identity: _Optional[_Iterable[int]] = ..., window_start: _Optional[_Iterable[float]] = ..., window_seconds: _Optional[_Iterable[float]] = ..., execs: _Optional[_Iterable[float]] = ..., forks: _Optional[_Iterable[float]] = ..., exits: _Optional[_Iterable[float]] = ..., connects: _Optional[_Iterable[float]] = ..., connects_failed: _Optional[_Iterable[float]] = ..., accepts: _Optional[_Iterable[float]] = ..., listens: _Optional[_Iterable[float]] = ..., bytes_sent: _Optional[_Iterable[float]] = ..., bytes_received: _Optional[_Iterable[float]] = ..., packets_sent: _Optional[_Iterable[float]] = ..., packets_received: _Optional[_Iterable[float]] = ..., remote_addresses: _Optional[_Iterable[float]] = ..., remote_ports: _Optional[_Iterable[float]] = ..., dns_queries: _Optional[_Iterable[float]] = ..., write_opens: _Optional[_Iterable[float]] = ..., sensitive_writes: _Optional[_Iterable[float]] = ..., events_lost: _Optional[_Iterable[float]] = ..., complete: _Optional[_Iterable[bool]] = ..., container_exited: _Optional[_Iterable[bool]] = ..., container_age_seconds: _Optional[_Iterable[float]] = ..., syscall_lengths: _Optional[_Iterable[int]] = ..., syscall_name_index: _Optional[_Iterable[int]] = ..., syscall_count: _Optional[_Iterable[float]] = ..., ngram_spec: _Optional[int] = ..., ngram_lengths: _Optional[_Iterable[int]] = ..., ngram_bucket: _Optional[_Iterable[int]] = ..., ngram_count: _Optional[_Iterable[int]] = ..., ngram_bucket_le32: _Optional[bytes] = ..., ngram_count_le32: _Optional[bytes] = ..., ngram_entry_le32: _Optional[bytes] = ..., executable_lengths: _Optional[_Iterable[int]] = ..., executables: _Optional[_Iterable[str]] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., endpoint_lengths: _Optional[_Iterable[int]] = ..., endpoint_index: _Optional[_Iterable[int]] = ..., sensitive_path_lengths: _Optional[_Iterable[int]] = ..., sensitive_paths: _Optional[_Iterable[str]] = ..., window_f64_le: _Optional[bytes] = ..., window_u32_le: _Optional[bytes] = ..., syscall_name_index_le16: _Optional[bytes] = ..., syscall_count_f64_le: _Optional[bytes] = ...) -> None: ...

class VectorBatch(_message.Message):
    __slots__ = ("sequence", "schema_version", "syscall_names", "vectors", "columns")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYSCALL_NAMES_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    schema_version: int
    syscall_names: _containers.RepeatedScalarFieldContainer[str]
    vectors: _containers.RepeatedCompositeFieldContainer[FeatureVector]
    columns: VectorColumns
    def __init__(self, sequence: _Optional[int] = ..., schema_version: _Optional[int] = ..., syscall_names: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Iterable[_Union[FeatureVector, _Mapping]]] = ..., columns: _Optional[_Union[VectorColumns, _Mapping]] = ...) -> None: ...

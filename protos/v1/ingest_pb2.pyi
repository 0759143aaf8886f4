from baseliner.protos.v1 import vectors_pb2 as _vectors_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RejectReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECT_REASON_UNSPECIFIED: _ClassVar[RejectReason]
    REJECT_REASON_MISSING_FIELD: _ClassVar[RejectReason]
    REJECT_REASON_NOT_FINITE: _ClassVar[RejectReason]
    REJECT_REASON_NEGATIVE: _ClassVar[RejectReason]
    REJECT_REASON_BAD_WINDOW: _ClassVar[RejectReason]
    REJECT_REASON_BAD_IDENTITY: _ClassVar[RejectReason]
    REJECT_REASON_TOO_LARGE: _ClassVar[RejectReason]
    REJECT_REASON_UNSUPPORTED_VERSION: _ClassVar[RejectReason]
    REJECT_REASON_BAD_REFERENCE: _ClassVar[RejectReason]
    REJECT_REASON_OUT_OF_ORDER: _ClassVar[RejectReason]
    REJECT_REASON_UNAUTHORIZED: _ClassVar[RejectReason]
    REJECT_REASON_IMPLAUSIBLE: _ClassVar[RejectReason]
REJECT_REASON_UNSPECIFIED: RejectReason
REJECT_REASON_MISSING_FIELD: RejectReason
REJECT_REASON_NOT_FINITE: RejectReason
REJECT_REASON_NEGATIVE: RejectReason
REJECT_REASON_BAD_WINDOW: RejectReason
REJECT_REASON_BAD_IDENTITY: RejectReason
REJECT_REASON_TOO_LARGE: RejectReason
REJECT_REASON_UNSUPPORTED_VERSION: RejectReason
REJECT_REASON_BAD_REFERENCE: RejectReason
REJECT_REASON_OUT_OF_ORDER: RejectReason
REJECT_REASON_UNAUTHORIZED: RejectReason
REJECT_REASON_IMPLAUSIBLE: RejectReason

class Hello(_message.Message):
    __slots__ = ("sensor_id", "node", "sensor_version", "schema_version")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    SENSOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    node: str
    sensor_version: str
    schema_version: int
    def __init__(self, sensor_id: _Optional[str] = ..., node: _Optional[str] = ..., sensor_version: _Optional[str] = ..., schema_version: _Optional[int] = ...) -> None: ...

class IngestRequest(_message.Message):
    __slots__ = ("hello", "batch")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: _vectors_pb2.VectorBatch
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[_vectors_pb2.VectorBatch, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("last_sequence", "service_version", "max_batch_vectors", "durable_acks")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    DURABLE_ACKS_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    service_version: str
    max_batch_vectors: int
    durable_acks: bool
    def __init__(self, last_sequence: _Optional[int] = ..., service_version: _Optional[str] = ..., max_batch_vectors: _Optional[int] = ..., durable_acks: _Optional[bool] = ...) -> None: ...

class Rejection(_message.Message):
    __slots__ = ("index", "reason", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: RejectReason
    message: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[_Union[RejectReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("sequence", "applied", "rejected", "duplicate", "durable", "batch_rejected", "batch_message")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    BATCH_REJECTED_FIELD_NUMBER: _ClassVar[int]
    BATCH_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    applied: int
    rejected: _containers.RepeatedCompositeFieldContainer[Rejection]
    duplicate: bool
    durable: bool
    batch_rejected: RejectReason
    batch_message: str
    def __init__(self, sequence: _Optional[int] = ..., applied: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[Rejection, _Mapping]]] = ..., duplicate: _Optional[bool] = ..., durable: _Optional[bool] = ..., batch_rejected: _Optional[_Union[RejectReason, str]] = ..., batch_message: _Optional[str] = ...) -> None: ...

class IngestResponse(_message.Message):
    __slots__ = ("welcome", "ack")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: BatchAck
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[BatchAck, _Mapping]] = ...) -> None: ...

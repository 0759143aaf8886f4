from baseliner.protos.v1 import ingest_pb2 as _ingest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardEntry(_message.Message):
    __slots__ = ("name", "address")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class ShardMap(_message.Message):
    __slots__ = ("epoch", "shards")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    shards: _containers.RepeatedCompositeFieldContainer[ShardEntry]
    def __init__(self, epoch: _Optional[int] = ..., shards: _Optional[_Iterable[_Union[ShardEntry, _Mapping]]] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("map", "before")
    MAP_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    map: ShardMap
    before: ShardMap
    def __init__(self, map: _Optional[_Union[ShardMap, _Mapping]] = ..., before: _Optional[_Union[ShardMap, _Mapping]] = ...) -> None: ...

class GetMapRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardStatus(_message.Message):
    __slots__ = ("shard", "epoch", "member", "settled", "images", "to_pull")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TO_PULL_FIELD_NUMBER: _ClassVar[int]
    shard: str
    epoch: int
    member: bool
    settled: bool
    images: int
    to_pull: int
    def __init__(self, shard: _Optional[str] = ..., epoch: _Optional[int] = ..., member: _Optional[bool] = ..., settled: _Optional[bool] = ..., images: _Optional[int] = ..., to_pull: _Optional[int] = ...) -> None: ...

class ForwardPart(_message.Message):
    __slots__ = ("stream", "sequence", "batch", "node")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    stream: str
    sequence: int
    batch: bytes
    node: str
    def __init__(self, stream: _Optional[str] = ..., sequence: _Optional[int] = ..., batch: _Optional[bytes] = ..., node: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("from_shard", "epoch", "parts")
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    from_shard: str
    epoch: int
    parts: _containers.RepeatedCompositeFieldContainer[ForwardPart]
    def __init__(self, from_shard: _Optional[str] = ..., epoch: _Optional[int] = ..., parts: _Optional[_Iterable[_Union[ForwardPart, _Mapping]]] = ...) -> None: ...

class ForwardResult(_message.Message):
    __slots__ = ("applied", "rejected", "duplicate", "not_held", "holder")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    NOT_HELD_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    applied: int
    rejected: _containers.RepeatedCompositeFieldContainer[_ingest_pb2.Rejection]
    duplicate: bool
    not_held: bool
    holder: str
    def __init__(self, applied: _Optional[int] = ..., rejected: _Optional[_Iterable[_Union[_ingest_pb2.Rejection, _Mapping]]] = ..., duplicate: _Optional[bool] = ..., not_held: _Optional[bool] = ..., holder: _Optional[str] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("results", "epoch")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ForwardResult]
    epoch: int
    def __init__(self, results: _Optional[_Iterable[_Union[ForwardResult, _Mapping]]] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListHeldRequest(_message.Message):
    __slots__ = ("map", "shard")
    MAP_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    map: ShardMap
    shard: str
    def __init__(self, map: _Optional[_Union[ShardMap, _Mapping]] = ..., shard: _Optional[str] = ...) -> None: ...

class ListHeldResponse(_message.Message):
    __slots__ = ("epoch", "keys")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, epoch: _Optional[int] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("shard", "epoch", "key")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    shard: str
    epoch: int
    key: str
    def __init__(self, shard: _Optional[str] = ..., epoch: _Optional[int] = ..., key: _Optional[str] = ...) -> None: ...

class HandoverPart(_message.Message):
    __slots__ = ("key", "state", "token", "last", "not_held")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    NOT_HELD_FIELD_NUMBER: _ClassVar[int]
    key: str
    state: bytes
    token: str
    last: bool
    not_held: bool
    def __init__(self, key: _Optional[str] = ..., state: _Optional[bytes] = ..., token: _Optional[str] = ..., last: _Optional[bool] = ..., not_held: _Optional[bool] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("shard", "key", "token")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    shard: str
    key: str
    token: str
    def __init__(self, shard: _Optional[str] = ..., key: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("committed", "message")
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    committed: bool
    message: str
    def __init__(self, committed: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class FalcoAlertRequest(_message.Message):
    __slots__ = ("body", "from_shard")
    BODY_FIELD_NUMBER: _ClassVar[int]
    FROM_SHARD_FIELD_NUMBER: _ClassVar[int]
    body: bytes
    from_shard: str
    def __init__(self, body: _Optional[bytes] = ..., from_shard: _Optional[str] = ...) -> None: ...

class FalcoAlertResponse(_message.Message):
    __slots__ = ("status", "body")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    status: int
    body: bytes
    def __init__(self, status: _Optional[int] = ..., body: _Optional[bytes] = ...) -> None: ...

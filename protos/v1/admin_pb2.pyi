from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_AUTO: _ClassVar[Mode]
    MODE_LEARN: _ClassVar[Mode]
    MODE_DETECT: _ClassVar[Mode]
    MODE_FREEZE: _ClassVar[Mode]

class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_UNSPECIFIED: _ClassVar[State]
    STATE_LEARNING: _ClassVar[State]
    STATE_DETECTING: _ClassVar[State]
    STATE_FROZEN: _ClassVar[State]
MODE_UNSPECIFIED: Mode
MODE_AUTO: Mode
MODE_LEARN: Mode
MODE_DETECT: Mode
MODE_FREEZE: Mode
STATE_UNSPECIFIED: State
STATE_LEARNING: State
STATE_DETECTING: State
STATE_FROZEN: State

class FeatureStat(_message.Message):
    __slots__ = ("name", "mean", "std", "unit", "typical")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    TYPICAL_FIELD_NUMBER: _ClassVar[int]
    name: str
    mean: float
    std: float
    unit: str
    typical: float
    def __init__(self, name: _Optional[str] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., unit: _Optional[str] = ..., typical: _Optional[float] = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("key", "mode", "state", "windows_learned", "windows_scored", "anomalies", "first_window", "last_window", "threshold", "learned_seconds", "features", "executables", "syscalls", "remote_ports", "sensitive_paths", "serialized_bytes", "detector", "shard", "lineage", "learning_reason", "learning_detail")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_LEARNED_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_SCORED_FIELD_NUMBER: _ClassVar[int]
    ANOMALIES_FIELD_NUMBER: _ClassVar[int]
    FIRST_WINDOW_FIELD_NUMBER: _ClassVar[int]
    LAST_WINDOW_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LEARNED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    EXECUTABLES_FIELD_NUMBER: _ClassVar[int]
    SYSCALLS_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PORTS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVE_PATHS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_REASON_FIELD_NUMBER: _ClassVar[int]
    LEARNING_DETAIL_FIELD_NUMBER: _ClassVar[int]
    key: str
    mode: Mode
    state: State
    windows_learned: int
    windows_scored: int
    anomalies: int
    first_window: float
    last_window: float
    threshold: float
    learned_seconds: float
    features: _containers.RepeatedCompositeFieldContainer[FeatureStat]
    executables: _containers.RepeatedScalarFieldContainer[str]
    syscalls: _containers.RepeatedScalarFieldContainer[str]
    remote_ports: _containers.RepeatedScalarFieldContainer[str]
    sensitive_paths: _containers.RepeatedScalarFieldContainer[str]
    serialized_bytes: int
    detector: str
    shard: str
    lineage: Lineage
    learning_reason: str
    learning_detail: str
    def __init__(self, key: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., state: _Optional[_Union[State, str]] = ..., windows_learned: _Optional[int] = ..., windows_scored: _Optional[int] = ..., anomalies: _Optional[int] = ..., first_window: _Optional[float] = ..., last_window: _Optional[float] = ..., threshold: _Optional[float] = ..., learned_seconds: _Optional[float] = ..., features: _Optional[_Iterable[_Union[FeatureStat, _Mapping]]] = ..., executables: _Optional[_Iterable[str]] = ..., syscalls: _Optional[_Iterable[str]] = ..., remote_ports: _Optional[_Iterable[str]] = ..., sensitive_paths: _Optional[_Iterable[str]] = ..., serialized_bytes: _Optional[int] = ..., detector: _Optional[str] = ..., shard: _Optional[str] = ..., lineage: _Optional[_Union[Lineage, _Mapping]] = ..., learning_reason: _Optional[str] = ..., learning_detail: _Optional[str] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("parent", "status", "reason", "groups", "added", "vanished")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    VANISHED_FIELD_NUMBER: _ClassVar[int]
    parent: str
    status: str
    reason: str
    groups: _containers.RepeatedScalarFieldContainer[str]
    added: _containers.RepeatedScalarFieldContainer[str]
    vanished: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, parent: _Optional[str] = ..., status: _Optional[str] = ..., reason: _Optional[str] = ..., groups: _Optional[_Iterable[str]] = ..., added: _Optional[_Iterable[str]] = ..., vanished: _Optional[_Iterable[str]] = ...) -> None: ...

class ListBaselinesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBaselinesResponse(_message.Message):
    __slots__ = ("baselines", "unavailable_shards")
    BASELINES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_SHARDS_FIELD_NUMBER: _ClassVar[int]
    baselines: _containers.RepeatedCompositeFieldContainer[Baseline]
    unavailable_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, baselines: _Optional[_Iterable[_Union[Baseline, _Mapping]]] = ..., unavailable_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class GetBaselineRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("key", "mode")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    key: str
    mode: Mode
    def __init__(self, key: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ...) -> None: ...

class ResetBaselineRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("event_id", "comment")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    comment: str
    def __init__(self, event_id: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("baseline", "accepted_items")
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    baseline: Baseline
    accepted_items: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, baseline: _Optional[_Union[Baseline, _Mapping]] = ..., accepted_items: _Optional[_Iterable[str]] = ...) -> None: ...

from nbferry.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RestoreCheckpointRequest(_message.Message):
    __slots__ = ("store_url", "checkpoint", "session_id", "store_options")
    STORE_URL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    store_url: str
    checkpoint: str
    session_id: str
    store_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, store_url: _Optional[str] = ..., checkpoint: _Optional[str] = ..., session_id: _Optional[str] = ..., store_options: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreCheckpointResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _agent_pb2.Progress
    result: RestoredKernel
    def __init__(self, progress: _Optional[_Union[_agent_pb2.Progress, _Mapping]] = ..., result: _Optional[_Union[RestoredKernel, _Mapping]] = ...) -> None: ...

class RestoredKernel(_message.Message):
    __slots__ = ("kernel_id", "connection_file", "connection_info_json", "host", "report", "seconds")
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FILE_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_INFO_JSON_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    kernel_id: str
    connection_file: str
    connection_info_json: str
    host: str
    report: _agent_pb2.RestoreResult
    seconds: float
    def __init__(self, kernel_id: _Optional[str] = ..., connection_file: _Optional[str] = ..., connection_info_json: _Optional[str] = ..., host: _Optional[str] = ..., report: _Optional[_Union[_agent_pb2.RestoreResult, _Mapping]] = ..., seconds: _Optional[float] = ...) -> None: ...

class AgentAddress(_message.Message):
    __slots__ = ("address", "token")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    address: str
    token: str
    def __init__(self, address: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class MigrateRequest(_message.Message):
    __slots__ = ("source", "target_migrator", "target_token", "checkpoint")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_MIGRATOR_FIELD_NUMBER: _ClassVar[int]
    TARGET_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    source: AgentAddress
    target_migrator: str
    target_token: str
    checkpoint: _agent_pb2.CheckpointRequest
    def __init__(self, source: _Optional[_Union[AgentAddress, _Mapping]] = ..., target_migrator: _Optional[str] = ..., target_token: _Optional[str] = ..., checkpoint: _Optional[_Union[_agent_pb2.CheckpointRequest, _Mapping]] = ...) -> None: ...

class MigrateResponse(_message.Message):
    __slots__ = ("progress", "checkpointed", "restored")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTED_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    progress: _agent_pb2.Progress
    checkpointed: _agent_pb2.CheckpointResult
    restored: RestoredKernel
    def __init__(self, progress: _Optional[_Union[_agent_pb2.Progress, _Mapping]] = ..., checkpointed: _Optional[_Union[_agent_pb2.CheckpointResult, _Mapping]] = ..., restored: _Optional[_Union[RestoredKernel, _Mapping]] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ("store_url", "session_id", "store_options")
    STORE_URL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    store_url: str
    session_id: str
    store_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, store_url: _Optional[str] = ..., session_id: _Optional[str] = ..., store_options: _Optional[_Iterable[str]] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[CheckpointInfo]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[CheckpointInfo, _Mapping]]] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("checkpoint_id", "session_id", "created")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    session_id: str
    created: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., session_id: _Optional[str] = ..., created: _Optional[str] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("session_id", "kernel_id", "variables", "history_length", "busy", "nbferry_version", "python_version", "cwd", "pid", "awaiting_restore")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    NBFERRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    AWAITING_RESTORE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    kernel_id: str
    variables: _containers.RepeatedCompositeFieldContainer[VariableInfo]
    history_length: int
    busy: bool
    nbferry_version: str
    python_version: str
    cwd: str
    pid: int
    awaiting_restore: bool
    def __init__(self, session_id: _Optional[str] = ..., kernel_id: _Optional[str] = ..., variables: _Optional[_Iterable[_Union[VariableInfo, _Mapping]]] = ..., history_length: _Optional[int] = ..., busy: _Optional[bool] = ..., nbferry_version: _Optional[str] = ..., python_version: _Optional[str] = ..., cwd: _Optional[str] = ..., pid: _Optional[int] = ..., awaiting_restore: _Optional[bool] = ...) -> None: ...

class VariableInfo(_message.Message):
    __slots__ = ("name", "type_name", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    type_name: str
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., type_name: _Optional[str] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class PlanOptions(_message.Message):
    __slots__ = ("store_url", "session_id", "restore_weight", "inputs_on_target", "store_all", "store_options")
    STORE_URL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESTORE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_ON_TARGET_FIELD_NUMBER: _ClassVar[int]
    STORE_ALL_FIELD_NUMBER: _ClassVar[int]
    STORE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    store_url: str
    session_id: str
    restore_weight: float
    inputs_on_target: bool
    store_all: bool
    store_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, store_url: _Optional[str] = ..., session_id: _Optional[str] = ..., restore_weight: _Optional[float] = ..., inputs_on_target: _Optional[bool] = ..., store_all: _Optional[bool] = ..., store_options: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("options", "wait_seconds")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    WAIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    options: PlanOptions
    wait_seconds: float
    def __init__(self, options: _Optional[_Union[PlanOptions, _Mapping]] = ..., wait_seconds: _Optional[float] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("report_json", "store", "recompute", "rerun_cells", "infeasible", "predicted_checkpoint_seconds", "predicted_restore_seconds")
    class InfeasibleEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTE_FIELD_NUMBER: _ClassVar[int]
    RERUN_CELLS_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CHECKPOINT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_RESTORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    store: _containers.RepeatedScalarFieldContainer[str]
    recompute: _containers.RepeatedScalarFieldContainer[str]
    rerun_cells: _containers.RepeatedScalarFieldContainer[int]
    infeasible: _containers.ScalarMap[str, str]
    predicted_checkpoint_seconds: float
    predicted_restore_seconds: float
    def __init__(self, report_json: _Optional[str] = ..., store: _Optional[_Iterable[str]] = ..., recompute: _Optional[_Iterable[str]] = ..., rerun_cells: _Optional[_Iterable[int]] = ..., infeasible: _Optional[_Mapping[str, str]] = ..., predicted_checkpoint_seconds: _Optional[float] = ..., predicted_restore_seconds: _Optional[float] = ...) -> None: ...

class CheckpointRequest(_message.Message):
    __slots__ = ("options", "message", "allow_loss", "interrupt", "operation_id")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_LOSS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    options: PlanOptions
    message: str
    allow_loss: bool
    interrupt: bool
    operation_id: str
    def __init__(self, options: _Optional[_Union[PlanOptions, _Mapping]] = ..., message: _Optional[str] = ..., allow_loss: _Optional[bool] = ..., interrupt: _Optional[bool] = ..., operation_id: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "done_bytes", "total_bytes")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done_bytes: int
    total_bytes: int
    def __init__(self, phase: _Optional[str] = ..., done_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ...) -> None: ...

class CheckpointResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: CheckpointResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[CheckpointResult, _Mapping]] = ...) -> None: ...

class CheckpointResult(_message.Message):
    __slots__ = ("checkpoint_id", "session_id", "store_url", "stored", "recomputed", "stored_bytes", "bytes_uploaded", "seconds", "report_json")
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_URL_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTED_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    session_id: str
    store_url: str
    stored: _containers.RepeatedScalarFieldContainer[str]
    recomputed: _containers.RepeatedScalarFieldContainer[str]
    stored_bytes: int
    bytes_uploaded: int
    seconds: float
    report_json: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., session_id: _Optional[str] = ..., store_url: _Optional[str] = ..., stored: _Optional[_Iterable[str]] = ..., recomputed: _Optional[_Iterable[str]] = ..., stored_bytes: _Optional[int] = ..., bytes_uploaded: _Optional[int] = ..., seconds: _Optional[float] = ..., report_json: _Optional[str] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("store_url", "checkpoint", "session_id", "interrupt", "operation_id", "store_options")
    STORE_URL_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    store_url: str
    checkpoint: str
    session_id: str
    interrupt: bool
    operation_id: str
    store_options: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, store_url: _Optional[str] = ..., checkpoint: _Optional[str] = ..., session_id: _Optional[str] = ..., interrupt: _Optional[bool] = ..., operation_id: _Optional[str] = ..., store_options: _Optional[_Iterable[str]] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    result: RestoreResult
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[RestoreResult, _Mapping]] = ...) -> None: ...

class RestoreResult(_message.Message):
    __slots__ = ("checkpoint_id", "session_id", "loaded", "recomputed", "differs", "lost", "failed", "seconds", "report_json")
    class LostEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class FailedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTED_FIELD_NUMBER: _ClassVar[int]
    DIFFERS_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    checkpoint_id: str
    session_id: str
    loaded: _containers.RepeatedScalarFieldContainer[str]
    recomputed: _containers.RepeatedScalarFieldContainer[str]
    differs: _containers.RepeatedScalarFieldContainer[str]
    lost: _containers.ScalarMap[str, str]
    failed: _containers.ScalarMap[str, str]
    seconds: float
    report_json: str
    def __init__(self, checkpoint_id: _Optional[str] = ..., session_id: _Optional[str] = ..., loaded: _Optional[_Iterable[str]] = ..., recomputed: _Optional[_Iterable[str]] = ..., differs: _Optional[_Iterable[str]] = ..., lost: _Optional[_Mapping[str, str]] = ..., failed: _Optional[_Mapping[str, str]] = ..., seconds: _Optional[float] = ..., report_json: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("operation_id",)
    OPERATION_ID_FIELD_NUMBER: _ClassVar[int]
    operation_id: str
    def __init__(self, operation_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

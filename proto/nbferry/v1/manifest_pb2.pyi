import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_RAW: _ClassVar[Codec]
    CODEC_ZSTD: _ClassVar[Codec]
CODEC_UNSPECIFIED: Codec
CODEC_RAW: Codec
CODEC_ZSTD: Codec

class ManifestFile(_message.Message):
    __slots__ = ("format_version", "body_codec", "body", "body_blake3", "signature")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    BODY_CODEC_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BODY_BLAKE3_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    body_codec: Codec
    body: bytes
    body_blake3: bytes
    signature: Signature
    def __init__(self, format_version: _Optional[int] = ..., body_codec: _Optional[_Union[Codec, str]] = ..., body: _Optional[bytes] = ..., body_blake3: _Optional[bytes] = ..., signature: _Optional[_Union[Signature, _Mapping]] = ...) -> None: ...

class Signature(_message.Message):
    __slots__ = ("algorithm", "key_id", "value")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    key_id: str
    value: bytes
    def __init__(self, algorithm: _Optional[str] = ..., key_id: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("format_version", "checkpoint_id", "session_id", "parent_checkpoint_id", "created", "producer", "variables", "pods", "skipped", "plan", "history", "environment", "message", "labels", "stats", "modules")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: VariableRef
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[VariableRef, _Mapping]] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    checkpoint_id: str
    session_id: str
    parent_checkpoint_id: str
    created: _timestamp_pb2.Timestamp
    producer: Producer
    variables: _containers.MessageMap[str, VariableRef]
    pods: _containers.RepeatedCompositeFieldContainer[Pod]
    skipped: _containers.RepeatedCompositeFieldContainer[SkippedVariable]
    plan: Plan
    history: History
    environment: Environment
    message: str
    labels: _containers.ScalarMap[str, str]
    stats: WriteStats
    modules: _containers.RepeatedCompositeFieldContainer[ModuleBinding]
    def __init__(self, format_version: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., session_id: _Optional[str] = ..., parent_checkpoint_id: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., producer: _Optional[_Union[Producer, _Mapping]] = ..., variables: _Optional[_Mapping[str, VariableRef]] = ..., pods: _Optional[_Iterable[_Union[Pod, _Mapping]]] = ..., skipped: _Optional[_Iterable[_Union[SkippedVariable, _Mapping]]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., history: _Optional[_Union[History, _Mapping]] = ..., environment: _Optional[_Union[Environment, _Mapping]] = ..., message: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., stats: _Optional[_Union[WriteStats, _Mapping]] = ..., modules: _Optional[_Iterable[_Union[ModuleBinding, _Mapping]]] = ...) -> None: ...

class ModuleBinding(_message.Message):
    __slots__ = ("name", "module", "distribution", "version", "submodules")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODULE_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMODULES_FIELD_NUMBER: _ClassVar[int]
    name: str
    module: str
    distribution: str
    version: str
    submodules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., module: _Optional[str] = ..., distribution: _Optional[str] = ..., version: _Optional[str] = ..., submodules: _Optional[_Iterable[str]] = ...) -> None: ...

class Producer(_message.Message):
    __slots__ = ("nbferry_version", "python_version", "platform", "hostname")
    NBFERRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    PLATFORM_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    nbferry_version: str
    python_version: str
    platform: str
    hostname: str
    def __init__(self, nbferry_version: _Optional[str] = ..., python_version: _Optional[str] = ..., platform: _Optional[str] = ..., hostname: _Optional[str] = ...) -> None: ...

class VariableRef(_message.Message):
    __slots__ = ("pod_id", "type_name", "fingerprint", "size", "unserializable", "encode_seconds", "fingerprint_seconds", "digest")
    POD_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    UNSERIALIZABLE_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    pod_id: str
    type_name: str
    fingerprint: bytes
    size: int
    unserializable: bool
    encode_seconds: float
    fingerprint_seconds: float
    digest: bytes
    def __init__(self, pod_id: _Optional[str] = ..., type_name: _Optional[str] = ..., fingerprint: _Optional[bytes] = ..., size: _Optional[int] = ..., unserializable: _Optional[bool] = ..., encode_seconds: _Optional[float] = ..., fingerprint_seconds: _Optional[float] = ..., digest: _Optional[bytes] = ...) -> None: ...

class SkippedVariable(_message.Message):
    __slots__ = ("name", "type_name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    type_name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., type_name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Pod(_message.Message):
    __slots__ = ("id", "variables", "serializer", "header", "buffers")
    ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    SERIALIZER_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    BUFFERS_FIELD_NUMBER: _ClassVar[int]
    id: str
    variables: _containers.RepeatedScalarFieldContainer[str]
    serializer: str
    header: Buffer
    buffers: _containers.RepeatedCompositeFieldContainer[Buffer]
    def __init__(self, id: _Optional[str] = ..., variables: _Optional[_Iterable[str]] = ..., serializer: _Optional[str] = ..., header: _Optional[_Union[Buffer, _Mapping]] = ..., buffers: _Optional[_Iterable[_Union[Buffer, _Mapping]]] = ...) -> None: ...

class Buffer(_message.Message):
    __slots__ = ("size", "chunks")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    size: int
    chunks: _containers.RepeatedCompositeFieldContainer[ChunkRef]
    def __init__(self, size: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[ChunkRef, _Mapping]]] = ...) -> None: ...

class ChunkRef(_message.Message):
    __slots__ = ("hash", "raw_size", "stored_size", "codec", "pack", "offset")
    HASH_FIELD_NUMBER: _ClassVar[int]
    RAW_SIZE_FIELD_NUMBER: _ClassVar[int]
    STORED_SIZE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PACK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    raw_size: int
    stored_size: int
    codec: Codec
    pack: bytes
    offset: int
    def __init__(self, hash: _Optional[bytes] = ..., raw_size: _Optional[int] = ..., stored_size: _Optional[int] = ..., codec: _Optional[_Union[Codec, str]] = ..., pack: _Optional[bytes] = ..., offset: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("stored", "recomputed", "rerun_cells", "predicted_checkpoint_seconds", "predicted_restore_seconds", "infeasible", "restore_weight", "inputs_on_target")
    STORED_FIELD_NUMBER: _ClassVar[int]
    RECOMPUTED_FIELD_NUMBER: _ClassVar[int]
    RERUN_CELLS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CHECKPOINT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_RESTORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFEASIBLE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUTS_ON_TARGET_FIELD_NUMBER: _ClassVar[int]
    stored: _containers.RepeatedScalarFieldContainer[str]
    recomputed: _containers.RepeatedScalarFieldContainer[str]
    rerun_cells: _containers.RepeatedScalarFieldContainer[int]
    predicted_checkpoint_seconds: float
    predicted_restore_seconds: float
    infeasible: _containers.RepeatedCompositeFieldContainer[SkippedVariable]
    restore_weight: float
    inputs_on_target: bool
    def __init__(self, stored: _Optional[_Iterable[str]] = ..., recomputed: _Optional[_Iterable[str]] = ..., rerun_cells: _Optional[_Iterable[int]] = ..., predicted_checkpoint_seconds: _Optional[float] = ..., predicted_restore_seconds: _Optional[float] = ..., infeasible: _Optional[_Iterable[_Union[SkippedVariable, _Mapping]]] = ..., restore_weight: _Optional[float] = ..., inputs_on_target: _Optional[bool] = ...) -> None: ...

class History(_message.Message):
    __slots__ = ("cells",)
    CELLS_FIELD_NUMBER: _ClassVar[int]
    cells: _containers.RepeatedCompositeFieldContainer[CellExecution]
    def __init__(self, cells: _Optional[_Iterable[_Union[CellExecution, _Mapping]]] = ...) -> None: ...

class CellExecution(_message.Message):
    __slots__ = ("index", "execution_count", "source", "runtime_seconds", "raised", "reads", "writes", "deletes", "mutated", "side_effects", "unsafe", "cwd")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RAISED_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    DELETES_FIELD_NUMBER: _ClassVar[int]
    MUTATED_FIELD_NUMBER: _ClassVar[int]
    SIDE_EFFECTS_FIELD_NUMBER: _ClassVar[int]
    UNSAFE_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    index: int
    execution_count: int
    source: str
    runtime_seconds: float
    raised: bool
    reads: _containers.RepeatedScalarFieldContainer[str]
    writes: _containers.RepeatedScalarFieldContainer[str]
    deletes: _containers.RepeatedScalarFieldContainer[str]
    mutated: _containers.RepeatedScalarFieldContainer[str]
    side_effects: _containers.RepeatedCompositeFieldContainer[SideEffect]
    unsafe: str
    cwd: str
    def __init__(self, index: _Optional[int] = ..., execution_count: _Optional[int] = ..., source: _Optional[str] = ..., runtime_seconds: _Optional[float] = ..., raised: _Optional[bool] = ..., reads: _Optional[_Iterable[str]] = ..., writes: _Optional[_Iterable[str]] = ..., deletes: _Optional[_Iterable[str]] = ..., mutated: _Optional[_Iterable[str]] = ..., side_effects: _Optional[_Iterable[_Union[SideEffect, _Mapping]]] = ..., unsafe: _Optional[str] = ..., cwd: _Optional[str] = ...) -> None: ...

class SideEffect(_message.Message):
    __slots__ = ("kind", "target", "size", "mtime", "blake3")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MTIME_FIELD_NUMBER: _ClassVar[int]
    BLAKE3_FIELD_NUMBER: _ClassVar[int]
    kind: str
    target: str
    size: int
    mtime: _timestamp_pb2.Timestamp
    blake3: bytes
    def __init__(self, kind: _Optional[str] = ..., target: _Optional[str] = ..., size: _Optional[int] = ..., mtime: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., blake3: _Optional[bytes] = ...) -> None: ...

class Environment(_message.Message):
    __slots__ = ("packages", "cwd", "sys_path", "env_vars", "python_executable")
    class PackagesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class EnvVarsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PACKAGES_FIELD_NUMBER: _ClassVar[int]
    CWD_FIELD_NUMBER: _ClassVar[int]
    SYS_PATH_FIELD_NUMBER: _ClassVar[int]
    ENV_VARS_FIELD_NUMBER: _ClassVar[int]
    PYTHON_EXECUTABLE_FIELD_NUMBER: _ClassVar[int]
    packages: _containers.ScalarMap[str, str]
    cwd: str
    sys_path: _containers.RepeatedScalarFieldContainer[str]
    env_vars: _containers.ScalarMap[str, str]
    python_executable: str
    def __init__(self, packages: _Optional[_Mapping[str, str]] = ..., cwd: _Optional[str] = ..., sys_path: _Optional[_Iterable[str]] = ..., env_vars: _Optional[_Mapping[str, str]] = ..., python_executable: _Optional[str] = ...) -> None: ...

class WriteStats(_message.Message):
    __slots__ = ("raw_bytes", "stored_bytes", "uploaded_bytes", "chunks", "chunks_uploaded", "blobs_written", "seconds", "reused_raw_bytes")
    RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_UPLOADED_FIELD_NUMBER: _ClassVar[int]
    BLOBS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REUSED_RAW_BYTES_FIELD_NUMBER: _ClassVar[int]
    raw_bytes: int
    stored_bytes: int
    uploaded_bytes: int
    chunks: int
    chunks_uploaded: int
    blobs_written: int
    seconds: float
    reused_raw_bytes: int
    def __init__(self, raw_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., uploaded_bytes: _Optional[int] = ..., chunks: _Optional[int] = ..., chunks_uploaded: _Optional[int] = ..., blobs_written: _Optional[int] = ..., seconds: _Optional[float] = ..., reused_raw_bytes: _Optional[int] = ...) -> None: ...

"""Generated protobuf bindings for nbferry's versioned schemas (see proto/*.proto)."""

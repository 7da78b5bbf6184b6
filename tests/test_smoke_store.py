import numpy as np

from conftest import from_pod, to_pod


def test_round_trip_every_store(store):
    arr = np.arange(1_000_000, dtype=np.int64)
    result = store.write_checkpoint("smoke", [to_pod("p0", {"arr": arr, "s": "x"})])
    manifest = store.read_manifest(result.checkpoint_id)
    value = from_pod(store.read_pods(manifest)["p0"])
    assert value["s"] == "x"
    np.testing.assert_array_equal(value["arr"], arr)

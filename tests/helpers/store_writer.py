"""A checkpoint writer that the crash and concurrency tests run as a subprocess.

    python store_writer.py URL [--options JSON] [--scale S] [--writer NAME] [--wait]
                           [--parent latest|none] --plan SEED:SESSION [SEED:SESSION ...]

Writes one checkpoint per planned SEED:SESSION, in order, with the pods of
store_data.make_pods(SEED, S) and the seed in its message and labels. Prints one
JSON object a line on stdout, flushed at once so the parent can time a SIGKILL:

    {"event": "ready"}                       store opened, nothing written yet
    {"event": "begin", "seed": ...}          pods built; write_checkpoint starts (hashing)
    {"event": "uploaded", "seed": ...}       every chunk encoded and handed to an upload:
                                             what is left is the last blob uploads, the
                                             pack upload and the manifest commit
    {"event": "committed", "seed": ..., "id": ..., "session": ..., "parent": ...}
    {"event": "done"}

With --wait it reads one line from stdin after "ready" before writing, so that
several writers can be started together. The signing key comes from the
environment ($NBFERRY_SIGNING_KEY, set by the tests' conftest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from store_data import labels_for, make_pods

from nbferry.storage import open_store


def emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--options", default="{}")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--writer", default="writer")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--parent", choices=["latest", "none"], default="latest")
    parser.add_argument("--plan", nargs="+", required=True)
    args = parser.parse_args()

    store = open_store(args.url, json.loads(args.options))
    _ = store.key  # load the signing key before "ready"
    emit(event="ready")
    if args.wait:
        sys.stdin.readline()
    for item in args.plan:
        seed_text, session = item.split(":", 1)
        seed = int(seed_text)
        pods = make_pods(seed, args.scale)
        emit(event="begin", seed=seed, session=session)
        sent = []

        def progress(done: int, total: int, seed: int = seed, sent: list = sent) -> None:
            if done >= total and not sent:
                sent.append(True)
                emit(event="uploaded", seed=seed)

        result = store.write_checkpoint(
            session,
            pods,
            message=f"seed={seed}",
            labels=labels_for(seed, args.scale, args.writer),
            parent="latest" if args.parent == "latest" else None,
            progress=progress,
        )
        emit(
            event="committed",
            seed=seed,
            session=session,
            id=result.checkpoint_id,
            parent=result.parent_checkpoint_id,
        )
    emit(event="done")


if __name__ == "__main__":
    main()

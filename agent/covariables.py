"""Group variables that share mutable objects (pure union-find)."""

from __future__ import annotations

from collections.abc import Collection, Mapping


def group(reached: Mapping[str, Collection[int]]) -> list[list[str]]:
    """Variables whose reached-object sets intersect end up in one group.

    Groups and the names inside them come out in the order of `reached`.
    """
    parent = {name: name for name in reached}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[int, str] = {}
    for name, ids in reached.items():
        for key in ids:
            other = owner.setdefault(key, name)
            if other != name:
                a, b = find(other), find(name)
                if a != b:
                    parent[b] = a
    groups: dict[str, list[str]] = {}
    for name in reached:
        groups.setdefault(find(name), []).append(name)
    return list(groups.values())

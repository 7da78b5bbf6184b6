"""The static cell scan on realistic (IPython-transformed) cells, and `code_globals`."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest
from IPython.core.inputtransformer2 import TransformerManager

from nbferry.agent.cellscan import CellScan, code_globals, scan


def S(source: str) -> CellScan:
    """Scan a cell as IPython would run it (magics and shell escapes transformed)."""
    return scan(TransformerManager().transform_cell(textwrap.dedent(source)))


# -- names read, written and deleted ------------------------------------------------


def test_assignment_reads_the_right_side_and_writes_the_targets() -> None:
    s = S("x = 1\ny = x + z\n")
    assert s.writes == {"x", "y"} and s.reads == {"x", "z"}
    assert s.deletes == set() and s.candidates == set() and s.syntax_error == ""


def test_tuple_unpacking_writes_every_target_including_starred() -> None:
    s = S("a, (b, *c) = t\nfirst, *_ = rows\n")
    assert s.writes == {"a", "b", "c", "first", "_"}
    assert s.reads == {"t", "rows"}


def test_augmented_assignment_reads_and_writes_the_name() -> None:
    s = S("x += 1\n")
    assert s.reads == {"x"} and s.writes == {"x"}
    # On an element it changes the container in place: a read and a candidate, not a write.
    s = S("xs[0] += 1\nobj.count -= 1\n")
    assert s.reads == {"xs", "obj"} and s.writes == set() and s.candidates == {"xs", "obj"}


def test_annotated_assignment_writes_the_target_and_reads_the_annotation() -> None:
    s = S("total: int = start + 1\n")
    assert s.writes == {"total"} and s.reads == {"int", "start"}


def test_del_of_a_name_deletes_it_and_del_of_an_element_changes_the_container() -> None:
    s = S("del x, ys[0], obj.attr\n")
    assert s.deletes == {"x"}
    assert s.candidates == {"ys", "obj"}
    assert "x" not in s.writes and "x" not in s.reads


def test_a_name_bound_then_deleted_in_one_cell_is_only_deleted() -> None:
    s = S("tmp = load()\nresult = tmp * 2\ndel tmp\n")
    assert s.deletes == {"tmp"} and s.writes == {"result"}


def test_imports_bind_the_top_package_or_the_alias() -> None:
    s = S(
        """
        import os.path
        import numpy as np
        import a.b.c as abc
        from collections import OrderedDict, defaultdict as dd
        from . import sibling
        from pathlib import *
        """
    )
    assert s.writes == {"os", "np", "abc", "OrderedDict", "dd", "sibling"}
    assert s.reads == set()


def test_with_and_for_targets_are_written() -> None:
    s = S(
        """
        with open(path) as fh:
            text = fh.read()
        for i, line in enumerate(text.splitlines()):
            pass
        """
    )
    assert {"fh", "text", "i", "line"} <= s.writes
    assert {"open", "path", "enumerate"} <= s.reads


# -- definitions ----------------------------------------------------------------------


def test_function_body_is_not_scanned_but_decorators_and_defaults_are() -> None:
    s = S(
        """
        @functools.lru_cache(maxsize=CACHE)
        def f(p, q=DEFAULT, *, r=KW_DEFAULT):
            local = p + q + GLOBAL_IN_BODY
            other.append(local)
            return local
        """
    )
    assert s.writes == {"f"}
    assert s.reads == {"functools", "CACHE", "DEFAULT", "KW_DEFAULT"}
    assert "GLOBAL_IN_BODY" not in s.reads and "other" not in s.candidates
    assert not {"p", "q", "r", "local"} & (s.reads | s.writes)


def test_async_function_is_a_definition_too() -> None:
    s = S("async def fetch(url, timeout=TIMEOUT):\n    return await client.get(url)\n")
    assert s.writes == {"fetch"} and s.reads == {"TIMEOUT"} and s.candidates == set()


def test_lambda_parameters_are_not_names_and_its_defaults_are_read() -> None:
    s = S("g = lambda v, w=W: v * w\n")
    assert s.writes == {"g"} and s.reads == {"W"}
    assert not {"v", "w"} & (s.reads | s.writes)


def test_a_lambda_called_inside_the_cell_reads_its_globals() -> None:
    # map() calls the lambda during this cell, so the cell reads `scale`; the lambda is
    # never a namespace value the recorder could resolve later with code_globals.
    s = S("ys = list(map(lambda v: v * scale, xs))\n")
    assert "scale" in s.reads
    assert "v" not in s.reads


def test_class_body_assignments_are_not_globals_but_the_class_name_is() -> None:
    s = S(
        """
        class Model(Base, metaclass=Meta):
            n_layers = 3
            width = WIDTH * 2
            import math
            def forward(self, x, scale=SCALE):
                return self.n_layers * x * HIDDEN
            del n_layers
        """
    )
    assert s.writes == {"Model"}
    assert {"Base", "Meta", "WIDTH", "SCALE"} <= s.reads
    assert "HIDDEN" not in s.reads
    assert not {"n_layers", "width", "math", "forward"} & (s.writes | s.deletes)


def test_decorated_class_reads_its_decorator() -> None:
    s = S("@dataclasses.dataclass(frozen=True)\nclass Point:\n    x: float = ORIGIN\n")
    assert s.writes == {"Point"} and {"dataclasses", "float", "ORIGIN"} <= s.reads


# -- comprehensions and walrus --------------------------------------------------------


def test_comprehension_variables_are_local_and_the_iterable_is_read() -> None:
    s = S("ys = [v * k for v in xs if v > lim]\n")
    assert s.writes == {"ys"} and s.reads == {"k", "xs", "lim"}
    s = S("d = {key: val for key, val in pairs.items()}\n")
    assert s.writes == {"d"} and s.reads == {"pairs"}
    s = S("s = {(a, b) for a in rows for b in a if b not in seen}\n")
    assert s.writes == {"s"} and s.reads == {"rows", "seen"}
    s = S("total = sum(x * x for x in values)\n")
    assert s.writes == {"total"} and s.reads == {"sum", "values"}


def test_the_first_iterable_is_read_even_when_it_shares_the_loop_variable_name() -> None:
    s = S("v = [v + 1 for v in v]\n")
    assert s.reads == {"v"} and s.writes == {"v"}


def test_methods_called_on_comprehension_variables_are_not_candidates() -> None:
    s = S("[row.append(0) for row in grid]\n")
    assert "row" not in s.candidates and "row" not in s.reads and "grid" in s.reads


def test_a_comprehension_over_an_iterator_consumes_it() -> None:
    # `for r in reader:` makes `reader` a candidate; a comprehension iterates it just
    # the same (and sum() drains the generator expression over `it` during the cell).
    assert "reader" in S("rows = [r for r in reader]\n").candidates
    assert "it" in S("total = sum(x for x in it)\n").candidates


def test_walrus_binds_in_the_cell_scope_even_inside_a_comprehension() -> None:
    s = S("if (n := len(xs)) > 3:\n    pass\n")
    assert s.writes == {"n"} and {"len", "xs"} <= s.reads
    s = S("ys = [last := f(v) for v in xs]\n")
    assert s.writes == {"ys", "last"} and s.reads == {"f", "xs"}


def test_match_capture_patterns_bind_names() -> None:
    s = S(
        """
        match command:
            case [verb, obj]:
                pass
            case {"op": op, **rest}:
                pass
            case Point(x=px) | Point(y=px):
                pass
            case [*items] as whole:
                pass
        """
    )
    assert "command" in s.reads
    assert {"verb", "obj", "op", "rest", "px", "items", "whole"} <= s.writes


# -- in-place change candidates -------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "candidate"),
    [
        ("xs.append(1)\n", "xs"),
        ("df.drop(columns=['a'], inplace=True)\n", "df"),
        ("df.loc[0, 'a'] = 1\n", "df"),
        ("cfg['lr'] = 0.1\n", "cfg"),
        ("model.weights[0].value = 3\n", "model"),
        ("np.add(a, 1, out=a)\n", "a"),
        ("rng.shuffle(deck)\n", "deck"),
        ("for v in gen:\n    pass\n", "gen"),
        ("first = next(g)\n", "g"),
        ("fill(buffer)\n", "buffer"),
        ("process(*batches)\n", "batches"),
    ],
)
def test_in_place_change_candidates(source: str, candidate: str) -> None:
    assert candidate in S(source).candidates


def test_plain_rebinding_and_reading_make_no_candidates() -> None:
    s = S("y = x\nz = x + y\nw = x[0]\n")
    assert s.candidates == set()


# -- seeds, randomness and the clock --------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "np.random.seed(0)\n",
        "random.seed(42)\n",
        "rng = np.random.default_rng(42)\n",
        "rng = np.random.default_rng(seed=7)\n",
        "state = np.random.RandomState(0)\n",
        "r = random.Random(1)\n",
    ],
)
def test_seeding_calls_set_seeds(source: str) -> None:
    s = S(source)
    assert s.seeds and s.random == []


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ("rng = np.random.default_rng()\n", "np.random.default_rng"),
        ("rng = default_rng()\n", "default_rng"),
        ("u = uuid.uuid4()\n", "uuid.uuid4"),
        ("b = os.urandom(4)\n", "os.urandom"),
        ("token = secrets.token_hex(16)\n", "secrets.token_hex"),
        ("r = random.Random()\n", "random.Random"),
    ],
)
def test_unseeded_randomness_is_named_by_call(source: str, label: str) -> None:
    s = S(source)
    assert s.random == [label] and not s.seeds


def test_an_explicit_none_seed_is_not_a_seed() -> None:
    s = S("rng = np.random.default_rng(None)\n")
    assert not s.seeds and s.random == ["np.random.default_rng"]


@pytest.mark.parametrize(
    ("source", "label"),
    [
        ("t = time.time()\n", "time.time"),
        ("t = time.time_ns()\n", "time.time_ns"),
        ("t = datetime.now()\n", "datetime.now"),
        ("t = datetime.datetime.now()\n", "datetime.datetime.now"),
        ("d = date.today()\n", "date.today"),
        ("t = pd.Timestamp.now()\n", "pd.Timestamp.now"),
    ],
)
def test_clock_reads_are_named_by_call(source: str, label: str) -> None:
    s = S(source)
    assert s.clock == [label] and s.random == []


def test_a_from_imported_clock_is_still_a_clock_read() -> None:
    assert S("from time import time\nstarted = time()\n").clock == ["time"]


def test_deterministic_calls_are_neither_random_nor_clock() -> None:
    s = S("x = np.zeros(3)\nt = time.sleep(0)\ny = sorted(xs)\nz = datetime(2020, 1, 1)\n")
    assert s.random == [] and s.clock == [] and not s.seeds


def test_every_random_and_clock_call_is_listed() -> None:
    s = S("a = uuid.uuid4()\nb = uuid.uuid4()\nt0 = time.time()\n")
    assert s.random == ["uuid.uuid4", "uuid.uuid4"] and s.clock == ["time.time"]


# -- syntax errors and IPython transforms ---------------------------------------------


def test_syntax_error_gives_an_empty_scan_that_says_why() -> None:
    s = scan("x = (\n")
    assert s.syntax_error and "line 1" in s.syntax_error
    assert s.reads == s.writes == s.deletes == s.candidates == set()
    assert scan("def f(:\n    pass\n").syntax_error


def test_shell_escapes_parse_and_capture_their_output() -> None:
    s = S("files = !ls {folder}\n")
    assert s.syntax_error == "" and "files" in s.writes and "get_ipython" in s.reads
    s = S("!pip install -q numpy\n")
    assert s.syntax_error == "" and s.writes == set()


def test_line_magic_source_is_transformed_code() -> None:
    source = "get_ipython().run_line_magic('time', 'x = 1')\n"
    assert TransformerManager().transform_cell("%time x = 1\n") == source
    s = scan(source)
    assert s.syntax_error == "" and "get_ipython" in s.reads


def test_time_magics_bind_the_names_their_code_assigns() -> None:
    # `%time x = 1` and `%%time` run their code in the user namespace: x (and y) change.
    assert "x" in scan("get_ipython().run_line_magic('time', 'x = 1')\n").writes
    assert {"x", "y"} <= S("%%time\nx = 1\ny = x + 1\n").writes


# -- code_globals ---------------------------------------------------------------------

_MODULE = """
import math
counter = 0

def f(x, k=3):
    global counter, gone
    counter += 1
    del gone
    def inner(y):
        return y * SCALE + math.pi
    shift = lambda z: z + OFFSET
    class Local:
        attr = CLASS_CONST
        def method(self):
            return METHOD_GLOBAL
    ys = [inner(v) for v in DATA if v > LIMIT]
    return len(ys) + x + k + shift(0)

def pure(a, b):
    c = a + b
    return c

def setter():
    global built
    built = [1]
"""


def _functions() -> dict:
    ns: dict = {}
    exec(compile(_MODULE, "<cell>", "exec"), ns)
    return ns


def test_code_globals_reads_nested_functions_lambdas_and_classes() -> None:
    reads, writes = code_globals(_functions()["f"].__code__)
    expected = {"counter", "SCALE", "math", "OFFSET", "CLASS_CONST", "METHOD_GLOBAL"}
    assert expected | {"DATA", "LIMIT", "len"} <= reads
    assert not {"x", "k", "y", "z", "v", "ys", "inner", "shift", "Local"} & reads
    assert writes == {"counter", "gone"}


def test_code_globals_of_a_pure_function_is_empty() -> None:
    assert code_globals(_functions()["pure"].__code__) == (set(), set())


def test_code_globals_sees_global_statements() -> None:
    assert code_globals(_functions()["setter"].__code__) == (set(), {"built"})


def test_code_globals_of_a_cell_module_reads_its_names() -> None:
    code = compile("y = x + 1\nprint(y)\n", "<cell>", "exec")
    reads, writes = code_globals(code)
    assert {"x", "y", "print"} <= reads and writes == set()


# -- which uses could change an array or a frame (recorder.could_change) ------------


@pytest.mark.parametrize(
    ("cell", "changes"),
    [
        ("a.sum()", False),
        ("a[0].fill(1)", True),  # a[0] is a view
        ("a.sort()", True),
        ("b = a + 1", False),
        ("a[1] = 5", True),
        ("np.mean(a)", False),
        ("np.add(a, 1, out=a)", True),
        ("np.copyto(a, 0)", True),
        ("len(a); print(a)", False),
        ("helper(a)", True),  # a notebook function could write into it
        ("for row in a:\n    pass", False),
        ("for i, x in enumerate(a):\n    print(x)", False),  # scalars: copies
    ],
)
def test_numpy_uses_that_could_change_an_array(cell: str, changes: bool) -> None:
    np = pytest.importorskip("numpy")
    from nbferry.agent.recorder import could_change

    ns = {"np": np, "a": np.arange(4), "helper": lambda x: x}
    assert could_change(ns["a"], scan(cell).uses.get("a", []), ns) is changes


@pytest.mark.parametrize(
    "cell",
    [
        "for row in a:\n    row[0] = 1",
        "for i, row in enumerate(a):\n    row += 1",
        "for row, w in zip(a, [1, 2]):\n    row *= w",
        "rows = list(a)",  # the rows are views into a
    ],
)
def test_rows_of_a_2d_array_are_views_a_loop_can_change(cell: str) -> None:
    np = pytest.importorskip("numpy")
    from nbferry.agent.recorder import could_change

    ns = {"np": np, "a": np.zeros((2, 3))}
    assert could_change(ns["a"], scan(cell).uses.get("a", []), ns)


@pytest.mark.parametrize(
    ("cell", "changes"),
    [
        ("df.head()", False),
        ("df['a'].sum()", False),
        ("df.describe()", False),
        ("df.loc[0, 'a'] = 1", True),
        ("df['c'] = 1", True),
        ("df.drop(columns='a', inplace=True)", True),
        ("df.insert(0, 'z', 1)", True),
        ("pd.concat([df, df])", False),
        ("df['a'].fillna(0, inplace=True)", False),  # copy-on-write: never reaches df
    ],
)
def test_pandas_uses_that_could_change_a_frame(cell: str, changes: bool) -> None:
    pd = pytest.importorskip("pandas")
    from nbferry.agent.recorder import could_change

    ns = {"pd": pd, "df": pd.DataFrame({"a": [1.0, None]})}
    assert could_change(ns["df"], scan(cell).uses.get("df", []), ns) is changes


@pytest.mark.parametrize(
    ("value", "cell", "changes"),
    [
        ([1, 2], "len(xs); sorted(xs); print(xs)", False),
        ([1, 2], "xs.index(2); xs.count(1)", False),
        ([1, 2], "xs.append(3)", True),
        ([1, 2], "xs.sort()", True),
        ([1, 2], "xs[0] = 3", True),
        ([[1], [2]], "xs[0].append(3)", True),  # an element changed
        ([[1], [2]], "for x in xs:\n    x.append(0)", True),
        ([1, 2], "helper(xs)", True),  # a notebook function could change it
        ({"a": 1}, "xs.get('a'); list(xs.items())", False),
        ({"a": 1}, "xs.update(b=2)", True),
        ({"a": 1}, "xs.setdefault('b', 2)", True),
        ({"a": 1}, "dict.update(xs, b=2)", True),
        (Counter("abca"), "xs.most_common(2)", False),
        (Counter("abca"), "xs.subtract('a')", True),
        ({1, 2}, "xs.issubset({1}); len(xs)", False),
        ({1, 2}, "xs.add(3)", True),
        ({1, 2}, "xs.__ior__({3})", True),
        # Loops that only read the elements (a list of lists, as a tokenizer makes)
        ([["a"], ["b"]], "c = Counter(t for d in xs for t in d)", False),
        ([["a"], ["b"]], "c = Counter(t for d in xs for t in set(d))", False),
        ([["a"], ["b"]], "n = sum(len(d) for d in xs)", False),
        ([["a"], ["b"]], "s = {t for d in xs for t in d if t != 'a'}", False),
        # A for statement's target is a global: a function, a magic or a later
        # statement can reach the element through it. Only comprehensions qualify.
        ([["a"], ["b"]], "for d in xs:\n    if len(d) > 1:\n        print(d)", True),
        ([["a"], ["b"]], "for d in xs:\n    pass\nd.sort()", True),
        ([["a"], ["b"]], "def touch():\n    d.append(1)\nfor d in xs:\n    touch()", True),
        ([["a"], ["b"]], "[exec('d.append(1)') for d in xs]", True),
        ([["a"], ["b"]], "def len(x):\n    x.append(0)\nn = sum(len(d) for d in xs)", True),
        ([iter("ab"), iter("c")], "c = Counter(t for d in xs for t in d)", True),  # used up
        ([[iter("ab")], [1]], "c = Counter(t for d in xs for u in d for t in u)", True),
        ([["a"], ["b"]], "ys = [d for d in xs]", True),  # ys shares the elements
        ([["a"], ["b"]], "ys = [t for d in xs for t in set(d)]", True),
        ([["a"], ["b"]], "c = sorted(t for d in xs for t in d)", True),
        ([["a"], ["b"]], "for d in xs:\n    helper(d)", True),
        ([["a"], ["b"]], "for d in xs:\n    d.sort()", True),
        ([["a"], ["b"]], "for d in xs:\n    for t in d:\n        t.strip()", True),
        ([["a"], ["b"]], "for d in xs:\n    d += ['c']", True),
        # Builtins that hand out the elements: harmless only when those are flat.
        ([["a"], ["b"]], "for i, d in enumerate(xs):\n    d.append(1)", True),
        ([["a"], ["b"]], "for d, n in zip(xs, [1, 2]):\n    d.append(n)", True),
        ([["a"], ["b"]], "ys = sorted(xs)", True),  # ys shares the elements
        ([["a"], ["b"]], "last = max(xs)\nlast.append(1)", True),
        ([["a"], ["b"]], "n = len(xs); print(xs)", False),
        (["a", "b"], "for i, d in enumerate(xs):\n    print(i, d)", False),
        (["a", "b"], "ys = sorted(xs); zs = list(zip(xs, xs))", False),
        ({"a": 1}, "for k in sorted(xs):\n    print(k)", False),
        ([["a"], ["b"]], "n = sum(map(len, xs))", False),  # each element only reaches len
        ([["a"], ["b"]], "ys = list(map(helper, xs))", True),
        ([["a"], ["b"]], "def len(d):\n    d.append(0)\nn = sum(map(len, xs))", True),
    ],
)
def test_builtin_containers_are_judged_by_use(value: object, cell: str, changes: bool) -> None:
    from nbferry.agent.recorder import could_change

    ns = {"xs": value, "helper": lambda x: x, "Counter": Counter}
    assert could_change(value, scan(cell).uses.get("xs", []), ns) is changes


def test_a_read_only_loop_trusts_only_the_real_builtins() -> None:
    """`len` or `Counter` redefined in the notebook may change what it is given."""
    from nbferry.agent.recorder import could_change

    xs = [["a"], ["b"]]
    for cell, ns in [
        ("n = sum(len(d) for d in xs)", {"len": lambda d: d.append(0)}),
        ("c = Counter(t for d in xs for t in d)", {"Counter": lambda g: list(g)}),
        ("c = Counter(t for d in xs for t in d)", {}),  # not imported: unknown name
    ]:
        assert could_change(xs, scan(cell).uses["xs"], {"xs": xs, **ns}), cell
    import collections

    cell = "c = collections.Counter(t for d in xs for t in d)"
    assert not could_change(xs, scan(cell).uses["xs"], {"xs": xs, "collections": collections})


def test_other_values_are_always_checked() -> None:
    from nbferry.agent.recorder import could_change

    class Bag(list):
        def __len__(self) -> int:  # a subclass may do anything
            self.append(0)
            return super().__len__()

    bag = Bag([1])
    assert could_change(bag, scan("len(xs)").uses["xs"], {"xs": bag})
    assert could_change(object(), scan("xs.value()").uses["xs"], {})


@pytest.mark.parametrize(
    "source",
    [
        "import time\nt = time.perf_counter()",
        "from time import monotonic_ns\nt = monotonic_ns()",
        "from datetime import datetime as dt\nwhen = dt.now()",
        "import pandas as pd\nwhen = pd.Timestamp.utcnow()",
        "import datetime\nday = datetime.date.today()",
    ],
)
def test_clock_reads_are_seen_under_any_name(source: str) -> None:
    assert scan(source).clock


def test_timing_free_cells_read_no_clock() -> None:
    assert not scan("import time\ntime.sleep(0)\nx = now + 1").clock


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("x = await f()", "top-level await"),
        ("async for v in stream():\n    pass", "top-level await"),
        ("exec('data.append(2)')", "exec"),
        ("w = eval('z + 1')", "eval"),
        ("globals()['events'].append(1)", "globals()"),
        ("for k, v in vars().items():\n    pass", "vars()"),
        ("n = len(locals())", "locals()"),
        ("get_ipython().run_line_magic('run', '-i step.py')", "%run -i"),
    ],
)
def test_cells_a_rerun_cannot_replay_say_why(source: str, why: str) -> None:
    assert why in scan(source).unreplayable


def test_await_inside_a_function_and_exec_as_a_method_are_replayable() -> None:
    assert scan("async def g():\n    return await h()").unreplayable == ""
    assert scan("cursor.execute('select 1')\nengine.exec(q)").unreplayable == ""
    # A function's own locals, an object's attributes and a plain %run are not the namespace.
    assert scan("def f(a):\n    return locals(), vars()\nd = vars(obj)").unreplayable == ""
    assert scan("def g():\n    return globals()['x']").unreplayable == ""  # callers are flagged
    assert scan("get_ipython().run_line_magic('run', 'step.py')").unreplayable == ""

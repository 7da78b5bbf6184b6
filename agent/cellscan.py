"""What a cell's code says about the names it touches (pure: source in, sets out).

A static pass over the cell as IPython transformed it. It finds the module-level
names the cell reads, binds and deletes; the names whose objects it could change
in place (the only ones the recorder fingerprints before and after); and calls
that make a cell nondeterministic when nothing seeds them. Function bodies are
not read here: a function's globals are read when it is called, which the
recorder resolves from the live function's code (see `code_globals`).
"""

from __future__ import annotations

import ast
import dis
import types
from dataclasses import dataclass, field

# Calls whose results differ on every run unless seeded (checked by last name).
_UNSEEDED_WHEN_NO_ARGS = frozenset({"default_rng", "RandomState", "Random", "Generator"})
_ALWAYS_RANDOM = frozenset({"urandom", "uuid1", "uuid4", "token_bytes", "token_hex", "randbits"})
# time's readers of a clock; `X.now()`, `X.utcnow()` and `X.today()` count whatever
# X is called (`from datetime import datetime as dt`): a false hit only stores a value.
_TIME_READERS = frozenset(
    f"{name}{ns}"
    for name in ("time", "perf_counter", "monotonic", "process_time", "thread_time")
    for ns in ("", "_ns")
)
_CLOCK = frozenset({("time", name) for name in _TIME_READERS} | {("pd", "now")})
_CLOCK_METHODS = frozenset({"now", "utcnow", "today"})


# Readers whose I/O happens in C, C++ or Rust (pyarrow, polars, h5py, xarray,
# databases): the audit hook cannot see their files, so the scan names them.
_NATIVE_READERS = frozenset(
    {
        "read_parquet", "read_feather", "read_orc", "read_hdf", "read_sql", "read_sql_query",
        "read_sql_table", "read_ipc", "read_delta", "scan_parquet", "scan_csv", "scan_ipc",
        "read_database", "open_dataset", "open_mfdataset", "open_zarr", "read_table",
        "read_excel",
    }
)  # fmt: skip
_NATIVE_CALLS = frozenset(
    {("sqlite3", "connect"), ("duckdb", "connect"), ("duckdb", "sql"), ("h5py", "File"),
     ("sqlalchemy", "create_engine"), ("psycopg", "connect"), ("psycopg2", "connect")}
)  # fmt: skip
_BARE_CLOCK = frozenset((name,) for name in _TIME_READERS)  # from time import perf_counter
# Magics whose argument (line or cell body) is Python run in the user namespace.
_CODE_MAGICS = frozenset({"time", "timeit", "capture", "prun"})


def _has_seed(node: ast.Call) -> bool:
    """default_rng(42) or Random(seed=1); not default_rng() or default_rng(None)."""
    values = [*node.args[:1], *(k.value for k in node.keywords if k.arg in ("seed", "x"))]
    return any(not (isinstance(v, ast.Constant) and v.value is None) for v in values)


@dataclass(frozen=True)
class Use:
    """One way a cell used a candidate name.

    kind: "store" (x[i] = v, x.a = v, del x[i], x[i] += v), "method" (x.m(...)),
    "chain" (x[i].m(...), x.a.m(...)), "arg" (f(x), f(x[i])) or "iter" (for v in x).
    name: the method for "method"/"chain"; the called function, dotted, for "arg";
    for a read-only "iter", the calls that judgement relies on, comma-separated
    (the recorder checks that they are the builtins, not the user's own).
    inplace: the call passed inplace=True or out=...
    readonly: an "iter" whose loop can only read the elements (see
    `_elements_untouched`), so iterating a list of lists cannot change it.
    """

    kind: str
    name: str = ""
    inplace: bool = False
    readonly: bool = False


@dataclass
class CellScan:
    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    deletes: set[str] = field(default_factory=set)
    # Names whose objects the cell might change in place: method receivers,
    # call arguments, subscript/attribute assignment targets, loop iterables.
    candidates: set[str] = field(default_factory=set)
    # How each candidate was used (see `Use`), so the recorder can skip uses
    # that cannot change a value of a known type (df.head() on a DataFrame).
    uses: dict[str, list[Use]] = field(default_factory=dict)
    seeds: bool = False  # calls something named seed(...)
    random: list[str] = field(default_factory=list)  # unseeded randomness, by call
    clock: list[str] = field(default_factory=list)  # wall-clock reads, by call
    # Calls that read files, databases or the network in native code, where the
    # audit hook sees no open(): by call.
    external: list[str] = field(default_factory=list)
    syntax_error: str = ""
    # (name, attribute) of `name.attr = ...` statements: when `name` is a module,
    # the cell changed module state, which a restore does not carry over.
    attribute_sets: list[tuple[str, str]] = field(default_factory=list)
    # Why a rerun could not replay the cell faithfully: top-level await (IPython
    # runs such cells as coroutines), or code from a string (exec, eval), whose
    # reads and edits the scan cannot see.
    unreplayable: str = ""


def scan(source: str) -> CellScan:
    """Scan transformed cell source; a syntax error yields an empty scan that says so."""
    out = CellScan()
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        out.syntax_error = f"{exc.msg} (line {exc.lineno})"
        return out
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)) and _top_level(node, parents):
            out.unreplayable = "it uses top-level await, which a rerun cannot replay"
            break
        why = _namespace_access(node, parents)
        if why:
            out.unreplayable = f"{why}, whose reads and edits the recorder cannot see"
            break
    _Visitor(out, parents).visit(tree)
    for name, uses in out.uses.items():
        out.uses[name] = [_distrust_rebound(u, out.writes) for u in uses]
    return out


# Builtins through which code reaches the notebook's namespace without naming what it uses.
NAMESPACE_CALLS = frozenset({"exec", "eval", "globals"})


def _namespace_access(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> str:
    """Why a call reaches the namespace unseen ('' when it does not): exec/eval
    of a string; globals(), vars() or locals() at the top level (inside a def
    they run when it is called, and the recorder flags its callers); `%run -i`
    (a script run in the notebook's namespace)."""
    if not isinstance(node, ast.Call):
        return ""
    func = node.func
    if isinstance(func, ast.Name):
        if func.id in ("exec", "eval"):
            return f"it runs code from a string ({func.id})"
        # Inside a def these run only when it is called, and its callers are flagged.
        namespace = func.id == "globals" or (func.id in ("vars", "locals") and not node.args)
        if namespace and _top_level(node, parents):
            return f"it reaches the namespace through {func.id}()"
    if (
        isinstance(func, ast.Attribute)
        and func.attr == "run_line_magic"
        and len(node.args) >= 2
        and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:2])
        and node.args[0].value == "run"
        and "-i" in node.args[1].value.split()
    ):
        return "it runs a script in the notebook's namespace (%run -i)"
    return ""


def _distrust_rebound(use: Use, writes: set[str]) -> Use:
    """A read-only loop or a call that relies on a builtin the cell itself rebinds
    (def len...): the recorder, which sees the namespace before the cell, must
    not trust it."""
    if use.readonly and set(use.name.split(",")) & writes:
        return Use("iter")
    if use.kind == "arg" and use.name.split(".")[0] in writes:
        return Use("arg", "", use.inplace)
    return use


# Calls that only read their argument or hash its elements; consumers that only
# hash what a generator yields them. Checked against the namespace by the recorder.
_READS_ONLY = frozenset(
    {"len", "set", "frozenset", "hash", "isinstance", "str", "repr", "bool", "print",
     "Counter", "collections.Counter"}
)  # fmt: skip
_HASHES_ELEMENTS = frozenset({"set", "frozenset", "Counter", "collections.Counter"})


def _target_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _elements_untouched(
    loop: ast.AST, targets: set[str], parents: dict[ast.AST, ast.AST]
) -> tuple[str, ...] | None:
    """The calls relied on, when a comprehension can only read the elements
    bound to `targets`; None when it might change them.

    Only comprehensions qualify: their targets are local to them, so nothing
    outside (a function the loop calls, `%time`, a later statement) can reach
    an element through the name. Inside, every call must be one that reads.

    Each use of an element must iterate it again (its own elements then follow
    the same rule), pass it to a call that only reads it (`len`, `set`), compare
    it, or hand it to a consumer that only hashes it (a set or dict key,
    `Counter(w for doc in docs for w in doc)`). Then `tokens` cannot change,
    and the recorder need not fingerprint it after the cell.
    """
    names = set(targets)
    while True:  # nested loops over an element bind more element names
        more = {
            name
            for node in ast.walk(loop)
            if isinstance(node, ast.comprehension) and _over_elements(node.iter, names)
            for name in _target_names(node.target)
        }
        if more <= names:
            break
        names |= more
    calls: set[str] = set()
    first = loop.generators[0].iter  # type: ignore[attr-defined]
    for node in ast.walk(loop):
        if isinstance(node, ast.AugAssign) and _target_names(node.target) & names:
            return None  # d += [...] extends the element itself
        if isinstance(node, ast.Call) and node is not first:
            called = ".".join(_dotted(node.func))
            if called not in _READS_ONLY:
                return None  # f() might reach the elements without naming them: exec, locals()
            calls.add(called)
        if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
            call = _read_only_use(node, parents)
            if call is None:
                return None
            calls.add(call)
    return tuple(sorted(calls - {""}))


def _top_level(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Outside every function body (lambdas and comprehensions inside a function too)."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    while (node := parents.get(node)) is not None:  # type: ignore[assignment]
        if isinstance(node, scopes):
            return False
    return True


def _over_elements(iterable: ast.AST, names: set[str]) -> bool:
    """`doc` or `set(doc)` for an element `doc`: a loop over it binds elements too."""
    if isinstance(iterable, ast.Call) and ".".join(_dotted(iterable.func)) in _READS_ONLY:
        return any(isinstance(a, ast.Name) and a.id in names for a in iterable.args)
    return isinstance(iterable, ast.Name) and iterable.id in names


def _read_only_use(node: ast.Name, parents: dict[ast.AST, ast.AST]) -> str | None:
    """ "" or the call relied on when this use of an element only reads it; else None."""
    parent = parents.get(node)
    if isinstance(parent, ast.comprehension) and parent.iter is node:
        return ""
    if isinstance(parent, ast.Compare) or (isinstance(parent, ast.SetComp) and parent.elt is node):
        return ""
    if isinstance(parent, ast.DictComp) and parent.key is node:
        return ""
    if isinstance(parent, ast.Call) and any(a is node for a in parent.args):
        called = ".".join(_dotted(parent.func))
        return called if called in _READS_ONLY else None
    if isinstance(parent, ast.GeneratorExp) and parent.elt is node:
        call = parents.get(parent)
        if isinstance(call, ast.Call) and len(call.args) == 1 and call.args[0] is parent:
            called = ".".join(_dotted(call.func))
            return called if called in _HASHES_ELEMENTS else None
    return None


def _root(node: ast.AST) -> str | None:
    """`a` for `a`, `a.b`, `a[0].c`, `a.b()`: the name an expression hangs from."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        else:
            return None


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


class _Visitor(ast.NodeVisitor):
    def __init__(self, out: CellScan, parents: dict[ast.AST, ast.AST]) -> None:
        self.out = out
        self.parents = parents
        self.local: list[set[str]] = []  # comprehension targets, innermost last
        self.in_class = 0

    # -- names ---------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if any(node.id in scope for scope in self.local):
            return
        if isinstance(node.ctx, ast.Load):
            self.out.reads.add(node.id)
        elif self.in_class:
            return  # class-body bindings are class attributes, not globals
        elif isinstance(node.ctx, ast.Store):
            self.out.writes.add(node.id)
        else:
            self.out.deletes.add(node.id)
            self.out.writes.discard(node.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.out.writes.add(node.target.id)  # := binds in the enclosing scope

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        if self.in_class:
            return
        for alias in node.names:
            if alias.name != "*":
                self.out.writes.add(alias.asname or alias.name.split(".")[0])

    visit_ImportFrom = visit_Import

    def visit_Global(self, node: ast.Global) -> None:
        pass

    # -- definitions: bodies run later, when called ----------------------------
    def _definition(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        for dec in node.decorator_list:
            self.visit(dec)
        if not self.in_class:
            self.out.writes.add(node.name)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._definition(node)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        # Usually called right here (map, sorted(key=...)): its globals count as reads.
        args = node.args
        params = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        self.local.append({a.arg for a in params if a is not None})
        in_class, self.in_class = self.in_class, 1  # nothing in a lambda binds a global
        self.visit(node.body)
        self.in_class = in_class
        self.local.pop()

    # match statements bind capture names as plain strings, not Name nodes
    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name and not self.in_class:
            self.out.writes.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name and not self.in_class:
            self.out.writes.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest and not self.in_class:
            self.out.writes.add(node.rest)
        self.generic_visit(node)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._definition(node)
        for base in [*node.bases, *(k.value for k in node.keywords)]:
            self.visit(base)
        self.in_class += 1
        for stmt in node.body:
            self.visit(stmt)
        self.in_class -= 1

    def _comprehension(self, node: ast.AST, elements: list[ast.AST]) -> None:
        gens: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        self.visit(gens[0].iter)  # evaluated in the enclosing scope
        # iterating an iterator consumes it
        self._candidate(gens[0].iter, self._iteration(node, gens[0].target))
        targets = {n.id for g in gens for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        self.local.append(targets)
        for i, gen in enumerate(gens):
            if i:
                self.visit(gen.iter)
            for cond in gen.ifs:
                self.visit(cond)
        for element in elements:
            self.visit(element)
        self.local.pop()

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self._comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._comprehension(node, [node.key, node.value])

    # -- in-place changes ------------------------------------------------------
    def _candidate(self, node: ast.AST, use: Use) -> None:
        name = _root(node)
        if name is not None and not any(name in scope for scope in self.local):
            self.out.candidates.add(name)
            self.out.uses.setdefault(name, []).append(use)

    def visit_Assign(self, node: ast.Assign | ast.AnnAssign | ast.AugAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Attribute | ast.Subscript):
                    self._candidate(sub, Use("store"))
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                    self.out.attribute_sets.append((sub.value.id, sub.attr))  # name.attr = ...
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit_Assign(node)
        if isinstance(node.target, ast.Name):
            self.out.reads.add(node.target.id)  # x += 1 reads x first

    visit_AnnAssign = visit_Assign

    def visit_Delete(self, node: ast.Delete) -> None:
        for target in node.targets:
            if not isinstance(target, ast.Name):
                self._candidate(target, Use("store"))
        self.generic_visit(node)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        # iterating an iterator or generator consumes it
        self._candidate(node.iter, Use("iter"))
        self.generic_visit(node)

    def _iteration(self, loop: ast.AST, target: ast.AST) -> Use:
        calls = _elements_untouched(loop, _target_names(target), self.parents)
        if calls is None:
            return Use("iter")
        return Use("iter", ",".join(calls), readonly=True)

    visit_AsyncFor = visit_For

    def visit_Call(self, node: ast.Call) -> None:
        inplace = any(
            (k.arg == "inplace" and not (isinstance(k.value, ast.Constant) and not k.value.value))
            or k.arg == "out"
            for k in node.keywords
        )
        if isinstance(node.func, ast.Attribute):
            # df.drop(..., inplace=True), xs.append(1), a[0].fill(1)
            receiver = node.func.value
            kind = "method" if isinstance(receiver, ast.Name) else "chain"
            self._candidate(receiver, Use(kind, node.func.attr, inplace))
        called = ".".join(_dotted(node.func))
        first = node.args[0] if node.args else None
        if called in ("map", "filter") and isinstance(first, ast.Name) and first.id in _READS_ONLY:
            called = first.id  # map(len, docs) hands each element to len alone
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            self._candidate(arg, Use("arg", called, inplace))  # np.add(a, 1, out=a), next(gen)
        self._nondeterminism(node)
        self.generic_visit(node)

    def _nondeterminism(self, node: ast.Call) -> None:
        dotted = _dotted(node.func)
        if not dotted:
            return
        last = dotted[-1]
        label = ".".join(dotted)
        if last == "seed" or (last in _UNSEEDED_WHEN_NO_ARGS and _has_seed(node)):
            self.out.seeds = True
        elif last in _UNSEEDED_WHEN_NO_ARGS or last in _ALWAYS_RANDOM:
            self.out.random.append(label)
        if (
            dotted[-2:] in _CLOCK
            or dotted in _BARE_CLOCK
            or (len(dotted) > 1 and last in _CLOCK_METHODS)
        ):
            self.out.clock.append(label)
        if last in _NATIVE_READERS or dotted[-2:] in _NATIVE_CALLS:
            self.out.external.append(label)
        if last in ("run_line_magic", "run_cell_magic") and node.args:
            self._magic_body(node)

    def _magic_body(self, node: ast.Call) -> None:
        """%time x = 1 and %%capture cells run their code in the user namespace."""
        name = node.args[0]
        if not (isinstance(name, ast.Constant) and name.value in _CODE_MAGICS):
            return
        body = node.args[-1] if len(node.args) > 1 else None
        if not (isinstance(body, ast.Constant) and isinstance(body.value, str)):
            return
        try:
            tree = ast.parse(body.value)
        except SyntaxError:
            return
        self.visit(tree)


def code_globals(code: types.CodeType) -> tuple[set[str], set[str]]:
    """(globals read, globals written or deleted) by a code object and the code nested in it."""
    reads: set[str] = set()
    writes: set[str] = set()
    stack = [code]
    while stack:
        co = stack.pop()
        for ins in dis.get_instructions(co):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                reads.add(ins.argval)
            elif ins.opname in ("STORE_GLOBAL", "DELETE_GLOBAL"):
                writes.add(ins.argval)
        stack.extend(c for c in co.co_consts if isinstance(c, types.CodeType))
    return reads, writes

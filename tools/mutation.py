"""Mutation score of the core modules, per module (issue 16; not part of CI: see TESTING.md).

    python tools/mutation.py              # run mutmut on the modules [tool.mutmut] lists, then report
    python tools/mutation.py --report     # report the last run only
    python tools/mutation.py --survivors  # also print the diff of every surviving mutant not judged equivalent

mutmut (a maintained mutation tester) copies ``hwnas`` into ``mutants/``, plants one small change at a
time (an operator, a constant, a dropped argument ...) and runs the tests that cover the changed
function; a mutant is *killed* when a test fails. Survivors judged equivalent by hand (no input can
tell them apart from the original) are listed with the reason in ``tools/equivalent_mutants.txt``
and leave the denominator. Score = killed / (mutants - equivalent); a timeout is reported apart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "tools" / "equivalent_mutants.txt"
# mutmut's exit codes: 1/3 a test failed, 0 every test passed, 5/33 no test covers it, 36 and SIGXCPU timeouts
KILLED, SURVIVED, NO_TESTS, TIMEOUT = {1, 3}, {0}, {5, 33}, {36, 24, -24, 152, 255}


def equivalents() -> dict[str, str]:
    """The mutants judged equivalent, by name, with the reason (``name  # reason`` per line)."""
    out: dict[str, str] = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            name, _, why = line.partition("#")
            if name.strip():
                out[name.strip()] = why.strip()
    return out


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def report(show_survivors: bool) -> int:
    equiv = equivalents()
    rows, survivors, missing = [], [], []
    total = Counter()
    for module in modules():
        meta = ROOT / "mutants" / f"{module}.meta"
        if not meta.exists():
            missing.append(module)
            continue
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        c = Counter()
        for name, code in codes.items():
            if name in equiv:
                c["equivalent"] += 1
            elif code in KILLED:
                c["killed"] += 1
            elif code in TIMEOUT:
                c["timeout"] += 1
            elif code in SURVIVED:
                c["survived"] += 1
                survivors.append(name)
            elif code in NO_TESTS:
                c["no tests"] += 1
                survivors.append(name)
            else:
                c["not run"] += 1
        c["mutants"] = len(codes)
        total.update(c)
        rows.append((module, c))
    if missing:
        print(f"no mutmut results for {', '.join(missing)}: run python tools/mutation.py first", file=sys.stderr)

    def score(c: Counter, with_timeouts: bool = False) -> str:
        judged = c["mutants"] - c["equivalent"] - c["not run"]
        killed = c["killed"] + (c["timeout"] if with_timeouts else 0)
        return f"{killed / judged:.1%}" if judged else "-"

    # A timeout (mutmut's CPU-time limit, SIGXCPU) is not counted as a kill: the limit is a multiple of
    # the covering tests' time measured once, and on a busy machine a mutant that changes nothing can
    # pass it. The last column counts them as killed, as mutmut does.
    print("| module | mutants | killed | survived | no test | timeout | equivalent | score | counting timeouts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for module, c in [*rows, ("all", total)]:
        print(f"| {module} | {c['mutants']} | {c['killed']} | {c['survived']} | {c['no tests']} | {c['timeout']} | "
              f"{c['equivalent']} | {score(c)} | {score(c, True)} |")  # fmt: skip
    if total["not run"]:
        print(f"\n{total['not run']} mutants were not run (interrupted run): run python tools/mutation.py again")
    print(f"\n{len(survivors)} surviving mutants not judged equivalent" + (":" if survivors else ""))
    for name in survivors:
        print(f"  {name}")
        if show_survivors:
            subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=ROOT, check=False)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", action="store_true", help="report the last run, do not run mutmut")
    ap.add_argument("--survivors", action="store_true", help="print the diff of every surviving mutant")
    ap.add_argument("--max-children", type=int, default=None, help="mutants tested at once (default: the cores)")
    ap.add_argument(
        "modules",
        nargs="*",
        help="test only these modules' mutants (e.g. hwnas/search/cost.py); default: every module [tool.mutmut] lists",
    )
    args = ap.parse_args()
    if not args.report:
        cmd = [sys.executable, "-m", "mutmut", "run"]
        if args.max_children:
            cmd += ["--max-children", str(args.max_children)]
        unknown = sorted(set(args.modules) - set(modules()))
        if unknown:
            print(f"not a module [tool.mutmut] lists: {', '.join(unknown)}; choose from {', '.join(modules())}",
                  file=sys.stderr)  # fmt: skip
            return 2
        cmd += [m.removesuffix(".py").replace("/", ".") + ".*" for m in args.modules]
        done = subprocess.run(cmd, cwd=ROOT, check=False)
        if done.returncode != 0:
            print(f"mutmut run failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
    return report(args.survivors)


if __name__ == "__main__":
    sys.exit(main())

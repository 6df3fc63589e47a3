"""Hand-planted bugs, each with the test that must catch it (issue 39; not part of CI: see TESTING.md).

    python tools/planted_bugs.py            # plant each bug in turn, run its tests, restore the file
    python tools/planted_bugs.py NAME ...   # only these

mutmut (``tools/mutation.py``) plants small syntactic changes; these are the plausible wrong rules
an audit planted by hand: a signed maximum where the rule is of magnitudes, milliseconds where
the rule is relative, a check moved after the work it guards. Each is planted in the working tree,
its test files run, and the file restored (also on Ctrl-C). A bug is *caught* when the named test
fails; the exit status is 1 when any bug is not caught by its named test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Plant:
    path: str  # the file the bug goes into
    edits: tuple[tuple[str, str], ...]  # (text, replacement), each text found exactly once
    tests: str  # the test file to run
    catcher: str  # the test that must fail


SERVER = "hwnas/devices/agent/server.py"
AUTH_AT_TOP = "            self._authorize()\n            url = urlsplit"
PLANTS = {
    "export-signed-max": Plant(
        "hwnas/export/pipeline.py",
        (("float(np.abs(got - ref).max())", "float((got - ref).max())"),),
        "tests/test_export.py",
        "test_a_file_whose_every_output_is_below_pytorchs_is_refused",
    ),
    "outlier-in-milliseconds": Plant(
        "hwnas/latency/disturbance.py",
        (("        if abs(x / med - 1) > spread:", "        if abs(x - med) > spread:"),),
        "tests/test_disturbance.py",
        "test_the_outlier_rule_is_relative_not_in_milliseconds",
    ),
    "agent-token-in-request-read": Plant(  # checked once the request is in: after any body
        SERVER,
        (
            (AUTH_AT_TOP, "            url = urlsplit"),
            (
                "        self._deadline.cancel()\n        self.request.settimeout(None)",
                "        self._authorize()\n        self._deadline.cancel()\n        self.request.settimeout(None)",
            ),
        ),
        "tests/test_agent.py",
        "test_a_tokenless_upload_is_refused_without_waiting_for_its_body",
    ),
    "agent-token-after-the-body": Plant(  # GET and HEAD checked first, PUT and POST after their body
        SERVER,
        (
            (
                AUTH_AT_TOP,
                "            if method in ('GET', 'HEAD'):\n                self._authorize()\n            url = urlsplit",
            ),
            (
                "            left -= len(chunk)\n        self._request_read()",
                "            left -= len(chunk)\n        self._authorize()\n        self._request_read()",
            ),
        ),
        "tests/test_agent.py",
        "test_the_token_is_checked_before_the_declared_length",
    ),
    "noise-floor-in-milliseconds": Plant(
        "hwnas/latency/validate.py",
        (("devs += [abs(x / med - 1) for x in rounds]", "devs += [abs(x - med) for x in rounds]"),),
        "tests/test_validate.py",
        "test_noise_floor_is_how_well_each_networks_own_rounds_agree",
    ),
    "verdict-least-noise-in-milliseconds": Plant(
        "hwnas/latency/verdict.py",
        (("NOISE_FLOOR * m)", "NOISE_FLOOR)"),),
        "tests/test_disturbance.py",
        "test_the_least_noise_is_relative_to_the_measurement",
    ),
    "target-dual-ascent-signed": Plant(
        "hwnas/search/penalty.py",
        (("abs(e_cost / self.budget - 1) - TOLERANCE", "(e_cost / self.budget - 1) - TOLERANCE"),),
        "tests/test_penalty.py",
        "test_dual_ascent",
    ),
    "demo-margin-signed": Plant(
        "hwnas/demo.py",
        (
            (
                'err = np.abs(scored["calibrated_ms"].to_numpy() / scored["measured_ms"].to_numpy() - 1)',
                'err = scored["calibrated_ms"].to_numpy() / scored["measured_ms"].to_numpy() - 1',
            ),
        ),
        "tests/test_validate.py",
        "test_the_demo_margin_is_the_90th_percentile_of_held_out_errors",
    ),
    "loader-seeds-from-the-global-generator": Plant(  # DataLoader's default: one draw of torch's global generator
        "hwnas/train/loader.py",
        (("                        generator=torch.Generator())", "                        generator=None)"),),
        "tests/test_stream.py",
        "test_a_search_streamed_selects_what_it_selects_in_memory",
    ),
}


def planted_text(text: str, plant: Plant, name: str) -> str:
    for old, new in plant.edits:
        if text.count(old) != 1:
            raise SystemExit(f"{name}: {old!r} is in {plant.path} {text.count(old)} times, not once; update the plant")
        text = text.replace(old, new)
    return text


def run(name: str, plant: Plant) -> bool:
    file = ROOT / plant.path
    original = file.read_text()
    planted = planted_text(original, plant, name)
    file.write_text(planted)
    try:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", plant.tests]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True).stdout
    finally:
        file.write_text(original)
    failed = [line.split("::")[-1].split(" ")[0] for line in out.splitlines() if line.startswith("FAILED")]
    caught = plant.catcher in failed
    print(f"{name:38s} {'caught' if caught else 'NOT CAUGHT'} by {plant.catcher}; failed: {', '.join(failed) or '-'}")
    return caught


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"plants to run (default: all): {', '.join(PLANTS)}")
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in PLANTS]
    if unknown:
        parser.error(f"no plant named {', '.join(unknown)}; choose from {', '.join(PLANTS)}")
    results = [run(n, PLANTS[n]) for n in (args.names or PLANTS)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

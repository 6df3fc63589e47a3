"""`hwnas agent serve` and `hwnas devices`: where models run, and serving this machine's runtimes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.table import Table

from hwnas.cli.common import (
    console,
    show_default,
)
from hwnas.devices.agent.__main__ import add_serve_arguments

if TYPE_CHECKING:
    pass


def cmd_agent_serve(args: argparse.Namespace) -> int:
    from hwnas.devices.agent.__main__ import serve

    return serve(args)


def cmd_devices(args: argparse.Namespace) -> None:
    from hwnas.devices import DEVICE_KINDS

    t = Table("device", "usable here", "runs", "parameters (defaults)", title="devices")
    for kind, cls in DEVICE_KINDS.items():
        why = cls.availability()
        params = ", ".join(f"{n}={show_default(p.default)}" for n, p in cls.params.items())
        t.add_row(kind, "yes" if why is None else f"no: {why}", cls.format, params)
    console.print(t)
    console.print("A spec sets parameters after a colon, e.g. ort-cpu:threads=1, tflite-cpu:threads=4,xnnpack=0, "
                  "remote:192.168.1.20:8765,runtime=tflite-cpu (an agent: hwnas agent serve) or adb:SERIAL.")  # fmt: skip


def add_parser(sub: Any) -> None:
    """Add the agent, devices command(s) to the subparsers ``sub``."""
    ag = sub.add_parser("agent", help="the device agent: serve this machine's runtimes to 'remote:' devices")
    ag_sub = ag.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    ags = ag_sub.add_parser("serve", help="time ONNX/TFLite models for remote clients (token from --token-file or "
                            "$HWNAS_AGENT_TOKEN)", allow_abbrev=False)  # fmt: skip
    add_serve_arguments(ags)
    ags.set_defaults(func=cmd_agent_serve)

    d = sub.add_parser("devices", help="which devices are usable here, and their parameters")
    d.set_defaults(func=cmd_devices)

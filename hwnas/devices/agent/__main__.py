"""``python -m hwnas.devices.agent serve`` (also ``hwnas agent serve``): run the device agent.

On the device this needs only numpy and a runtime; it never imports torch. The token comes from
``--token-file`` or the ``HWNAS_AGENT_TOKEN`` environment variable, never from the command line
(other users can read a process's arguments).
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
from pathlib import Path

from hwnas.core.errors import HwnasError
from hwnas.devices.agent.protocol import MIN_TOKEN_CHARS, TOKEN_ENV

MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > agent.token && chmod 600 agent.token"


def read_token(token_file: str | None) -> bytes:
    """The token from ``token_file`` or the environment; refuses a missing or short one."""
    if token_file:
        path = Path(token_file)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise HwnasError(f"--token-file {path}: cannot read it ({exc.strerror}); make one: {MAKE_TOKEN}") from None
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            print(f"hwnas agent: warning: {path} is readable by other users; chmod 600 {path}", file=sys.stderr)
        source = str(path)
    else:
        text = os.environ.get(TOKEN_ENV, "").strip()
        source = TOKEN_ENV
        if not text:
            raise HwnasError(f"no token: give --token-file FILE or set {TOKEN_ENV}; make one: {MAKE_TOKEN}")
    if len(text) < MIN_TOKEN_CHARS or not text.isascii() or any(c.isspace() for c in text):
        raise HwnasError(f"{source}: the token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without "
                         f"spaces; make one: {MAKE_TOKEN}")  # fmt: skip
    return text.encode()


def add_serve_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                    "0.0.0.0 for the network, best with --tls-cert)")  # fmt: skip
    ap.add_argument("--port", type=int, default=8765, help="port (0: any free port, printed at start)")
    ap.add_argument("--token-file", metavar="FILE", help=f"file holding the token (else ${TOKEN_ENV})")
    ap.add_argument("--cache-dir", metavar="DIR", help="where uploaded models are kept (default ~/.cache/hwnas-agent)")
    ap.add_argument("--max-model-mb", type=float, default=256, help="largest model accepted, in MiB (default 256)")
    ap.add_argument("--max-run-s", type=float, default=300, help="longest job (load + timing), in s (default 300)")
    ap.add_argument("--client-timeout-s", type=float, default=30, help="time a client has to send its request")
    ap.add_argument("--max-connections", type=int, default=16, help="connections served at once")
    ap.add_argument("--memory-mb", type=int, default=4096, help="address-space cap of the timing worker, in MiB")
    ap.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain)")
    ap.add_argument("--tls-key", metavar="PEM", help="the certificate's private key (if not in --tls-cert)")


def _stop(*_: object) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace) -> int:
    from hwnas.devices.agent.server import AgentConfig, AgentServer

    if args.tls_key and not args.tls_cert:
        raise HwnasError("--tls-key needs --tls-cert")
    for name in ("max_model_mb", "max_run_s", "client_timeout_s", "max_connections", "memory_mb"):
        if getattr(args, name) <= 0:
            raise HwnasError(f"--{name.replace('_', '-')} must be positive")
    config = AgentConfig(
        token=read_token(args.token_file), host=args.host, port=args.port,
        max_model_bytes=int(args.max_model_mb * 2**20), max_run_s=args.max_run_s,
        client_timeout_s=args.client_timeout_s, max_connections=args.max_connections, memory_mb=args.memory_mb,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None, tls_key=Path(args.tls_key) if args.tls_key else None,
    )  # fmt: skip
    if args.cache_dir:
        config.cache_dir = Path(args.cache_dir)
    try:
        server = AgentServer(config)
    except OSError as exc:
        raise HwnasError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    signal.signal(signal.SIGTERM, _stop)
    print(f"hwnas agent: listening on {server.url} (models in {config.cache_dir})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hwnas.devices.agent", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    sub = ap.add_subparsers(dest="command", required=True)
    # no abbreviations: '--token SECRET' must not pass as '--token-file SECRET'
    add_serve_arguments(
        sub.add_parser("serve", help="serve this machine's runtimes to 'remote' devices", allow_abbrev=False)
    )
    args = ap.parse_args(argv)
    try:
        return serve(args)
    except HwnasError as exc:
        print(f"hwnas agent: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

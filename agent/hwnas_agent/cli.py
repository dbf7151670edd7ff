"""``hwnas-agent``: serve measurements of ONNX models on this device (PROTOCOL.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from hwnas_agent import PROTOCOL, __version__


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"hwnas-agent: error: {message}\n")
        sys.exit(2)


def _int_in(low: int, high: int, example: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (e.g. {example})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high} (e.g. {example})")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (e.g. 30)") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"{value} is outside (0, 86400] seconds (e.g. 30)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hwnas-agent", description=f"Measure ONNX models sent by an hwnas search (protocol {PROTOCOL}).")
    p.add_argument("--token-file", required=True, help="file holding the shared token (the search machine sends it as a Bearer token)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; expose it through a TLS proxy, see README)"
    )
    p.add_argument("--port", type=_int_in(0, 65535, "8765"), default=8765, help="port (0: any free port; default 8765)")
    p.add_argument(
        "--provider", default="CPUExecutionProvider", help="default ONNX Runtime execution provider (default CPUExecutionProvider)"
    )
    p.add_argument("--threads", type=_int_in(1, 1024, "1"), default=1, help="default intra-op threads (default 1)")
    p.add_argument("--max-request-mb", type=_int_in(1, 65536, "256"), default=256, help="largest model accepted, MiB (default 256)")
    p.add_argument("--request-timeout", type=_positive_float, default=30.0, help="seconds a stalled request is kept open (default 30)")
    p.add_argument("--version", action="version", version=f"hwnas-agent {__version__} (protocol {PROTOCOL})")
    return p


class _Stop(Exception):
    pass


def _stop(signum: int, frame: Any) -> None:
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent until SIGTERM or Ctrl-C; 0 on a clean stop, 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        with open(args.token_file, "rb") as f:
            token = f.read().strip()
    except OSError as e:
        sys.stderr.write(f"hwnas-agent: error: cannot read --token-file {args.token_file}: {e.strerror or e}\n")
        return 2
    if not token:
        sys.stderr.write(f"hwnas-agent: error: --token-file {args.token_file} is empty; put a long random token in it\n")
        return 2
    import onnxruntime as ort

    from hwnas_agent.server import Config, make_server, url_of

    available = ort.get_available_providers()
    if args.provider not in available:
        sys.stderr.write(f"hwnas-agent: error: --provider {args.provider} is not available here; available: {', '.join(available)}\n")
        return 2
    config = Config(
        token=token,
        provider=args.provider,
        threads=args.threads,
        max_request_bytes=args.max_request_mb * 2**20,
        request_timeout_s=args.request_timeout,
    )
    try:
        server = make_server(config, args.host, args.port)
    except OSError as e:
        sys.stderr.write(f"hwnas-agent: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}\n")
        return 2
    signal.signal(signal.SIGTERM, _stop)
    print(f"hwnas-agent listening on {url_of(server)} (protocol {PROTOCOL})", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.stderr.write("hwnas-agent: listening beyond this machine over plain HTTP; put a TLS proxy in front (README)\n")
    try:
        server.serve_forever()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        server.server_close()
    sys.stderr.write("hwnas-agent: stopped\n")
    return 0

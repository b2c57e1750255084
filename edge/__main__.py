"""`python -m edge conf`: a site broker's mosquitto.conf for one site (docs/edge.md).

The site's identity at the cloud broker is made there, with
`python -m mqtt_auth add site <site> --robots r1,r2,...` (its password is printed once).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from edge.site import SiteBroker, write_site_conf


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("conf", help="render edge/mosquitto.conf for one site")
    conf.add_argument("--site", required=True, help="the site id (its username at the cloud)")
    conf.add_argument("--cloud", type=_address, required=True, help="the cloud broker, HOST:PORT")
    conf.add_argument(
        "--password-file", type=Path, required=True, help="the site's password at the cloud"
    )
    conf.add_argument("--cloud-cafile", type=Path, default=None, help="TLS: the cloud's CA")
    conf.add_argument("--port", type=int, default=None, help="the site broker's port (1884)")
    conf.add_argument("--bind", default=None, help="the listener's address (all)")
    conf.add_argument("--data-dir", type=Path, default=None, help="persistence location")
    conf.add_argument("--auth-dir", type=Path, default=None, help="the site's identity files")
    conf.add_argument("--pid-file", type=Path, default=None, help="for reloads (SIGHUP)")
    conf.add_argument("--out", type=Path, required=True, help="where to write it (mode 0600)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    host, port = args.cloud
    try:
        site = SiteBroker(
            site_id=args.site,
            cloud_host=host,
            cloud_port=port,
            site_password=args.password_file.read_text().strip(),
            port=args.port,
            bind=args.bind,
            data_dir=args.data_dir.resolve() if args.data_dir else None,
            auth_dir=args.auth_dir.resolve() if args.auth_dir else None,
            pid_file=args.pid_file.resolve() if args.pid_file else None,
            cloud_cafile=args.cloud_cafile.resolve() if args.cloud_cafile else None,
            run_as_root=os.geteuid() == 0 and args.data_dir is not None,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_site_conf(site, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

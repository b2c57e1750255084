"""One site's broker configuration: edge/mosquitto.conf with the site's parts filled in.

The template is the deployed file; only its placeholders (the site id, the cloud broker's
address, the site's password there), the places of its files and, for TLS, the commented
`#TLS# ` lines change. Mosquitto reads the password from this file (a bridge has no other
way), so the rendered file is written readable by its owner only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from telemetry.topics import is_valid_site_id

TEMPLATE = Path(__file__).with_name("mosquitto.conf")
TLS_MARK = "#TLS# "
# Where the template keeps its files (the container's layout).
_TEMPLATE_DATA = "/mosquitto/data/"
_TEMPLATE_AUTH = "/mosquitto/config/auth"
_TEMPLATE_CLOUD_CA = "/mosquitto/config/certs/cloud-ca.crt"


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteBroker:
    site_id: str
    cloud_host: str
    cloud_port: int
    site_password: str
    # None: the template's own places (the container's).
    port: int | None = None
    bind: str | None = None
    data_dir: Path | None = None
    auth_dir: Path | None = None
    pid_file: Path | None = None
    # The CA that signed the cloud broker's certificate: TLS to the cloud broker.
    cloud_cafile: Path | None = None
    # Mosquitto drops root to `mosquitto`, who could not write a data directory of ours.
    run_as_root: bool = False

    def __post_init__(self) -> None:
        if not is_valid_site_id(self.site_id):
            raise ValueError(f"a site id is 1-64 of [A-Za-z0-9_-], not {self.site_id!r}")
        if any(c.isspace() for c in self.site_password) or not self.site_password:
            # One token on a config line: Mosquitto would cut it at the first blank.
            raise ValueError("the site password must be non-empty and without blanks")

    @property
    def local_clientid(self) -> str:
        """The bridge's session on the site broker, which holds the queue."""
        return f"local.{self.site_id}"


def render_site_conf(site: SiteBroker, *, template: Path = TEMPLATE) -> str:
    text = template.read_text()
    text = (
        text.replace("@SITE@", site.site_id)
        .replace("@CLOUD_ADDRESS@", f"{site.cloud_host}:{site.cloud_port}")
        .replace("@SITE_PASSWORD@", site.site_password)
    )
    if site.port is not None:
        listener = f"listener {site.port}" + (f" {site.bind}" if site.bind else "")
        text = re.sub(r"^listener \d+$", listener, text, count=1, flags=re.M)
    if site.data_dir is not None:
        text = text.replace(
            f"persistence_location {_TEMPLATE_DATA}", f"persistence_location {site.data_dir}/"
        )
    if site.auth_dir is not None:
        text = text.replace(_TEMPLATE_AUTH, str(site.auth_dir))
    if site.cloud_cafile is not None:
        text = text.replace(TLS_MARK, "").replace(_TEMPLATE_CLOUD_CA, str(site.cloud_cafile))
    extra = []
    if site.pid_file is not None:
        extra.append(f"pid_file {site.pid_file}")
    if site.run_as_root:
        extra.append("user root")
    if extra:
        # Global options may not follow a bridge section's lines: before `connection`.
        text = text.replace("\nconnection ", "\n" + "\n".join(extra) + "\n\nconnection ", 1)
    unfilled = re.findall(r"@[A-Z_]+@", text)
    assert not unfilled, f"placeholders left in the site config: {unfilled}"
    return text


def write_site_conf(site: SiteBroker, path: Path) -> None:
    """Writes the rendered config, owner-readable only (it holds the site's password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render_site_conf(site))
    os.replace(tmp, path)

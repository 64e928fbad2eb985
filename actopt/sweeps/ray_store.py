"""Which tracking store Ray workers log to: the driver's, with relative paths made absolute, refused where
workers on other machines could not reach it, and the driver's MLflow settings to go with it."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

from actopt.errors import UserError, mask_credentials

# The driver's settings that workers need to log as it does: the store's credentials and TLS, and
# actopt's HTTP limits (not MLFLOW_RUN_ID and the like, which name the driver's own run).
CLIENT_VARIABLE_PREFIXES = ("MLFLOW_TRACKING_", "MLFLOW_HTTP_REQUEST_")
# Tracking URI schemes that are a path on this machine's disk.
FILE_SCHEMES = ("", "file", "sqlite")
# Tracking URIs that are a word, not a path: MLflow's names for a Databricks workspace.
NAMED_STORES = ("databricks", "databricks-uc", "uc")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cluster_is_local(address: str | None) -> bool:
    """Whether every Ray worker runs on this machine: a local instance (no address), or a head
    addressed on loopback (``127.0.0.1:6379``). Any other address may place tasks on other machines:
    another host, ``auto`` (the head is here, its nodes need not be), and every ``ray://`` client
    address, even on localhost, which is usually a port forwarded to a cluster elsewhere."""
    if not address or address == "local":
        return True
    if address.startswith("ray://") or ":" not in address:
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    return is_loopback(host)


def uri_host(uri: str) -> str | None:
    """The host a network tracking URI names (``http://h:5000``, ``postgresql://u@h/db``); None for a path."""
    parts = urlsplit(uri)
    if uri in NAMED_STORES:
        return uri
    if parts.scheme.split("+")[0] in FILE_SCHEMES:
        return None
    return parts.hostname or ""


def local_store_reason(uri: str) -> str | None:
    """Why workers on another machine could not use ``uri``, or None when they could."""
    host = uri_host(uri)
    if host is None:
        return "a file on this machine"
    if host == "" or is_loopback(host):
        return "reachable from this machine only"
    return None


def absolute_store_uri(uri: str) -> str:
    """``uri`` with a relative store path made absolute, so that workers, which do not run in the
    driver's folder, open the same store: ``sqlite:///mlflow.db`` -> ``sqlite:////here/mlflow.db``."""
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        prefix, _, path = uri.partition(":///")
        if not path or path.startswith(":memory:"):
            raise UserError(f"the tracking URI {mask_credentials(uri)} is an in-memory store that no other process "
                            "sees; point MLFLOW_TRACKING_URI at a file or a tracking server")
        return f"{prefix}:///{os.path.abspath(path)}" if not path.startswith("/") else uri
    if scheme == "file":
        return f"file://{os.path.abspath(parts.path)}"
    if scheme == "" and uri not in NAMED_STORES:
        return os.path.abspath(uri)
    return uri


def worker_tracking_uri(uri: str, address: str | None) -> str:
    """The tracking URI the workers log to: the driver's, with relative paths made absolute.
    A store that workers on other machines cannot reach is refused when they may run elsewhere."""
    reason = local_store_reason(uri)
    if reason and not cluster_is_local(address):
        raise UserError(
            f"the tracking URI {mask_credentials(uri)} is {reason}, but Ray may run tasks on other machines of the "
            f"cluster at {address}: set MLFLOW_TRACKING_URI to a tracking server every node reaches "
            "(deploy/mlflow-server.sh starts one on PostgreSQL), or join a cluster on this machine "
            "(--ray-address 127.0.0.1:PORT)")
    return absolute_store_uri(uri)


def worker_environment(uri: str) -> dict[str, str]:
    """What workers need of the driver's environment: the tracking URI, and its MLflow settings
    (HTTP limits, credentials), which the workers of a remote cluster would otherwise lack."""
    variables = {name: value for name, value in os.environ.items() if name.startswith(CLIENT_VARIABLE_PREFIXES)}
    return {**variables, "MLFLOW_TRACKING_URI": uri}

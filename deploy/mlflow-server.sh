#!/usr/bin/env bash
# A shared MLflow tracking server: runs, params and metrics in PostgreSQL, artifacts under one root
# that the server proxies, so clients and Ray workers need only the server's URL.
#
#   MLFLOW_BACKEND_STORE_URI=postgresql://mlflow:PASSWORD@127.0.0.1:5432/mlflow deploy/mlflow-server.sh
#
# Settings, from the environment:
#   MLFLOW_BACKEND_STORE_URI      the PostgreSQL database (required; `pip install 'actopt[server]'` adds its driver)
#   MLFLOW_ARTIFACTS_DESTINATION  the artifact root: a folder on a shared or local disk, s3://bucket/prefix, ...
#                                 (default: ./mlartifacts)
#   MLFLOW_SERVER_HOST            the address to listen on (default 127.0.0.1: this machine only)
#   MLFLOW_SERVER_PORT            (default 5000)
#   MLFLOW_SERVER_WORKERS         server processes (default 2)
#   MLFLOW_AUTH_ADMIN_PASSWORD    when set, every request needs HTTP basic auth (user "admin" with this
#                                 password, and users the admin adds); required to listen beyond loopback.
#                                 Users live in MLFLOW_AUTH_DATABASE_URI (default: the backend database).
#                                 Needs `pip install 'actopt[server]'` (mlflow[auth]); MLFLOW_FLASK_SERVER_SECRET_KEY
#                                 (default: random per start) signs its forms.
# Further arguments go to `mlflow server` as they are (e.g. --allowed-hosts mlflow.example.org).
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI to postgresql://USER:PASSWORD@HOST:PORT/DATABASE}"
host="${MLFLOW_SERVER_HOST:-127.0.0.1}"
port="${MLFLOW_SERVER_PORT:-5000}"
workers="${MLFLOW_SERVER_WORKERS:-2}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-./mlartifacts}"

case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://* | postgresql+*://*) ;;
  *) echo "mlflow-server.sh: MLFLOW_BACKEND_STORE_URI must be a postgresql:// URL, got ${MLFLOW_BACKEND_STORE_URI%%://*}://..." >&2
     exit 2 ;;
esac

auth=()
if [ -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
  # MLflow reads its basic-auth settings from a file; the admin's password comes from the environment.
  config="$(mktemp -t mlflow-auth-XXXXXX.ini)"
  trap 'rm -f "$config"' EXIT
  printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = %s\nadmin_username = admin\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n' \
    "${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}" > "$config"
  export MLFLOW_AUTH_CONFIG_PATH="$config"
  # The key that signs the login forms' CSRF tokens: a fresh one per start unless given (several
  # servers behind one address must share it).
  if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  auth=(--app-name basic-auth)
else
  case "$host" in
    127.* | localhost | ::1) ;;
    *) echo "mlflow-server.sh: listening on $host without authentication would let anyone on the network write" \
            "and delete runs; set MLFLOW_AUTH_ADMIN_PASSWORD (or put the server behind an authenticating proxy" \
            "and listen on 127.0.0.1)" >&2
       exit 2 ;;
  esac
fi

echo "mlflow-server.sh: http://$host:$port, artifacts in $artifacts${auth:+, basic auth on}" >&2
mlflow server --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" --artifacts-destination "$artifacts" \
  --host "$host" --port "$port" --workers "$workers" "${auth[@]}" "$@" &
server=$!
# Not exec: the auth file must outlive the server's start. So a SIGTERM to this script is passed on.
trap 'kill -TERM "$server" 2>/dev/null || true' TERM INT
status=0
wait "$server" || status=$?
wait "$server" 2>/dev/null || true  # after a trapped signal, until the server has stopped
exit "$status"

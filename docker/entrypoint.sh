#!/bin/sh
# ssh-auth's container entrypoint: settings from the environment, the service, then sshd.
# SIGTERM (docker stop) stops both and exits 0. Every path is overridable for the tests.
set -eu
BIN=${SSH_AUTH_BIN:-/opt/ssh-auth/bin}
CONFIG=${SSH_AUTH_CONFIG:-/etc/ssh-auth/ssh-auth.conf}
RUN_AS=${SSH_AUTH_RUN_AS:-ssh-auth}

# docker stop at any moment (also while starting): end what has started, exit 0. As PID 1 the
# shell would otherwise ignore SIGTERM until docker gives up and kills it.
stop() {
    for pid in ${sshd:-} ${service:-}; do kill -TERM "$pid" 2>/dev/null || true; done
    wait
    exit 0
}
trap stop TERM INT

setting() {  # one setting, checked and written atomically by the admin command
    "$BIN/ssh-auth" config set --config "$CONFIG" "$1" "$2" >/dev/null
}
[ -z "${API_BASE_URL:-}" ] || setting api_base_url "$API_BASE_URL"
[ -z "${PUBLIC_URL:-}" ] || setting public_url "$PUBLIC_URL"
[ -z "${DATA_RESIDENCY:-}" ] || setting data_residency "$DATA_RESIDENCY"
if [ -f /run/secrets/tru.json ]; then  # the real API's credentials, mounted as a secret
    install -m 600 -o "$RUN_AS" /run/secrets/tru.json /etc/ssh-auth/tru.json
fi
[ -z "${TEST_PHONE:-}" ] || "$BIN/ssh-auth" register-user --config "$CONFIG" "${TEST_USER:-test}" "$TEST_PHONE"

SOCKET=$(sed -n 's/^[[:space:]]*socket[[:space:]]*=[[:space:]]*//p' "$CONFIG" | tail -n 1)
SOCKET=${SOCKET:-/run/ssh-auth/ssh-auth.sock}
mkdir -p /run/sshd "$(dirname "$SOCKET")"
[ "$RUN_AS" = root ] || chown "$RUN_AS" "$(dirname "$SOCKET")"
[ "${GENERATE_HOST_KEYS:-yes}" = no ] || ssh-keygen -A >/dev/null

if [ "$RUN_AS" = root ]; then
    "$BIN/ssh-auth-server" --config "$CONFIG" &
else
    runuser -u "$RUN_AS" -- "$BIN/ssh-auth-server" --config "$CONFIG" &
fi
service=$!
tries=0
until [ -S "$SOCKET" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 150 ] || ! kill -0 "$service" 2>/dev/null; then
        echo "ssh-auth-entrypoint: ssh-auth-server did not start (see above)" >&2
        exit 1
    fi
    sleep 0.1
done

# shellcheck disable=SC2086 # SSHD_OPTIONS is a list of words on purpose
/usr/sbin/sshd -D -e ${SSHD_OPTIONS:-} &
sshd=$!
wait "$sshd" || status=$?
kill -TERM "$service" 2>/dev/null || true
wait "$service" 2>/dev/null || true
exit "${status:-0}"

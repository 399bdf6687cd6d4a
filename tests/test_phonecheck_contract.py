"""The API client against the emulator as a real server: the whole PhoneCheck contract."""

import json
import socket
import subprocess
import threading
import time

import pytest
import requests

from harness.emulator import VENV_BIN, Emulator, open_on_phone, write_tru_json
from harness.processes import free_port
from webserver.config import ConfigError, load_credentials
from webserver.phonecheck import ApiUnreachable, PhoneCheckClient, PhoneCheckError, base_url_for

NUMBER = "447700900123"
WEBHOOK = "https://ssh.example.test/complete-check"


def test_right_sim_completes_with_match(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    assert check.status == "ACCEPTED"
    assert check.check_url == f"{emulator.url}/phone_check/v0.2/checks/{check.check_id}/redirect"
    redirect = open_on_phone(check.check_url, sim=NUMBER)
    assert redirect["location"].startswith(WEBHOOK + "?check_id=")
    assert redirect["check_id"] == check.check_id
    assert client.get_check(check.check_id).status == "PENDING"
    done = client.patch_check(check.check_id, redirect["code"])
    assert (done.status, done.match) == ("COMPLETED", True)
    assert client.get_check(check.check_id).match is True


def test_wrong_sim_completes_without_match(client):
    check = client.create_check(NUMBER, WEBHOOK)
    redirect = open_on_phone(check.check_url, sim="447700900999")
    done = client.patch_check(check.check_id, redirect["code"])
    assert (done.status, done.match) == ("COMPLETED", False)


@pytest.mark.parametrize("number, match", [("447700900124", True), ("447700900123", False)])
def test_sandbox_rule_decides_the_sim_when_none_is_given(client, number, match):
    check = client.create_check(number, WEBHOOK)
    redirect = open_on_phone(check.check_url)
    assert client.patch_check(check.check_id, redirect["code"]).match is match


def test_wrong_code_completes_without_match_and_a_second_patch_is_404(client):
    check = client.create_check(NUMBER, WEBHOOK)
    open_on_phone(check.check_url, sim=NUMBER)
    assert client.patch_check(check.check_id, "not-the-code").match is False
    with pytest.raises(PhoneCheckError) as refused:
        client.patch_check(check.check_id, "not-the-code")
    assert refused.value.status == 404
    assert refused.value.problem_type.endswith("check_not_found")


def test_never_opened_check_expires_after_ttl(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    emulator.advance(119)
    assert client.get_check(check.check_id).status == "ACCEPTED"
    emulator.advance(1)
    assert client.get_check(check.check_id).status == "EXPIRED"


def test_opened_check_expires_too_and_then_cannot_be_patched(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    redirect = open_on_phone(check.check_url, sim=NUMBER)
    emulator.advance(120)
    assert client.get_check(check.check_id).status == "EXPIRED"
    with pytest.raises(PhoneCheckError) as refused:
        client.patch_check(check.check_id, redirect["code"])
    assert refused.value.status == 404


def test_real_time_ttl_expires_a_check(tmp_path, credentials):
    with Emulator(tmp_path / "short.log", "--ttl", "1") as short:
        client = PhoneCheckClient(credentials, short.url)
        check = client.create_check(NUMBER, WEBHOOK)
        assert check.ttl == 1
        threading.Event().wait(1.2)
        assert client.get_check(check.check_id).status == "EXPIRED"


@pytest.mark.parametrize(
    "how, params, error_code",
    [
        ("sandbox number ending 99", {}, "mno_not_supported"),
        ("phone on Wi-Fi", {"network_error": "not_mobile_ip"}, "not_mobile_ip"),
        ("SIM of another number", {"network_error": "ip_msisdn_mismatch"}, "ip_msisdn_mismatch"),
    ],
)
def test_network_error_redirects_with_error_and_check_is_error(client, how, params, error_code):
    number = "447700900199" if not params else NUMBER
    check = client.create_check(number, WEBHOOK)
    redirect = open_on_phone(check.check_url, **params)
    assert redirect["error"] == error_code, how
    assert redirect["error_description"]
    assert "code" not in redirect
    got = client.get_check(check.check_id)
    assert (got.status, got.error_code) == ("ERROR", error_code)


def test_bad_credentials_are_a_401_problem(emulator, tmp_path):
    wrong = load_credentials(str(write_tru_json(tmp_path / "tru.json", client_secret="wrong")))
    with pytest.raises(PhoneCheckError) as refused:
        PhoneCheckClient(wrong, emulator.url).create_check(NUMBER, WEBHOOK)
    assert refused.value.status == 401
    assert not isinstance(refused.value, ApiUnreachable)
    assert "wrong" not in str(refused.value)


@pytest.mark.parametrize("number", ["+447700900123", "07700 900123", "12", "4477009001234567", ""])
def test_bad_phone_number_is_phone_format_invalid(client, number):
    with pytest.raises(PhoneCheckError) as refused:
        client.create_check(number, WEBHOOK)
    assert refused.value.status == 400
    assert refused.value.problem_type.endswith("phone_format_invalid")


def test_unknown_check_id_is_check_not_found(client):
    with pytest.raises(PhoneCheckError) as refused:
        client.get_check("00000000-0000-0000-0000-000000000000")
    assert (refused.value.status, refused.value.problem_type.rsplit("#", 1)[1]) == (
        404,
        "check_not_found",
    )


def test_double_slash_get_of_the_tutorial_is_answered(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    response = requests.get(
        f"{emulator.url}/phone_check/v0.2/checks//{check.check_id}",
        headers={"Authorization": f"Bearer {client.token()}"},
        allow_redirects=False,
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["check_id"] == check.check_id


def test_patch_before_the_device_opened_the_url_is_404(client):
    check = client.create_check(NUMBER, WEBHOOK)
    with pytest.raises(PhoneCheckError) as refused:
        client.patch_check(check.check_id, "anything")
    assert refused.value.status == 404


def test_patch_needs_json_patch(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    response = requests.patch(
        f"{emulator.url}/phone_check/v0.2/checks/{check.check_id}",
        json={"code": "x"},
        timeout=5,
        headers={"Authorization": f"Bearer {client.token()}"},
    )
    assert response.status_code == 415
    assert response.headers["Content-Type"] == "application/problem+json"


def test_answers_carry_rate_limit_headers_and_problems_are_problem_json(client, emulator):
    token = client.token()
    response = requests.get(
        f"{emulator.url}/phone_check/v0.2/checks/nope",
        timeout=5,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(response.headers)
    assert response.headers["Content-Type"] == "application/problem+json"
    assert set(response.json()) == {"type", "title", "status", "detail"}


def test_jwks_publishes_an_rsa_key_with_kid(private_client, private_emulator):
    (key,) = private_client.jwks()["keys"]
    assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert key["kid"] and key["n"] and key["e"]
    new_kid = private_emulator.control("rotate-key")["kid"]
    assert private_client.jwks()["keys"][0]["kid"] == new_kid != key["kid"]


def test_twenty_creates_cost_one_token_request(client, emulator):
    threads = [threading.Thread(target=client.create_check, args=(NUMBER, WEBHOOK)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert emulator.calls() == {"token": 1, "create": 20}


def test_a_revoked_token_is_replaced_once(client, emulator):
    client.create_check(NUMBER, WEBHOOK)
    emulator.reset()  # the emulator forgets every token it issued
    client.create_check(NUMBER, WEBHOOK)
    assert emulator.calls() == {"token": 1, "create": 2}


# (endpoint, mode, options, call, expected error class, words in the message)
FAULTS = [
    ("create", "status", {"status": 500}, "create", ApiUnreachable, "HTTP 500"),
    ("create", "status", {"status": 503}, "create", ApiUnreachable, "HTTP 503"),
    ("create", "status", {"status": 402}, "create", PhoneCheckError, "HTTP 402"),
    ("create", "status", {"status": 429, "retry_after": 30}, "create", PhoneCheckError, "HTTP 429"),
    ("create", "timeout", {"seconds": 3}, "create", ApiUnreachable, "did not answer in time"),
    ("create", "garbage", {}, "create", PhoneCheckError, "not JSON"),
    ("create", "partial", {}, "create", PhoneCheckError, "no check_id"),
    ("create", "close", {}, "create", ApiUnreachable, "unreachable"),
    ("token", "status", {"status": 500}, "create", ApiUnreachable, "HTTP 500"),
    ("token", "status", {"status": 401}, "create", PhoneCheckError, "HTTP 401"),
    ("token", "garbage", {}, "create", PhoneCheckError, "not JSON"),
    ("token", "partial", {}, "create", PhoneCheckError, "malformed token"),
    ("get", "status", {"status": 500, "count": 2}, "get", ApiUnreachable, "HTTP 500"),
    ("get", "timeout", {"seconds": 3, "count": 2}, "get", ApiUnreachable, "in time"),
    ("get", "garbage", {}, "get", PhoneCheckError, "not JSON"),
    ("get", "partial", {}, "get", PhoneCheckError, "no check_id"),
    ("patch", "status", {"status": 502}, "patch", ApiUnreachable, "HTTP 502"),
    ("patch", "close", {}, "patch", ApiUnreachable, "unreachable"),
    ("jwks", "status", {"status": 500, "count": 2}, "jwks", ApiUnreachable, "HTTP 500"),
    ("jwks", "partial", {}, "jwks", PhoneCheckError, "no keys"),
    ("any", "close", {}, "create", ApiUnreachable, "unreachable"),
]


@pytest.mark.parametrize(
    "endpoint, mode, options, call, error, words",
    FAULTS,
    ids=[f"{f[0]}-{f[1]}-{f[2].get('status', '')}" for f in FAULTS],
)
def test_each_fault_is_seen_as_the_right_error(
    client, emulator, endpoint, mode, options, call, error, words
):
    check = client.create_check(NUMBER, WEBHOOK) if call in ("get", "patch") else None
    if call == "patch":
        open_on_phone(check.check_url, sim=NUMBER)
    if endpoint == "token":
        client.forget_token()
    emulator.fault(endpoint, mode, **options)
    calls = {
        "create": lambda: client.create_check(NUMBER, WEBHOOK),
        "get": lambda: client.get_check(check.check_id),
        "patch": lambda: client.patch_check(check.check_id, "code"),
        "jwks": client.jwks,
    }
    with pytest.raises(error) as raised:
        calls[call]()
    assert type(raised.value) is error
    assert words in str(raised.value)
    if options.get("status") == 429:
        assert raised.value.retry_after == 30


def test_get_is_retried_once_after_a_5xx(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    emulator.fault("get", "status", status=503)
    assert client.get_check(check.check_id).status == "ACCEPTED"
    assert emulator.calls()["get"] == 2


def test_get_waits_out_a_short_retry_after(client, emulator):
    check = client.create_check(NUMBER, WEBHOOK)
    emulator.fault("get", "status", status=429, retry_after=1)
    assert client.get_check(check.check_id).status == "ACCEPTED"
    assert emulator.calls()["get"] == 2


def test_create_is_never_retried(client, emulator):
    emulator.fault("create", "status", status=500)
    with pytest.raises(ApiUnreachable):
        client.create_check(NUMBER, WEBHOOK)
    assert emulator.calls()["create"] == 1


def test_unreachable_api_is_api_unreachable(credentials):
    client = PhoneCheckClient(credentials, f"http://127.0.0.1:{free_port()}", timeout=(1, 1))
    with pytest.raises(ApiUnreachable, match="connection refused"):
        client.create_check(NUMBER, WEBHOOK)


def test_the_secret_and_token_never_show(client, credentials):
    client.create_check(NUMBER, WEBHOOK)
    assert credentials.client_secret not in repr(credentials) + repr(client)
    assert client.token() not in repr(client)


@pytest.mark.parametrize(
    "residency, url",
    [
        ("eu", "https://eu.api.idlayr.com"),
        ("in", "https://in.api.idlayr.com"),
        ("us", "https://us.api.idlayr.com"),
    ],
)
def test_base_url_follows_data_residency(residency, url):
    assert base_url_for(residency) == url


def test_unknown_data_residency_is_refused():
    with pytest.raises(ValueError, match="eu, in, us"):
        base_url_for("mars")


@pytest.mark.parametrize(
    "content, mode, message",
    [
        ("{not json", 0o600, "is not valid JSON"),
        ("[]", 0o600, "has no credentials[0]"),
        (json.dumps({"credentials": []}), 0o600, "has no credentials[0]"),
        (json.dumps({"credentials": [{"client_id": "x"}]}), 0o600, "needs client_id and client_secret"),
        (
            json.dumps({"credentials": [{"client_id": "x", "client_secret": "y"}]}),
            0o644,
            "is readable by other users (mode 0644): chmod 600",
        ),
    ],
)
def test_malformed_tru_json_gets_a_clear_message(tmp_path, content, mode, message):
    path = tmp_path / "tru.json"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(
        ConfigError,
        match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]"),
    ):
        load_credentials(str(path))


def test_missing_tru_json_gets_a_clear_message(tmp_path):
    with pytest.raises(ConfigError, match="cannot read credentials .*No such file"):
        load_credentials(str(tmp_path / "absent.json"))


def test_emulator_phone_command_prints_each_hop(client, emulator):
    check = client.create_check(NUMBER, f"{emulator.url}/_emulator/stats")
    result = subprocess.run(
        [str(VENV_BIN / "phonecheck-emulator"), "phone", check.check_url, "--sim", NUMBER],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    hops = result.stdout.splitlines()
    assert hops[0].startswith(f"phone: GET {check.check_url}?sim={NUMBER} → 302 → ")
    assert hops[1].startswith(f"phone: GET {emulator.url}/_emulator/stats?check_id=")
    assert client.get_check(check.check_id).status == "PENDING"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"endpoint": "nope", "mode": "status"}, "endpoint must be one of"),
        ({"endpoint": "create", "mode": "explode"}, "mode must be one of"),
        ({"endpoint": "create", "mode": "status", "status": 42}, "status must be an HTTP status"),
        ({"endpoint": "create", "mode": "status", "colour": "red"}, "unknown field(s): colour"),
    ],
)
def test_emulator_refuses_bad_fault_requests(emulator, body, message):
    response = requests.post(emulator.url + "/_emulator/faults", json=body, timeout=5)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_waiting_for_another_requests_token_never_counts_as_the_api_being_down(emulator, credentials):
    # failmode = safe lets a login in when the API is down: a slow token fetch in another thread
    # (which anyone can provoke by logging in at the same moment) must not look like that.
    client = PhoneCheckClient(credentials, emulator.url, timeout=(3.0, 10.0))
    emulator.fault("token", "timeout", seconds=3)
    first = threading.Thread(target=client.create_check, args=("447700900123", None, 8))
    first.start()
    time.sleep(0.5)
    try:
        with pytest.raises(ApiUnreachable) as waited:
            client.create_check("447700900123", None, within=1.0)
    finally:
        first.join()
    assert (str(waited.value), waited.value.down) == (
        "another request for an access token is still running",
        False,
    )


@pytest.mark.parametrize(
    "fault, down",
    [
        ({"mode": "status", "status": 503}, True),
        ({"mode": "timeout", "seconds": 3}, False),
        ({"mode": "close"}, False),
    ],
    ids=["5xx: down", "read timeout: not down", "connection dropped: not down"],
)
def test_only_what_says_the_api_is_down_counts_as_down(emulator, credentials, fault, down):
    client = PhoneCheckClient(credentials, emulator.url, timeout=(1.0, 1.5))
    client.token()
    emulator.fault("create", **fault)
    with pytest.raises(ApiUnreachable) as failed:
        client.create_check("447700900123", None, within=8)
    assert failed.value.down is down


def test_a_refused_connection_counts_as_down(credentials):
    client = PhoneCheckClient(credentials, f"http://127.0.0.1:{free_port()}", timeout=(1.0, 1.5))
    with pytest.raises(ApiUnreachable) as failed:
        client.create_check("447700900123", None, within=8)
    assert (str(failed.value), failed.value.down) == (
        "PhoneCheck API unreachable: connection refused",
        True,
    )


@pytest.mark.parametrize("within, down", [(8, True), (0.5, False)], ids=["whole connect", "cut short"])
def test_a_connect_timeout_counts_as_down_only_with_the_whole_connect_timeout(credentials, within, down):
    # A listener whose accept queue is full drops new SYNs: connects time out, the API "is down";
    # but a connect cut short by the login's own deadline (a slow token before it) proves nothing.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as full:
        port = full.getsockname()[1]
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        client = PhoneCheckClient(credentials, f"http://127.0.0.1:{port}", timeout=(1.0, 1.5))
        try:
            with pytest.raises(ApiUnreachable) as failed:
                client.create_check("447700900123", None, within=within)
        finally:
            for filler in fillers:
                filler.close()
    assert (str(failed.value), failed.value.down) == (
        "PhoneCheck API did not accept a connection in time",
        down,
    )

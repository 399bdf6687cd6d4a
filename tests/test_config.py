"""ssh-auth.conf: every setting parsed and validated; mistakes named by file, line and key."""

import pytest

from webserver.config import ConfigError, Settings
from webserver.registry import Registration, Registry, RegistryUnavailable, parse_entry

BASE = "public_url = https://ssh.example.com\n"


def test_defaults_match_the_design_table():
    settings = Settings.parse(BASE)
    assert settings.webhook_url == "https://ssh.example.com/complete-check"
    assert (settings.listen, settings.socket, settings.credentials) == (
        ("127.0.0.1", 8080),
        "/run/ssh-auth/ssh-auth.sock",
        "/etc/ssh-auth/tru.json",
    )
    assert (settings.failmode, settings.unregistered, settings.max_checks_per_user) == (
        "secure",
        "deny",
        5,
    )
    assert (
        settings.connection_reuse_seconds,
        settings.require_signature,
        settings.confirm_on_phone,
        settings.number_match,
    ) == (3600, True, True, False)
    assert (settings.ttl, settings.poll_interval, settings.tunnel) == (120, 5.0, "none")


def test_every_key_and_the_tutorials_lines_are_accepted():
    text = (
        BASE
        + """# a comment
header=Welcome
listen = 0.0.0.0:9000
socket = /run/x.sock
credentials = /etc/x/tru.json
api_base_url = http://127.0.0.1:8081
data_residency = us
failmode = safe
unregistered = allow
exempt_users = root, !bob
exempt_groups = breakglass
max_checks_per_user = 9
connection_reuse_seconds = 0
require_signature = false
confirm_on_phone = yes
number_match = yes
ttl = 60
poll_interval = 2.5
ngrok_authtoken = secret
audit_log = /var/log/ssh-auth.jsonl
user=alice:447700900123
"""
    )
    settings = Settings.parse(text)
    assert settings.exempt_users == ("root", "!bob")
    assert (settings.failmode, settings.number_match, settings.poll_interval) == ("safe", True, 2.5)
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    "line, message",
    [
        ("colour = blue", "line 2: unknown setting 'colour'"),
        ("failmode = open", "line 2: failmode must be one of secure, safe"),
        ("ttl = 5", "line 2: ttl must be at least 10"),
        ("ttl = 4000", "line 2: ttl must be at most 3000"),
        ("ttl = soon", "line 2: ttl must be a number"),
        ("listen = 8080", "line 2: listen must be HOST:PORT"),
        ("require_signature = maybe", "line 2: require_signature must be true or false"),
        ("socket = relative.sock", "line 2: socket must be an absolute path"),
        ("poll_interval = nan", "line 2: poll_interval must be a finite number"),
        ("poll_interval = inf", "line 2: poll_interval must be a finite number"),
        ("max_checks_per_minute = 0", "line 2: max_checks_per_minute must be at least 1"),
        ("public_url = ftp://x", "line 1"),
        ("just words", "line 2: expected 'key = value'"),
    ],
)
def test_mistakes_are_named(line, message):
    text = BASE + line + "\n" if not line.startswith("public_url") else line + "\n"
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Settings.parse(text, "/etc/ssh-auth/ssh-auth.conf")


def test_number_match_without_the_confirmation_page_is_refused():
    # Without the page nobody picks the number: it would be shown in the terminal and ignored.
    with pytest.raises(ConfigError, match="number_match = true needs confirm_on_phone = true"):
        Settings.parse(BASE + "number_match = true\nconfirm_on_phone = false\n")


def test_public_url_is_required_without_a_tunnel():
    with pytest.raises(ConfigError, match="public_url is required unless tunnel = ngrok"):
        Settings.parse("ttl = 60\n")


@pytest.mark.parametrize(
    "line, entry",
    [
        ("user=alice:447700900123", ("alice", "447700900123")),
        ("user = bob : +447700900456", ("bob", "447700900456")),
        ("user=alice:12", None),
        ("user=al;ice:447700900123", None),
        ("user=$(id):447700900123", None),
        ("user=alice", None),
        ("header=x", None),
    ],
)
def test_registry_lines(line, entry):
    assert parse_entry(line) == entry


def test_registry_reloads_on_change_and_marks_malformed_entries(tmp_path):
    path = tmp_path / "ssh-auth.conf"
    path.write_text(BASE + "user=alice:447700900123\nuser=bob:not-a-number\n")
    registry = Registry(str(path))
    assert registry.lookup("alice") == Registration("447700900123")
    # A typo in bob's number must not make him "unregistered" (unregistered = allow lets in).
    assert registry.lookup("bob") == Registration(None, None, malformed=True)
    assert registry.lookup("carol") == Registration()
    # Nor a line with no ':' at all: a space, a ';' or no number where the ':' should be.
    typos = ("user=carol 447700900123", "user = carol;447700900123", "user=carol", "user=carol#x")
    for typo in typos:
        path.write_text(BASE + typo + "\n")
        assert registry.lookup("carol") == Registration(None, None, malformed=True), typo
    path.write_text(BASE + "user=bob:447700900456\n")
    assert (registry.lookup("alice").phone, registry.lookup("bob")) == (
        None,
        Registration("447700900456"),
    )


def test_a_registry_that_cannot_be_read_is_an_error_not_an_empty_registry(tmp_path):
    path = tmp_path / "ssh-auth.conf"
    path.write_text(BASE + "user=alice:447700900123\n")
    registry = Registry(str(path))
    assert registry.lookup("alice").phone == "447700900123"
    path.unlink()
    with pytest.raises(RegistryUnavailable, match=f"cannot read {path}: No such file or directory"):
        registry.lookup("carol")


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://eu.api.idlayr.com", True),
        ("http://127.0.0.1:8081", True),
        ("http://localhost:8081", True),
        ("http://[::1]:8081", True),
        ("http://emulator:8081", False),
        ("http://10.0.0.5:8081", False),
    ],
)
def test_a_plain_http_api_is_refused_unless_loopback_or_explicitly_insecure(url, allowed):
    text = f"{BASE}api_base_url = {url}\n"
    if allowed:
        assert Settings.parse(text).api_base_url == url
    else:
        with pytest.raises(ConfigError, match="is plain HTTP to another host"):
            Settings.parse(text, "/etc/ssh-auth/ssh-auth.conf")
        relaxed = Settings.parse(text + "insecure_api_base_url = true\n")
        assert (relaxed.api_base_url, relaxed.insecure_api_base_url) == (url, True)

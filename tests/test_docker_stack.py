"""The README's Docker flow, for real (`make docker-test`): its compose lines run as written
against a Docker daemon, its ssh line logs in with the password, and the printed URL is opened
from the host, by a scripted browser and by headless Chromium, through the emulator's phone page
and the confirmation page. `down` stops both services within 10 s and nothing is left."""

import json
import re
import socket
import subprocess
import time

import pytest

from emulator.phone import Phone, page_forms, page_text
from harness.browser import PhoneBrowser
from harness.deployment import REPO, Session
from harness.docker import PUBLISHED, DockerFlow, readme_lines, ssh_words

pytestmark = pytest.mark.docker  # left out of `make test`; `make docker-test` runs it

ARTIFACTS = REPO / "test-artifacts" / "docker"
LINES = readme_lines()
UP = [line for line in LINES if line.startswith("docker ") and " up " in line]
DOWN = [line for line in LINES if line.startswith("docker ") and line.endswith(" down")]
SSH = next(line for line in LINES if line.startswith("ssh "))
PASSWORD = re.search(r"password: (\S+)", SSH).group(1)
# No person at the keyboard: no host-key prompt, nothing written to known_hosts, none of root's
# ssh config or keys. The README's own words follow as written.
UNATTENDED = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
UNATTENDED += ["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "PubkeyAuthentication=no"]
COMMAND = "echo hello from the container; id -un"
OUTPUT = b"hello from the container\ntest\n"
URL = re.compile(r"https?://\S+/phone_check/v0\.2/checks/[0-9a-f-]{36}/redirect")
NO_MATCH = "ssh-auth: No match: the phone that answered is not using the registered SIM. Access denied."
THIS_SIM, ANOTHER_SIM = "This SIM (the registered number)", "Another SIM"


def host_links() -> list[str]:
    """The host's network interfaces, by name."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(": ")[1].split("@")[0] for line in out.splitlines())


def taken(port: int) -> bool:
    """True when something on the host listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def flow():
    links = host_links()
    flow = DockerFlow(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        flow.prepare()
        yield flow
    finally:
        if any(flow.project_objects().values()):
            flow.save_logs()  # a failed run: keep what the stack said
        problems = flow.close()
        (ARTIFACTS / "timings.json").write_text(json.dumps(flow.timings, indent=2) + "\n")
    assert problems == []
    # A dockerd in the host's network would have made docker0; ours never did (--bridge=none).
    assert "docker0" not in set(host_links()) - set(links)
    assert [port for port in PUBLISHED if taken(port)] == []


@pytest.fixture(scope="module")
def stack(flow):
    """The README's `up` line(s), run as written."""
    with flow.timed("compose up"):
        for line in UP:
            flow.shell(line)
    return flow


@pytest.fixture
def log_in(stack):
    """Start the README's ssh line, the password typed by sshpass, running COMMAND."""
    sessions: list[Session] = []

    def start() -> Session:
        words = ssh_words(SSH)
        argv = ["sshpass", "-e", words[0], *UNATTENDED, *words[1:], COMMAND]
        sessions.append(Session(argv, env={**stack.env(), "SSHPASS": PASSWORD}))
        return sessions[-1]

    yield start
    for session in sessions:
        session.kill()


def printed_url(session: Session) -> str:
    """The check URL the login printed under the QR."""
    return session.wait_for(URL, timeout=30).group(0)


def scripted_browser(url: str, sim: str, transcript: str):
    """Open the URL from the host, press the SIM button on the emulator's phone page, then
    Approve on the confirmation page; returns (confirmation page text, result page text)."""
    hops: list[str] = []
    phone = Phone(say=hops.append)
    try:
        page = phone.session.get(url, timeout=10)  # the redirects, as a browser follows them
        assert "Which SIM is this phone using?" in page_text(page.text), page.text
        choice = "this" if sim == THIS_SIM else "other"
        page = phone.submit(page, page_forms(page.text)[0], ("sim", choice))
        confirmation = page_text(page.text)
        result = page_text(phone.answer(page, "approve").text)
    finally:
        (ARTIFACTS / transcript).write_text("\n".join(hops) + "\n")
    return confirmation, result


def test_the_printed_url_opens_from_the_host_and_approving_runs_the_command(log_in):
    session = log_in()
    url = printed_url(session)
    assert url.startswith("http://127.0.0.1:8081/"), url
    confirmation, result = scripted_browser(url, THIS_SIM, "phone-this-sim.txt")
    for shown in ("Approve this SSH login?", "Account test", f"Command {COMMAND}"):
        assert shown in confirmation, confirmation
    assert "Approved" in result, result
    status, out, err = session.finish()
    (ARTIFACTS / "ssh-approved.txt").write_text(err + out.decode(errors="replace"))
    assert (status, out) == (0, OUTPUT), err
    assert err.rstrip().endswith("ssh-auth: approved on your phone."), err


def test_another_sim_is_denied_with_the_no_match_line(log_in):
    session = log_in()
    confirmation, result = scripted_browser(printed_url(session), ANOTHER_SIM, "phone-another-sim.txt")
    assert "Approve this SSH login?" in confirmation, confirmation
    assert "No match" in result, result
    status, out, err = session.finish()
    (ARTIFACTS / "ssh-another-sim.txt").write_text(err)
    assert (status, out, err.rstrip().splitlines()[-1]) == (1, b"", NO_MATCH), err


def test_chromium_on_the_host_walks_the_pages_and_approves(log_in):
    session = log_in()
    url = printed_url(session)
    browser = PhoneBrowser()
    try:
        browser.open(url)
        assert "Which SIM is this phone using?" in browser.text()
        browser.driver.save_screenshot(str(ARTIFACTS / "1-phone-page.png"))
        browser.press(THIS_SIM)
        page = browser.text()
        for shown in ("Approve this SSH login?", "test", COMMAND, "Approve"):
            assert shown in page, page
        assert browser.driver.current_url.startswith("http://127.0.0.1:8080/complete-check")
        browser.driver.save_screenshot(str(ARTIFACTS / "2-confirmation-page.png"))
        browser.press("Approve")
        assert "Approved" in browser.text(), browser.text()
        browser.driver.save_screenshot(str(ARTIFACTS / "3-approved-page.png"))
    finally:
        browser.quit()
    status, out, err = session.finish()
    assert (status, out) == (0, OUTPUT), err


def test_the_readmes_down_stops_both_services_cleanly_within_10_s(stack):
    stack.save_logs()
    since = time.time()
    with stack.timed("compose down"):
        for line in DOWN:
            stack.shell(line)
    assert stack.timings["compose down"] < 10
    assert stack.exit_codes(since) == {"ssh-auth-ssh-1": "0", "ssh-auth-emulator-1": "0"}
    assert stack.project_objects() == {"containers": [], "networks": []}

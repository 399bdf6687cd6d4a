"""The simulated phone and person: open the check URL as a SIM, follow redirects, answer the page."""

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin

import requests

MAX_HOPS = 10
CHECK_PATH = "/phone_check/"


@dataclass
class Form:
    """One HTML form: where it posts, its hidden fields and its submit buttons."""

    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)


class _FormParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[Form] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower()))
        elif self.forms and tag == "input" and a.get("type") == "hidden":
            self.forms[-1].fields[a.get("name", "")] = a.get("value", "")
        elif self.forms and (tag == "button" or (tag == "input" and a.get("type") == "submit")):
            if a.get("name"):
                self.forms[-1].buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag):
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def page_text(html: str) -> str:
    """The visible text of a page on one line."""
    parser = _FormParser()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.text)).strip()


def page_forms(html: str) -> list[Form]:
    """Every form on a page."""
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class PhoneError(Exception):
    """The phone could not do what it was asked; the message says why."""


class Phone:
    """A phone on mobile data with a person holding it; prints each hop it takes."""

    def __init__(self, say=print, timeout: float = 10.0):
        self.say = say
        self.timeout = timeout
        self.session = requests.Session()

    def scan(
        self, check_url: str, sim: str | None = None, network_error: str | None = None
    ) -> requests.Response:
        """Open the check URL (as `sim`, if given) and follow every redirect like a browser.

        A short URL (an auth-time QR's /q/...) is followed to the check URL first: the network
        asks for the SIM on the check URL itself.
        """
        if CHECK_PATH not in check_url:
            first = self.session.get(check_url, allow_redirects=False, timeout=self.timeout)
            self._report(first)
            if not first.is_redirect:
                return first
            check_url = urljoin(check_url, first.headers["Location"])
        params = {k: v for k, v in (("sim", sim), ("network_error", network_error)) if v}
        url = check_url + (("&" if "?" in check_url else "?") + urlencode(params) if params else "")
        response = self._get(url)
        forms = page_forms(response.text) if _is_html(response) else []
        if any(name == "sim" for form in forms for name, _ in form.buttons):
            self.say("phone: the network asks which SIM this is: this SIM")
            response = self.submit(response, forms[0], ("sim", "this"))
        return response

    def answer(self, page: requests.Response, choice: str, pick: str | None = None):
        """Press Approve, Deny or a number on the confirmation page."""
        forms = page_forms(page.text) if _is_html(page) else []
        for form in forms:
            for button in form.buttons:
                if (choice == "deny" and button == ("action", "deny")) or (
                    choice == "approve"
                    and (button == ("pick", pick) if pick else button == ("action", "approve"))
                ):
                    return self.submit(page, form, button)
        picks = [v for form in forms for name, v in form.buttons if name == "pick"]
        if choice == "approve" and picks and not pick:
            raise PhoneError(f"the page asks to pick the number shown in the terminal: {picks}")
        raise PhoneError(f"no {choice} button on the page: {page_text(page.text)[:200]}")

    def submit(self, page: requests.Response, form: Form, button: tuple[str, str]):
        """Submit a form with one of its buttons, then follow redirects."""
        target = urljoin(page.url, form.action or page.url)
        data = dict(form.fields)
        data[button[0]] = button[1]
        self.say(f"phone: press {button[0]}={button[1]} → POST {target}")
        response = self.session.post(target, data=data, allow_redirects=False, timeout=self.timeout)
        self._report(response)
        if response.is_redirect:
            return self._get(urljoin(target, response.headers["Location"]))
        return response

    def _get(self, url: str) -> requests.Response:
        for _ in range(MAX_HOPS):
            response = self.session.get(url, allow_redirects=False, timeout=self.timeout)
            self._report(response)
            if not response.is_redirect:
                return response
            url = urljoin(url, response.headers["Location"])
        raise PhoneError(f"more than {MAX_HOPS} redirects")

    def _report(self, response: requests.Response) -> None:
        line = f"phone: {response.request.method} {response.url} → {response.status_code}"
        if response.is_redirect:
            line += f" → {response.headers['Location']}"
        elif _is_html(response):
            line += f": {page_text(response.text)[:160]}"
        else:
            line += f": {response.text[:160]}"
        self.say(line)


def _is_html(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").startswith("text/html")

"""The QR the service renders fits the shim's terminal and decodes back to the check URL."""

import pytest

from harness.camera import decode, same_url
from sshshim.protocol import rows_reserved
from webserver.qr import render

BASE = "https://eu.api.idlayr.com/phone_check/v0.2/checks/"


def url_of_length(n: int) -> str:
    url = BASE + "0d9c1e7e-6f7f-4a53-9c7d-3c5d1e0b2f11/redirect"
    return (url + "?pad=" + "x" * n)[:n] if n > len(url) else url[: n - 9] + "/redirect"


def test_the_path_keeps_its_case():
    text = render(BASE + "AbC-check/redirect", 80, 24, unicode=True)
    assert decode(text, unicode=True) == [
        "HTTPS://EU.API.IDLAYR.COM/phone_check/v0.2/checks/AbC-check/redirect"
    ]


@pytest.mark.parametrize("length", [60, 100, 160])
def test_half_blocks_fit_80x24_and_decode(length):
    url = url_of_length(length)
    assert len(url) == length
    text = render(url, 80, 24, unicode=True)
    assert text is not None
    lines = text.splitlines()
    assert len(lines) <= 24 and max(map(len, lines)) <= 80
    assert decode(text, unicode=True) == [same_url(url)]


def test_a_typical_check_url_leaves_room_for_the_shims_text():
    url = url_of_length(92)
    reserved = rows_reserved(url, None, 80)
    assert reserved == 4  # header, URL (wrapped to 2 rows), countdown
    text = render(url, 80, 24, unicode=True, reserved=reserved)
    assert len(text.splitlines()) + reserved <= 24


def test_with_a_number_to_pick_the_qr_alone_fills_80x24():
    url = url_of_length(92)
    reserved = rows_reserved(url, "37", 80)
    text = render(url, 80, 24, unicode=True, reserved=reserved)
    assert len(text.splitlines()) + reserved > 24 >= len(text.splitlines())
    assert decode(text, unicode=True) == [same_url(url)]


def test_ascii_rendering_decodes_where_it_fits():
    url = url_of_length(100)
    text = render(url, 120, 60, unicode=False)
    assert set(text) <= {"#", " ", "\n"}
    assert decode(text, unicode=False) == [same_url(url)]


def test_ascii_does_not_fit_80x24_so_the_url_alone_is_shown():
    assert render(url_of_length(100), 80, 24, unicode=False) is None


def test_a_40x12_terminal_gets_the_url_only_fallback():
    assert render(url_of_length(60), 40, 12, unicode=True) is None

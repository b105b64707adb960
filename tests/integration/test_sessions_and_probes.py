"""UI sessions end when their person signs out and are Secure over HTTPS;
pages say only what this server wrote; and without credentials, a thing
that exists and one that does not get the same answer."""

from __future__ import annotations

import base64
import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runyard.core.errors import Unauthorized
from runyard.crypto import PoolToken, generate_key, make_csr, sign_challenge
from runyard.wire import RegisterIn
from tests.integration.conftest import ADMIN, Api


def _signed_in(api: Api, **headers: str) -> tuple[httpx.Client, httpx.Response]:
    browser = httpx.Client(base_url=api.url, timeout=30)
    api.opened.append(browser)
    resp = browser.post("/ui/login", data={"api_key": ADMIN}, headers=headers)
    assert resp.status_code == 303
    return browser, resp


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has a form with a CSRF token"
    return found.group(1)


def test_the_session_cookie_is_secure_behind_an_https_proxy_and_not_over_plain_http(api: Api):
    _, proxied = _signed_in(api, **{"X-Forwarded-Proto": "https"})
    assert "secure" in proxied.headers["set-cookie"].lower()
    _, plain = _signed_in(api)
    assert "secure" not in plain.headers["set-cookie"].lower()


def test_a_copied_cookie_is_refused_once_its_session_signed_out(api: Api):
    browser, _ = _signed_in(api)
    copied = dict(browser.cookies)
    page = browser.get("/ui/pools")
    assert page.status_code == 200
    assert browser.post("/ui/logout", data={"csrf": _csrf(page.text)}).status_code == 303
    thief = httpx.Client(base_url=api.url, cookies=copied, timeout=30)
    api.opened.append(thief)
    resp = thief.get("/ui/pools")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/ui/login")
    # Another session of the same key is untouched.
    other, _ = _signed_in(api)
    assert other.get("/ui/pools").status_code == 200


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=8, max_size=60)
       .filter(lambda s: s.strip() == s))
def test_no_text_in_a_link_appears_on_a_page(api: Api, text: str):
    browser, _ = _signed_in(api)
    for path in ("/ui/login", "/ui/pools"):
        page = browser.get(path, params={"flash": text, "message": text, "error": text})
        assert text not in page.text and 'class="flash"' not in page.text


def test_what_an_action_did_is_shown_once_on_the_page_it_leads_to(api: Api):
    api.pool()
    browser, _ = _signed_in(api)
    page = browser.get("/ui/pools/p1", params={"tab": "settings"})
    done = browser.post("/ui/pools/p1/settings", data={"csrf": _csrf(page.text), "description": "d",
                                                       "labels": "", "drift_detection_limit": "0"})
    assert done.status_code == 303 and "flash" not in done.headers["location"]
    assert 'class="flash">Settings saved<' in browser.get(done.headers["location"]).text
    assert 'class="flash"' not in browser.get(done.headers["location"]).text


def test_the_state_backend_answers_alike_for_a_stack_that_exists_and_one_that_does_not(api: Api):
    api.pool()
    api.stack("s1")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"x:not-a-key").decode()}
    for headers in ({}, wrong):
        answers = []
        for stack in ("s1", "missing"):
            for method, path in (("GET", ""), ("POST", ""), ("LOCK", "/lock"), ("UNLOCK", "/lock")):
                resp = api.http.request(method, f"/api/v1/stacks/{stack}/state{path}", headers=headers)
                answers.append((resp.status_code, resp.json()))
        assert {a[0] for a in answers} == {401}
        assert all(a == answers[0] for a in answers[:4]) and answers[:4] == answers[4:]
    known = api.http.get("/api/v1/stacks/missing/state", headers={"Authorization": f"Bearer {ADMIN}"})
    assert known.status_code == 404  # with a key, a missing stack is said to be missing


def test_registration_tells_no_pool_that_exists_from_one_that_does_not(api: Api):
    pool_id, _, _ = api.pool()
    w = api.anonymous()
    assert w.challenge(pool_id) and w.challenge("01NOSUCHPOOL0000000000000")
    other_key = generate_key(2048)
    other = api.client.create_pool("p2", make_csr(other_key).decode())
    refusals = []
    for target in ("01NOSUCHPOOL0000000000000", pool_id):
        challenge = w.challenge(target)
        with pytest.raises(Unauthorized) as refused:
            w.register(RegisterIn(pool_id=target, certificate=PoolToken.decode(other.token).certificate_pem,
                                  challenge=challenge, signature=sign_challenge(other_key, challenge),
                                  metadata={}, version="test"))
        refusals.append(refused.value.message)
    assert refusals[0] == refusals[1]

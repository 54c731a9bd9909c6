"""Access control (issue 6, part 6): with a login configured in the secrets, nothing of the dashboard shows
before sign-in. Pure checks of the policy and hashing, AppTest runs of the gate, and a real browser against
`streamlit run --secrets.files` for the password and the OIDC modes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import IDLE, PAGE_TITLES, REPO, streamlit_server
from playwright.sync_api import Page, expect
from streamlit.testing.v1 import AppTest

import access

FAST = 2_000  # PBKDF2 iterations for test hashes: the format and the check are the same, only cheaper
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def ana_hash() -> str:
    return access.hash_password(PASSWORD, iterations=FAST)


# --- passwords and policy (no Streamlit) ---------------------------------------------------------------------

def test_hash_is_salted_and_verifies_only_the_right_password() -> None:
    first, second = access.hash_password(PASSWORD, iterations=FAST), access.hash_password(PASSWORD, iterations=FAST)
    assert first != second  # a fresh salt each time
    assert PASSWORD not in first and first.startswith("pbkdf2_sha256$2000$")
    assert access.verify_password(PASSWORD, first) and access.verify_password(PASSWORD, second)
    assert not access.verify_password(PASSWORD + " ", first)
    assert access.hash_password("x").split("$")[1] == str(access.ITERATIONS)  # the default is the strong one


def test_no_secrets_means_open_and_each_section_picks_its_mode(ana_hash: str) -> None:
    assert access.policy_from({}).mode == "open"
    assert access.policy_from({"unrelated": {"key": 1}}).mode == "open"
    shared = access.policy_from({"adloop": {"password_hash": ana_hash}})
    assert shared.mode == "password" and shared.shared_password
    named = access.policy_from({"adloop": {"users": {"ana": ana_hash, "bo": ana_hash}}})
    assert named.mode == "password" and not named.shared_password and set(named.users) == {"ana", "bo"}
    oidc = access.policy_from({"auth": {"redirect_uri": "x", "cookie_secret": "y", "google": {"client_id": "z"}},
                               "adloop": {"allowed_domains": ["@Example.org"]}})
    assert (oidc.mode, oidc.providers, oidc.allowed_domains) == ("oidc", ("google",), frozenset({"example.org"}))


@pytest.mark.parametrize("section", [
    {},  # a section that asks for a login but names no password
    {"password": "plain text"},
    {"password_sha256": "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"},
    {"password_hash": "pbkdf2_sha256$1000$not base64$"},
    {"users": {"ana": "sha256$abc"}},
    {"password_hash": "{hash}", "allowed_domains": ["example.org"]},  # allowed_* need an OIDC login
    {"password_hash": "{hash}", "max_failures": 0},
])
def test_unusable_login_settings_fail_closed(section: dict, ana_hash: str) -> None:
    section = {k: v.replace("{hash}", ana_hash) if isinstance(v, str) else v for k, v in section.items()}
    with pytest.raises(access.AccessMisconfigured):
        access.policy_from({"adloop": section})


def test_check_login_accepts_only_the_users_own_password(ana_hash: str) -> None:
    policy = access.policy_from({"adloop": {"users": {"ana": ana_hash,
                                                      "bo": access.hash_password("other", iterations=FAST)}}})
    assert access.check_login(policy, " ana ", PASSWORD) == "ana"
    assert access.check_login(policy, "bo", PASSWORD) is None
    assert access.check_login(policy, "nobody", PASSWORD) is None
    shared = access.policy_from({"adloop": {"password_hash": ana_hash}})
    assert access.check_login(shared, "whatever is typed", PASSWORD) == access.SHARED_NAME


def test_repeated_failures_lock_the_session_for_a_doubling_time() -> None:
    policy = access.Policy("password", max_failures=3, lockout_seconds=10)
    state: dict = {}
    assert [access.record_failure(state, policy, now=100.0) for _ in range(2)] == [0.0, 0.0]
    assert access.locked_for(state, 100.0) == 0.0
    assert access.record_failure(state, policy, now=100.0) == 10.0
    assert access.locked_for(state, 105.0) == 5.0 and access.locked_for(state, 111.0) == 0.0
    assert access.record_failure(state, policy, now=111.0) == 20.0
    state[access.FAILURES] = 40
    assert access.record_failure(state, policy, now=0.0) == access.MAX_LOCKOUT_SECONDS
    access.record_success(state, "ana")
    assert state == {access.SIGNED_IN: "ana"}


def test_email_lists_narrow_an_oidc_login() -> None:
    anyone = access.Policy("oidc")
    assert access.email_allowed(anyone, "x@anywhere.net")
    listed = access.Policy("oidc", allowed_emails=frozenset({"boss@corp.com"}), allowed_domains=frozenset({"team.io"}))
    assert access.email_allowed(listed, "Boss@Corp.com") and access.email_allowed(listed, "ana@team.io")
    assert not access.email_allowed(listed, "ana@evil-team.io") and not access.email_allowed(listed, None)


def test_hash_password_command_prints_a_line_for_secrets_toml() -> None:
    # a new session has no terminal, so getpass reads the two answers from stdin
    done = subprocess.run([sys.executable, "-m", "access", "hash-password"], cwd=REPO, input="s3cret!\ns3cret!\n",
                          capture_output=True, text=True, timeout=120, start_new_session=True)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith('password_hash = "pbkdf2_sha256$') and "s3cret" not in line
    assert access.verify_password("s3cret!", line.split('"')[1])


# --- the gate in AppTest --------------------------------------------------------------------------------------

def _app(secrets: dict | None = None, user: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=60)
    if secrets:
        at.secrets = secrets
    if user is not None:
        at.user = user
    return at.run()


def _shows_a_page(at: AppTest) -> bool:
    return any(t.value in PAGE_TITLES for t in at.title)


def test_open_mode_shows_the_pages_without_a_login(demo_store: str) -> None:
    at = _app()
    assert not at.exception and [t.value for t in at.title] == ["Audience"]
    assert not [b for b in at.button if b.label == "Log in"] and not at.sidebar.button


def test_password_gate_lets_in_the_right_password_and_logs_out(demo_store: str, ana_hash: str) -> None:
    at = _app({"adloop": {"password_hash": ana_hash}})
    assert not at.exception and not _shows_a_page(at) and [t.value for t in at.title] == ["AdLoop"]
    assert [i.label for i in at.text_input] == ["Password"] and not at.sidebar.button
    at.text_input(key="adloop_login_password").input("wrong")
    at.button[0].click().run()
    assert not _shows_a_page(at) and any("Wrong user name or password" in e.value for e in at.error)
    at.text_input(key="adloop_login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception and [t.value for t in at.title] == ["Audience"]
    at.sidebar.button(key="adloop_logout").click().run()
    assert not _shows_a_page(at) and [t.value for t in at.title] == ["AdLoop"]


def test_lockout_refuses_even_the_right_password_until_it_expires(demo_store: str, ana_hash: str) -> None:
    at = _app({"adloop": {"users": {"ana": ana_hash}, "max_failures": 2, "lockout_seconds": 600}})
    at.text_input(key="adloop_login_name").input("ana")
    for _ in range(2):
        at.text_input(key="adloop_login_password").input("guess")
        at.button[0].click().run()
    assert any("Locked for 600 s" in e.value for e in at.error)
    at.text_input(key="adloop_login_password").input(PASSWORD)
    at.button[0].click().run()
    assert not _shows_a_page(at) and any("Too many failed attempts" in e.value for e in at.error)
    at.session_state[access.LOCKED_UNTIL] = 0.0  # the lock has run out
    at.run()
    at.button[0].click().run()
    assert [t.value for t in at.title] == ["Audience"]


def test_misconfigured_secrets_keep_the_dashboard_closed() -> None:
    at = _app({"adloop": {"password": "plain text"}})
    assert not _shows_a_page(at) and not at.text_input and not at.button
    assert any("Access is misconfigured" in e.value for e in at.error)


OIDC = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "a-long-random-cookie-secret-0123",
        "client_id": "adloop", "client_secret": "not-a-real-secret",
        "server_metadata_url": "https://login.example.invalid/.well-known/openid-configuration"}


def test_oidc_gate_asks_for_the_provider_login_and_honours_the_allowed_list(demo_store: str) -> None:
    at = _app({"auth": OIDC}, user={})
    assert not _shows_a_page(at) and [b.label for b in at.button] == ["Log in"] and not at.text_input
    at = _app({"auth": OIDC, "adloop": {"allowed_domains": ["corp.com"]}},
              user={"is_logged_in": True, "email": "ana@corp.com"})
    assert not at.exception and [t.value for t in at.title] == ["Audience"]
    assert any("Signed in as ana@corp.com" in c.value for c in at.sidebar.caption)
    at = _app({"auth": OIDC, "adloop": {"allowed_domains": ["corp.com"]}},
              user={"is_logged_in": True, "email": "eve@elsewhere.com"})
    assert not _shows_a_page(at) and any("may not use this dashboard" in e.value for e in at.error)


# --- a real browser -------------------------------------------------------------------------------------------


def _secrets_file(folder: Path, text: str) -> Path:
    path = folder / "secrets.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def password_server(demo_store: str, ana_hash: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh dashboard whose secrets (outside the repository) ask for user ana's password."""
    folder = tmp_path_factory.mktemp("password-login")
    secrets = _secrets_file(folder, f'[adloop]\nmax_failures = 5\n\n[adloop.users]\nana = "{ana_hash}"\n')
    with streamlit_server(folder / "server.log", "--secrets.files", str(secrets)) as (url, _):
        yield url


def assert_only_the_login(page: Page, login_button: str = "Log in") -> None:
    """The login is all there is: no page heading or text, no navigation, no download button."""
    expect(page.get_by_role("button", name=login_button)).to_be_visible(timeout=60_000)
    page.wait_for_selector(IDLE, timeout=60_000)
    main = page.locator('[data-testid="stMain"]').inner_text()
    for title in PAGE_TITLES:
        expect(page.get_by_role("heading", name=title)).to_have_count(0)
        assert title not in main, f"'{title}' shows before sign-in:\n{main}"
    for testid in ("stSidebarNav", "stSidebarNavLink", "stDownloadButton", "stDataFrame", "stImage"):
        expect(page.locator(f'[data-testid="{testid}"]')).to_have_count(0)
    # after a logout the browser may keep the sidebar's empty frame (with its collapse arrow): it must hold nothing
    assert not "".join(page.locator('[data-testid="stSidebarUserContent"]').all_inner_texts()).strip()


def sign_in(page: Page, password: str, name: str = "ana") -> None:
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.mark.browser
def test_every_url_shows_only_the_login_before_sign_in(password_server: str, page: Page) -> None:
    # First on this fresh server: a page file's legacy URL, which a first script run would serve directly.
    for path in ("/studio", "/settings_page", "/campaign-lab", "/reward-tuning", "/settings", "/"):
        page.goto(password_server + path)
        assert_only_the_login(page)


@pytest.mark.browser
def test_wrong_password_is_refused_right_one_opens_pages_logout_closes(password_server: str, page: Page) -> None:
    page.goto(password_server)  # a first run, which a deep link on a fresh server would meet with "page not found"
    assert_only_the_login(page)
    page.goto(password_server + "/campaign-lab")
    assert_only_the_login(page)
    sign_in(page, "not the password")
    expect(page.get_by_text("Wrong user name or password.")).to_be_visible(timeout=30_000)
    assert_only_the_login(page)
    sign_in(page, PASSWORD)
    # signed in, the page asked for by URL opens, with the navigation and the account in the sidebar
    expect(page.get_by_role("heading", name="Campaign Lab")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Signed in as ana")).to_be_visible()
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible(timeout=60_000)
    page.get_by_role("button", name="Log out").click()
    assert_only_the_login(page)
    page.goto(password_server + "/settings")  # a new session must sign in again
    assert_only_the_login(page)


@pytest.mark.browser
def test_oidc_login_configured_shows_only_the_provider_button(demo_store: str, page: Page,
                                                               tmp_path: Path) -> None:
    """No identity provider is reachable offline: the test proves that with [auth] set nothing else shows."""
    from live_server import free_port

    port = free_port()
    settings = OIDC | {"redirect_uri": f"http://127.0.0.1:{port}/oauth2callback"}
    secrets = _secrets_file(tmp_path, "[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    with streamlit_server(tmp_path / "server.log", "--secrets.files", str(secrets), port=port) as (url, _):
        for path in ("/settings_page", "/studio", "/"):  # a fresh server again: the legacy URL first
            page.goto(url + path)
            assert_only_the_login(page)

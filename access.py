"""Access control: an optional login in front of every page and every export of the dashboard.

The mode comes from Streamlit secrets (`.streamlit/secrets.toml` next to where `streamlit run` starts, or
the files named by `--secrets.files`), never from `$ADLOOP_HOME`, so the data folder cannot switch it off:

- no `[auth]` and no `[adloop]` section: open, as on a laptop (`make run`);
- `[adloop]` with `password_hash` (one shared password) or an `[adloop.users]` table (name -> hash):
  a password form; hashes are salted PBKDF2-SHA256 made by `python -m access hash-password`;
- `[auth]`: Streamlit's own OpenID Connect login (`st.login`), optionally narrowed to some e-mail
  addresses or domains by `[adloop] allowed_emails` / `allowed_domains`.

The serving API (`cli.py serve`) reads the same secrets: with a login configured, every request needs an API
key from `[adloop.api_keys]` (account -> list of SHA-256 hashes of its keys, made by `python -m access
make-api-key ACCOUNT`), and a key's account must be one of the dashboard's accounts (a password-mode user, or
an allowed e-mail address in OIDC mode).

A secrets file that exists but cannot be read, or an `[adloop]` section without a usable hash, stops the
app with an error instead of opening it: a typo must not remove the login.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import hmac
import secrets as token_source
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import streamlit as st
from streamlit.errors import StreamlitAPIException

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA256: ~0.5 s a check on one slow core
MAX_FAILURES = 5  # wrong passwords in a row before the form locks
LOCKOUT_SECONDS = 30.0  # first lock; doubles with every further failure, up to MAX_LOCKOUT_SECONDS
MAX_LOCKOUT_SECONDS = 900.0
SIGNED_IN = "_adloop_signed_in_as"  # session-state key of the password mode's signed-in name
FAILURES = "_adloop_login_failures"
LOCKED_UNTIL = "_adloop_login_locked_until"
SHARED_NAME = "team"  # the name shown when one shared password (no user names) is configured
ENTRY_SCRIPT = "streamlit_app.py"


class AccessMisconfigured(ValueError):
    """The secrets ask for a login but cannot be used; the app shows this and nothing else."""


@dataclass(frozen=True)
class Policy:
    """Who may see the dashboard, resolved from the secrets."""

    mode: str = "open"  # "open", "password" or "oidc"
    users: Mapping[str, str] = field(default_factory=dict)  # password mode: name -> encoded hash
    providers: tuple[str, ...] = ()  # OIDC: named providers ([auth.NAME]); empty: the unnamed [auth] one
    allowed_emails: frozenset[str] = frozenset()
    allowed_domains: frozenset[str] = frozenset()
    max_failures: int = MAX_FAILURES
    lockout_seconds: float = LOCKOUT_SECONDS

    @property
    def shared_password(self) -> bool:
        """One password and no user names: the form asks for the password alone."""
        return self.mode == "password" and list(self.users) == [SHARED_NAME]


# --- passwords ------------------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`pbkdf2_sha256$ITERATIONS$SALT$HASH` (base64): what the secrets hold instead of the password."""
    if not password:
        raise ValueError("The password is empty")
    salt = salt or token_source.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


def _parse_hash(encoded: str) -> tuple[int, bytes, bytes]:
    """The parts of an encoded hash; raises AccessMisconfigured naming what is wrong (never the hash)."""
    parts = str(encoded).strip().split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        raise AccessMisconfigured(f"A password hash must look like {ALGORITHM}$ITERATIONS$SALT$HASH; "
                                  "make one with `python -m access hash-password`")
    try:
        iterations, salt, digest = int(parts[1]), base64.b64decode(parts[2], validate=True), base64.b64decode(
            parts[3], validate=True)
    except ValueError as exc:
        raise AccessMisconfigured(f"A password hash has a malformed part: {exc}") from exc
    if iterations < 1 or not salt or len(digest) != 32:
        raise AccessMisconfigured("A password hash has no salt, no iterations or a digest of the wrong length")
    return iterations, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Constant-time comparison of the password's PBKDF2 digest with the stored one."""
    iterations, salt, expected = _parse_hash(encoded)
    actual = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(actual, expected)


def check_login(policy: Policy, name: str, password: str) -> str | None:
    """The signed-in name when the password matches the user's hash, else None.

    An unknown name still costs one hash computation, so timing does not reveal which names exist.
    """
    name = SHARED_NAME if policy.shared_password else name.strip()
    encoded = policy.users.get(name)
    matched = verify_password(password, encoded or next(iter(policy.users.values())))
    return name if encoded is not None and matched else None


# --- throttling -----------------------------------------------------------------------------------------------

def locked_for(state: Mapping[str, Any], now: float) -> float:
    """Seconds until this session may try again (0: it may try now)."""
    return max(0.0, float(state.get(LOCKED_UNTIL, 0.0)) - now)


def record_failure(state: MutableMapping[str, Any], policy: Policy, now: float) -> float:
    """Count a wrong password; from the policy's limit on, lock the form for a doubling time. Returns the lock."""
    failures = int(state.get(FAILURES, 0)) + 1
    state[FAILURES] = failures
    if failures < policy.max_failures:
        return 0.0
    lock = min(policy.lockout_seconds * 2 ** (failures - policy.max_failures), MAX_LOCKOUT_SECONDS)
    state[LOCKED_UNTIL] = now + lock
    return lock


def record_success(state: MutableMapping[str, Any], name: str) -> None:
    state[SIGNED_IN] = name
    state.pop(FAILURES, None)
    state.pop(LOCKED_UNTIL, None)


# --- configuration --------------------------------------------------------------------------------------------

def _string_set(section: Mapping[str, Any], key: str) -> frozenset[str]:
    values = section.get(key, [])
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise AccessMisconfigured(f"[adloop] {key} must be a list of strings")
    return frozenset(str(v).strip().lower().lstrip("@") for v in values if str(v).strip())


def _oidc_providers(auth: Mapping[str, Any]) -> tuple[str, ...]:
    """Named providers are the [auth.NAME] tables; none means the settings sit in [auth] itself."""
    return tuple(sorted(k for k, v in auth.items() if isinstance(v, Mapping)))


def _password_users(section: Mapping[str, Any]) -> dict[str, str]:
    users = {str(k).strip(): str(v) for k, v in dict(section.get("users", {})).items()}
    if section.get("password_hash"):
        users[SHARED_NAME] = str(section["password_hash"])
    if not users:
        raise AccessMisconfigured("[adloop] is present but has no password_hash and no [adloop.users] table")
    if "password" in section or "password_sha256" in section:
        raise AccessMisconfigured("[adloop] takes a salted password_hash, never a plain or unsalted password; "
                                  "make one with `python -m access hash-password`")
    for encoded in users.values():
        _parse_hash(encoded)
    return users


def policy_from(secrets: Mapping[str, Any]) -> Policy:
    """Resolve the access policy from a secrets mapping (pure, so it is tested without a server)."""
    section = dict(secrets.get("adloop", {}))
    limits = {"max_failures": int(section.get("max_failures", MAX_FAILURES)),
              "lockout_seconds": float(section.get("lockout_seconds", LOCKOUT_SECONDS))}
    if limits["max_failures"] < 1 or limits["lockout_seconds"] < 0:
        raise AccessMisconfigured("[adloop] max_failures must be 1 or more and lockout_seconds 0 or more")
    allowed = {"allowed_emails": _string_set(section, "allowed_emails"),
               "allowed_domains": _string_set(section, "allowed_domains")}
    if "auth" in secrets:
        return Policy("oidc", providers=_oidc_providers(secrets["auth"]), **allowed, **limits)
    if "adloop" not in secrets:
        return Policy()
    if allowed["allowed_emails"] or allowed["allowed_domains"]:
        raise AccessMisconfigured("allowed_emails / allowed_domains apply to an OIDC login: add an [auth] section")
    return Policy("password", users=_password_users(section), **limits)


def api_keys(secrets: Mapping[str, Any]) -> dict[str, str]:
    """SHA-256 hex digest of each API key -> its account, from `[adloop.api_keys]` ({} when none)."""
    table = dict(dict(secrets.get("adloop", {})).get("api_keys", {}))
    keys: dict[str, str] = {}
    for account, digests in table.items():
        if isinstance(digests, str) or not isinstance(digests, Sequence):
            raise AccessMisconfigured(f"[adloop.api_keys] {account} must be a list of SHA-256 hex digests")
        for digest in digests:
            digest = str(digest).strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise AccessMisconfigured(f"[adloop.api_keys] {account} holds '{digest[:12]}...', which is not a "
                                          "SHA-256 hex digest; make keys with `python -m access make-api-key`")
            keys[digest] = str(account).strip()
    return keys


def key_digest(key: str) -> str:
    """How a key is stored: keys are 32 random bytes, so a plain hash is safe and fast enough to check on every
    request (a slow salted hash suits guessable passwords, not random keys)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_account(policy: Policy, account: str) -> bool:
    """Whether a name is one of the dashboard's accounts under the policy (any name when it is open)."""
    if policy.mode == "open":
        return True
    if policy.mode == "password":
        return account in policy.users
    return email_allowed(policy, account)


def read_secrets() -> Mapping[str, Any]:
    """Streamlit's secrets as a mapping; {} when no file exists, an error when one exists but does not parse."""
    if st.secrets.load_if_toml_exists():
        return st.secrets.to_dict()
    present = [p for p in st.get_option("secrets.files") if Path(p).exists()]
    if present:
        raise AccessMisconfigured(f"The secrets file {present[0]} exists but cannot be read (see the server log)")
    return {}


def current_policy() -> Policy:
    return policy_from(read_secrets())


# --- who is signed in -----------------------------------------------------------------------------------------

def email_allowed(policy: Policy, email: str | None) -> bool:
    """Without a list every account the provider signs in is allowed; with one, the e-mail must match it."""
    if not (policy.allowed_emails or policy.allowed_domains):
        return True
    email = (email or "").strip().lower()
    return email in policy.allowed_emails or email.rsplit("@", 1)[-1] in policy.allowed_domains


def signed_in_as(policy: Policy) -> str | None:
    """The visitor's name for display, None while they must still sign in (always 'anyone' when open)."""
    if policy.mode == "open":
        return "anyone"
    if policy.mode == "password":
        name = st.session_state.get(SIGNED_IN)
        return name if name in policy.users else None
    if st.user.get("is_logged_in") and email_allowed(policy, st.user.get("email")):
        return str(st.user.get("email") or st.user.get("name") or "signed in")
    return None


# --- the gate -------------------------------------------------------------------------------------------------

def navigation(pages: list[st.Page]):
    """`st.navigation(pages)` once the visitor is signed in; until then only the login form, and the script stops.

    The locked navigation is hidden and answers every page's URL with the login, so a bookmarked page
    shows the login (not "page not found") and, once signed in, opens the page that was asked for.
    """
    try:
        policy = current_policy()
    except AccessMisconfigured as exc:
        message = f"Access is misconfigured, so the dashboard stays closed: {exc}"
        _locked(pages, lambda: st.error(message))
    who = signed_in_as(policy)
    if who is None:
        _locked(pages, lambda: _login_view(policy))
    nav = st.navigation(pages)
    if policy.mode != "open":
        _account_sidebar(policy, who)
    return nav


def _locked(pages: list[st.Page], view) -> NoReturn:
    """Run `view` under every page's URL with no visible navigation, then stop the script."""
    stand_ins = [st.Page(view, title="Sign in", url_path=page.url_path or "sign-in", default=not page.url_path)
                 for page in pages]
    st.navigation(stand_ins, position="hidden").run()
    st.stop()


def require_login() -> None:
    """First line of every page: the page stops unless the visitor is signed in.

    The entry script's gate normally runs first. But the very first script run of a freshly started
    server treats the `pages/` folder the legacy way and runs a requested page file directly, without
    the entry script; this sends such a visitor to the entry script, whose gate shows the login.
    """
    try:
        allowed = signed_in_as(current_policy()) is not None
    except AccessMisconfigured:
        allowed = False
    if allowed:
        return
    with contextlib.suppress(StreamlitAPIException):  # only the legacy run knows the entry script as a page
        st.switch_page(ENTRY_SCRIPT)
    st.stop()


def _login_view(policy: Policy) -> None:
    st.title("AdLoop")
    if policy.mode == "oidc":
        _oidc_prompt(policy)
    else:
        _password_form(policy)


def _oidc_prompt(policy: Policy) -> None:
    if st.user.get("is_logged_in"):  # signed in at the provider, but not on the allowed list
        st.error(f"{st.user.get('email') or 'This account'} may not use this dashboard.")
        if st.button("Log out", key="adloop_logout"):
            st.logout()
        return
    st.write("Sign in to continue.")
    for provider in policy.providers or (None,):
        label = f"Log in with {provider}" if provider else "Log in"
        if st.button(label, type="primary", key=f"adloop_login_{provider or 'default'}"):
            st.login(provider)


def _password_form(policy: Policy) -> None:
    wait = locked_for(st.session_state, time.time())
    if wait:
        st.error(f"Too many failed attempts: try again in {wait:.0f} s.")
    with st.form("adloop_login"):
        name = "" if policy.shared_password else st.text_input("User name", key="adloop_login_name")
        password = st.text_input("Password", type="password", key="adloop_login_password")
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted or wait:
        return
    who = check_login(policy, name, password)
    if who is None:
        lock = record_failure(st.session_state, policy, time.time())
        st.error("Wrong user name or password." + (f" Locked for {lock:.0f} s." if lock else ""))
        return
    record_success(st.session_state, who)
    st.rerun()


def _sign_out() -> None:
    """A button callback: it runs before the next script run, so that run already shows the login."""
    st.session_state.pop(SIGNED_IN, None)


def _account_sidebar(policy: Policy, who: str) -> None:
    st.sidebar.caption(f"Signed in as {who}")
    if policy.mode == "password":
        st.sidebar.button("Log out", key="adloop_logout", on_click=_sign_out)
    elif st.sidebar.button("Log out", key="adloop_logout"):
        st.logout()  # clears the identity cookie and reloads the app


# --- command line ---------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """`python -m access hash-password`: ask for a password twice and print the line for secrets.toml;
    `python -m access make-api-key ACCOUNT`: print a new API key (shown once) and its line for secrets.toml."""
    if argv[:1] == ["make-api-key"] and len(argv) == 2:
        key = token_source.token_urlsafe(32)
        print(f"API key for {argv[1]} (shown once; send it as the X-API-Key header): {key}")
        print(f'[adloop.api_keys]\n"{argv[1]}" = ["{key_digest(key)}"]')
        return 0
    if argv[:1] != ["hash-password"]:
        print("usage: python -m access hash-password | make-api-key ACCOUNT", file=sys.stderr)
        return 2
    password = getpass.getpass("Password: ")
    if password != getpass.getpass("Again: "):
        print("The passwords differ", file=sys.stderr)
        return 1
    print(f'password_hash = "{hash_password(password)}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

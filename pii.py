"""Personal identifiers in imported text: found and replaced with typed placeholders such as "[email]".

Detected: e-mail addresses, phone numbers (international "+44 20 7946 0958", US "(415) 555-0132" and
"415-555-0132", national "020 7946 0958"), payment card numbers (13-19 digits from a card
issuer's range passing the Luhn check), IBANs (passing the ISO 13616 mod-97 check), US social
security numbers, IPv4 and IPv6 addresses, and street addresses ("221B Baker Street"). The
checksums and the required separators keep years, ratings, ids and titles such as "Se7en",
"2001: A Space Odyssey" or "9 1/2 Weeks" untouched.

Redaction happens once, at import (`store.csv_import`), so nothing downstream (profiles, prompts,
generated copy, logs, exports) can see the originals; `untrusted.clean` runs it again
before any prompt, for stores filled some other way. Identifiers used as ids are replaced by a stable
pseudonym instead, so one person's rows still belong together.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
CARD = re.compile(r"(?<![\d+-])[2-6](?:[ -]?\d){12,18}(?![\d-])")  # issuer numbers start with 2-6
SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])")
PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w-])"  # international: +CC and groups
    r"|(?<![\w(])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])"  # US: (415) 555-0132, 415-555-0132
    r"|(?<![\w.-])0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\w-])")  # national with trunk 0: 020 7946 0958
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
STREET = re.compile(
    r"(?<!\w)\d{1,5}[A-Za-z]?(?: [A-Z][a-z]+){1,3} (?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|"
    r"Dr|Court|Ct|Place|Pl|Square|Sq|Terrace|Way|Straße|Strasse|Weg|Allee|Platz)\b\.?")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of card numbers: it tells a card number from any other long run of digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """The ISO 13616 mod-97 check of IBANs."""
    value = text.replace(" ", "")
    moved = value[4:] + value[:4]
    return 15 <= len(value) <= 34 and int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _ip_ok(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == 4 or text.count(":") >= 3 or "::" in text


# (placeholder kind, pattern, a check the match must pass), in order: a card or IBAN is not also a phone
DETECTORS: tuple[tuple[str, re.Pattern, Callable[[str], bool]], ...] = (
    ("email", EMAIL, lambda s: True),
    ("iban", IBAN, iban_ok),
    ("card", CARD, lambda s: luhn_ok(_digits(s)) and len(set(_digits(s))) > 1),
    ("ssn", SSN, lambda s: not s.startswith(("000", "666", "9"))),
    ("phone", PHONE, lambda s: 7 <= len(_digits(s)) <= 15),
    ("ip", IPV4, _ip_ok),
    ("ip", IPV6, _ip_ok),
    ("address", STREET, lambda s: True),
)
KINDS = tuple(dict.fromkeys(kind for kind, _, _ in DETECTORS))


def redact(text: str) -> tuple[str, list[str]]:
    """The text with every identifier replaced by "[kind]", and the kinds found (one per identifier)."""
    found: list[str] = []
    for kind, pattern, valid in DETECTORS:
        def replace(match: re.Match, kind: str = kind, valid: Callable = valid) -> str:
            if not valid(match.group(0)):
                return match.group(0)
            found.append(kind)
            return f"[{kind}]"

        text = pattern.sub(replace, text)
    return text, found


def pseudonym(value: str) -> tuple[str, str | None]:
    """An id holding an identifier (a user id that is an e-mail address) becomes "<kind>-<hash>", stable
    across imports so the same person maps to the same id; returns (id, kind found or None)."""
    _, found = redact(value)
    if not found:
        return value, None
    return f"{found[0]}-{hashlib.sha256(value.encode()).hexdigest()[:12]}", found[0]

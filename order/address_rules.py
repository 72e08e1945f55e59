"""What a deliverable address needs in each country: the parts a courier there cannot do
without, and the shape of its postcode (the audit, order/audit.py, holds what falls short).

Greater China keeps the rules it always had: name, phone, province, city and street. Elsewhere
the phone is optional (Amazon often gives none, and the carriers there do without), and the
countries listed in :data:`COUNTRY_RULES` also need their postcode in their own format; any
other country needs a name, a city and a street.

Every check is linear in its input and refuses anything longer than a postcode can be before
looking at it, so a hostile field costs nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from streams.countries import GREATER_CHINA
from streams.models import Address

CHINA_PARTS = ("name", "phone", "province", "city", "street")
ELSEWHERE_PARTS = ("name", "city", "street")
MAX_POSTCODE_CHARS = 16  # the longest format here is 10 ('12345-6789'); more is not one


@dataclass(frozen=True)
class CountryRules:
    """The parts an address in one country must have and the form of its postcode."""

    parts: tuple[str, ...]
    postcode: re.Pattern[str] | None = None  # matched against the folded postcode
    postcode_form: str = ""  # what a person is told it should look like
    labels: Mapping[str, str] = field(default_factory=dict)  # a part as the country calls it

    def label(self, part: str) -> str:
        return self.labels.get(part, part)


def _pattern(text: str) -> re.Pattern[str]:
    """ASCII only: a Devanagari or full-width digit is no US ZIP digit (full-width input is
    folded to ASCII before it is matched)."""
    return re.compile(text, re.ASCII)


CHINA = CountryRules(CHINA_PARTS)
ELSEWHERE = CountryRules(ELSEWHERE_PARTS)
COUNTRY_RULES: Mapping[str, CountryRules] = MappingProxyType(
    {
        "US": CountryRules(
            ("name", "street", "city", "province", "postcode"),
            _pattern(r"[0-9]{5}(?:-[0-9]{4})?"),
            "5 digits or ZIP+4 (12345 or 12345-6789)",
            {"province": "state", "postcode": "ZIP code"},
        ),
        "DE": CountryRules(
            ("name", "street", "city", "postcode"),
            _pattern(r"[0-9]{5}"),
            "5 digits (60311)",
            {"postcode": "Postleitzahl"},
        ),
        "JP": CountryRules(
            ("name", "street", "city", "province", "postcode"),
            _pattern(r"[0-9]{3}-?[0-9]{4}"),
            "NNN-NNNN (100-0001)",
            {"province": "prefecture"},
        ),
        "GB": CountryRules(
            ("name", "street", "city", "postcode"),
            # outward code (area, district) then inward code (sector, unit); GIR 0AA is real
            _pattern(r"(?:[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}|GIR ?0AA)"),
            "outward and inward code (SW1A 1AA)",
            {"city": "post town"},
        ),
    }
)


def rules_for(country: str) -> CountryRules:
    code = country.upper()
    if code in GREATER_CHINA:
        return CHINA
    return COUNTRY_RULES.get(code, ELSEWHERE)


def fold_postcode(postcode: str) -> str:
    """Full-width folded (NFKC), capitals, surrounding space gone and inner runs of space as
    one: 'sw1a  1aa' and 'ＳＷ１Ａ １ＡＡ' are 'SW1A 1AA'."""
    return " ".join(unicodedata.normalize("NFKC", postcode).upper().split())


def is_valid_postcode(country: str, postcode: str) -> bool:
    """True when ``postcode`` has the country's form, or the country has none known here."""
    pattern = rules_for(country).postcode
    if pattern is None:
        return True
    if len(postcode) > MAX_POSTCODE_CHARS:
        return False
    return pattern.fullmatch(fold_postcode(postcode)) is not None


def postcode_problem(address: Address) -> str:
    """Why the address's postcode is wrong for its country ('' when it is not, or there is
    none: a missing one is address_incomplete's). Never repeats the value: it is the
    buyer's."""
    rules = rules_for(address.country)
    if not address.postcode.strip() or is_valid_postcode(address.country, address.postcode):
        return ""
    return (
        f"{rules.label('postcode')} is not in the {address.country.upper()} form: "
        f"{rules.postcode_form}"
    )

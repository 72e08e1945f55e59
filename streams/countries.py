"""Countries (ISO 3166-1 alpha-2) and the subdivisions routing knows (ISO 3166-2 US states).

Channels send the country as its alpha-2 code (Amazon ``CountryCode``, Shopify
``country_code``); a state or province as the buyer or the platform wrote it (Amazon
``StateOrRegion``: 'CA' or 'California'; Shopify ``province`` 'California' beside
``province_code`` 'CA'). :func:`subdivision_of` folds those into one key, 'US-CA', for the
countries listed in :data:`SUBDIVISIONS`; elsewhere routing goes by the country alone.

Greater China (CN, HK, MO, TW) is routed by province (streams/regions.py), not here.
"""

from __future__ import annotations

import unicodedata
from types import MappingProxyType

# Officially assigned ISO 3166-1 alpha-2 codes (249).
_ISO_3166_1 = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
"""
COUNTRIES: frozenset[str] = frozenset(_ISO_3166_1.split())

GREATER_CHINA = frozenset({"CN", "HK", "MO", "TW"})  # routed by province (streams/regions.py)
SARS = ("HK", "MO", "TW")  # also ISO 3166-1 countries of their own

# ISO 3166-2:US: the 50 states, DC and the outlying areas, code -> name.
US_STATES: MappingProxyType[str, str] = MappingProxyType(
    {
        "AL": "Alabama",
        "AK": "Alaska",
        "AZ": "Arizona",
        "AR": "Arkansas",
        "CA": "California",
        "CO": "Colorado",
        "CT": "Connecticut",
        "DE": "Delaware",
        "FL": "Florida",
        "GA": "Georgia",
        "HI": "Hawaii",
        "ID": "Idaho",
        "IL": "Illinois",
        "IN": "Indiana",
        "IA": "Iowa",
        "KS": "Kansas",
        "KY": "Kentucky",
        "LA": "Louisiana",
        "ME": "Maine",
        "MD": "Maryland",
        "MA": "Massachusetts",
        "MI": "Michigan",
        "MN": "Minnesota",
        "MS": "Mississippi",
        "MO": "Missouri",
        "MT": "Montana",
        "NE": "Nebraska",
        "NV": "Nevada",
        "NH": "New Hampshire",
        "NJ": "New Jersey",
        "NM": "New Mexico",
        "NY": "New York",
        "NC": "North Carolina",
        "ND": "North Dakota",
        "OH": "Ohio",
        "OK": "Oklahoma",
        "OR": "Oregon",
        "PA": "Pennsylvania",
        "RI": "Rhode Island",
        "SC": "South Carolina",
        "SD": "South Dakota",
        "TN": "Tennessee",
        "TX": "Texas",
        "UT": "Utah",
        "VT": "Vermont",
        "VA": "Virginia",
        "WA": "Washington",
        "WV": "West Virginia",
        "WI": "Wisconsin",
        "WY": "Wyoming",
        "DC": "District of Columbia",
        "AS": "American Samoa",
        "GU": "Guam",
        "MP": "Northern Mariana Islands",
        "PR": "Puerto Rico",
        "UM": "United States Minor Outlying Islands",
        "VI": "Virgin Islands, U.S.",
    }
)


def _fold(value: str) -> str:
    """'  New-York ', 'NEW YORK' and 'New York.' are one state."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return " ".join("".join(c if c.isalnum() else " " for c in folded).split())


# Countries whose subdivisions routing knows: country -> {folded code or name: ISO 3166-2}.
SUBDIVISIONS: MappingProxyType[str, MappingProxyType[str, str]] = MappingProxyType(
    {
        "US": MappingProxyType(
            {
                **{_fold(code): f"US-{code}" for code in US_STATES},
                **{_fold(name): f"US-{code}" for code, name in US_STATES.items()},
                "washington dc": "US-DC",
                "washington d c": "US-DC",
                "d c": "US-DC",
                "virgin islands": "US-VI",
                "us virgin islands": "US-VI",
            }
        ),
    }
)

MAX_SUBDIVISION_CHARS = 64  # 'United States Minor Outlying Islands' is 36: longer is no state


def subdivision_of(country: str, state: str) -> str:
    """ISO 3166-2 code ('US-CA') of ``state`` ('CA', 'US-CA', 'California') in ``country``;
    '' when the country's subdivisions are not known here or the state is not one of them.
    Linear in the input, and no work at all beyond MAX_SUBDIVISION_CHARS."""
    table = SUBDIVISIONS.get(country.upper())
    if table is None or not state or len(state) > MAX_SUBDIVISION_CHARS:
        return ""
    folded = _fold(state)
    prefix = f"{country.casefold()} "
    if folded.startswith(prefix) and len(folded) <= len(prefix) + 3:  # 'US-CA'
        folded = folded[len(prefix) :]
    return table.get(folded, "")


def all_subdivisions() -> frozenset[str]:
    """Every ISO 3166-2 code routing knows ('US-CA', ...)."""
    return frozenset(code for table in SUBDIVISIONS.values() for code in table.values())

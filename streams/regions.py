"""Chinese provinces: one routing key (the ISO 3166-2:CN suffix) for every way channels spell one.

Channels disagree on how they name a province: Taobao sends '浙江省', JD '浙江', Douyin
'浙江省' plus a GB/T 2260 id, Shopify 'Zhejiang' with code 'ZJ', Amazon whatever the buyer
typed ('Zhejiang Sheng', 'CN-ZJ'). Routing and analytics need one key, so every adapter
normalises through :func:`province_code`.

Hong Kong, Macao and Taiwan have their own ISO 3166-1 country codes, which is how most
international channels send them; they map to 'HK', 'MO' and 'TW' here (both as a country and
as a CN subdivision) so an order to them routes like any other.
"""

from __future__ import annotations

import re
import unicodedata
from types import MappingProxyType

# code -> (Chinese name, English name); codes are the current ISO 3166-2:CN suffixes (2017 on).
PROVINCES: MappingProxyType[str, tuple[str, str]] = MappingProxyType({
    "BJ": ("北京市", "Beijing"),
    "TJ": ("天津市", "Tianjin"),
    "HE": ("河北省", "Hebei"),
    "SX": ("山西省", "Shanxi"),
    "NM": ("内蒙古自治区", "Inner Mongolia"),
    "LN": ("辽宁省", "Liaoning"),
    "JL": ("吉林省", "Jilin"),
    "HL": ("黑龙江省", "Heilongjiang"),
    "SH": ("上海市", "Shanghai"),
    "JS": ("江苏省", "Jiangsu"),
    "ZJ": ("浙江省", "Zhejiang"),
    "AH": ("安徽省", "Anhui"),
    "FJ": ("福建省", "Fujian"),
    "JX": ("江西省", "Jiangxi"),
    "SD": ("山东省", "Shandong"),
    "HA": ("河南省", "Henan"),
    "HB": ("湖北省", "Hubei"),
    "HN": ("湖南省", "Hunan"),
    "GD": ("广东省", "Guangdong"),
    "GX": ("广西壮族自治区", "Guangxi"),
    "HI": ("海南省", "Hainan"),
    "CQ": ("重庆市", "Chongqing"),
    "SC": ("四川省", "Sichuan"),
    "GZ": ("贵州省", "Guizhou"),
    "YN": ("云南省", "Yunnan"),
    "XZ": ("西藏自治区", "Tibet"),
    "SN": ("陕西省", "Shaanxi"),
    "GS": ("甘肃省", "Gansu"),
    "QH": ("青海省", "Qinghai"),
    "NX": ("宁夏回族自治区", "Ningxia"),
    "XJ": ("新疆维吾尔自治区", "Xinjiang"),
    "TW": ("台湾省", "Taiwan"),
    "HK": ("香港特别行政区", "Hong Kong"),
    "MO": ("澳门特别行政区", "Macao"),
})

# The seven traditional macro-regions (华北, 东北, 华东, 华中, 华南, 西南, 西北): routing
# ranks warehouses by them when a province has no warehouse of its own.
REGION: MappingProxyType[str, str] = MappingProxyType({
    **dict.fromkeys(("BJ", "TJ", "HE", "SX", "NM"), "north"),
    **dict.fromkeys(("LN", "JL", "HL"), "northeast"),
    **dict.fromkeys(("SH", "JS", "ZJ", "AH", "FJ", "JX", "SD", "TW"), "east"),
    **dict.fromkeys(("HA", "HB", "HN"), "central"),
    **dict.fromkeys(("GD", "GX", "HI", "HK", "MO"), "south"),
    **dict.fromkeys(("CQ", "SC", "GZ", "YN", "XZ"), "southwest"),
    **dict.fromkeys(("SN", "GS", "QH", "NX", "XJ"), "northwest"),
})

# First two digits of the GB/T 2260 division code (Douyin ids, old numeric ISO 'CN-33').
_GB_PREFIX = {
    "11": "BJ", "12": "TJ", "13": "HE", "14": "SX", "15": "NM", "21": "LN", "22": "JL",
    "23": "HL", "31": "SH", "32": "JS", "33": "ZJ", "34": "AH", "35": "FJ", "36": "JX",
    "37": "SD", "41": "HA", "42": "HB", "43": "HN", "44": "GD", "45": "GX", "46": "HI",
    "50": "CQ", "51": "SC", "52": "GZ", "53": "YN", "54": "XZ", "61": "SN", "62": "GS",
    "63": "QH", "64": "NX", "65": "XJ", "71": "TW", "81": "HK", "82": "MO",
}

# One-character abbreviations (沪, 粤, ...) as printed on plates and in logistics systems.
_ABBREVIATIONS = {
    "京": "BJ", "津": "TJ", "冀": "HE", "晋": "SX", "蒙": "NM", "辽": "LN", "吉": "JL",
    "黑": "HL", "沪": "SH", "苏": "JS", "浙": "ZJ", "皖": "AH", "闽": "FJ", "赣": "JX",
    "鲁": "SD", "豫": "HA", "鄂": "HB", "湘": "HN", "粤": "GD", "桂": "GX", "琼": "HI",
    "渝": "CQ", "川": "SC", "蜀": "SC", "黔": "GZ", "贵": "GZ", "滇": "YN", "云": "YN",
    "藏": "XZ", "陕": "SN", "秦": "SN", "甘": "GS", "陇": "GS", "青": "QH", "宁": "NX",
    "新": "XJ", "台": "TW", "港": "HK", "澳": "MO",
}

# Extra English/pinyin spellings beyond the names in PROVINCES.
_ALIASES = {
    "neimenggu": "NM", "neimongol": "NM", "nei mongol": "NM", "xizang": "XZ",
    "xianggang": "HK", "hongkong": "HK", "aomen": "MO", "macau": "MO", "taiwan": "TW",
    "shensi": "SN", "shansi": "SX", "canton": "GD", "peking": "BJ",
}

_ZH_SUFFIXES = ("壮族自治区", "回族自治区", "维吾尔自治区", "特别行政区", "自治区", "省", "市")
_EN_SUFFIXES = (
    "special administrative region", "uyghur autonomous region", "uygur autonomous region",
    "uighur autonomous region", "zhuang autonomous region", "hui autonomous region",
    "autonomous region", "municipality", "province", "zizhiqu", "sheng", "shi", "sar",
    "uygur", "uyghur", "zhuangzu", "huizu",
)

# Longest spelling worth looking up ('Xinjiang Uyghur Autonomous Region' is 33): anything
# longer is no province and is refused before any work is done on it.
MAX_NAME_CHARS = 64
MAX_SUFFIXES = 3  # 'Guangxi Zhuangzu Zizhiqu' has two

_CN_COUNTRY_NAMES = (
    "CN", "CHN", "China", "中国", "中华人民共和国", "People's Republic of China", "PRC",
)
_SAR_COUNTRIES = {"hk": "HK", "hkg": "HK", "mo": "MO", "mac": "MO", "tw": "TW", "twn": "TW"}


def _fold(value: str) -> str:
    """Case, width and punctuation differences are noise for a province name."""
    value = unicodedata.normalize("NFKC", value).strip().casefold()
    return re.sub(r"[\s\-_.,'·]+", " ", value).strip()


_CN_COUNTRIES = frozenset(_fold(name) for name in _CN_COUNTRY_NAMES)


def _strip_suffix(value: str, suffixes: tuple[str, ...]) -> str:
    """Drop administrative suffixes, repeatedly ('Guangxi Zhuangzu Zizhiqu' -> 'guangxi').

    At most MAX_SUFFIXES passes, moving an end index instead of slicing a copy per pass: a
    real name carries two at most, and 'x' + 'shi' * 300,000 cost 9 s the other way."""
    end = len(value)
    for _ in range(MAX_SUFFIXES):
        for suffix in suffixes:
            if end > len(suffix) and value.endswith(suffix, 0, end):
                end -= len(suffix)
                while end and value[end - 1].isspace():
                    end -= 1
                break
        else:
            break
    return value[:end]


def _build_index() -> dict[str, str]:
    index: dict[str, str] = {}
    for code, (zh, en) in PROVINCES.items():
        index[code.casefold()] = code
        index[_fold(zh)] = code
        index[_strip_suffix(_fold(zh), _ZH_SUFFIXES)] = code
        index[_fold(en)] = code
        index[_fold(en).replace(" ", "")] = code
    index.update(_ALIASES)
    index.update(_ABBREVIATIONS)
    return index


_INDEX = _build_index()


def _lookup(value: str) -> str:
    folded = _fold(value)
    if not folded:
        return ""
    if folded.startswith("cn "):  # 'CN-ZJ', 'CN-33' (pre-2017 numeric ISO)
        folded = folded[3:]
    if folded.isdigit() and (len(folded) == 2 or (len(folded) == 6 and folded.endswith("0000"))):
        return _GB_PREFIX.get(folded[:2], "")
    for candidate in (
        folded,
        folded.replace(" ", ""),
        _strip_suffix(folded, _ZH_SUFFIXES),
        _strip_suffix(folded, _EN_SUFFIXES),
    ):
        code = _INDEX.get(candidate) or _INDEX.get(candidate.replace(" ", ""))
        if code:
            return code
    return ""


def province_code(name_or_code: str, country: str = "CN") -> str:
    """Province name/code in any common spelling -> ISO 3166-2:CN suffix; '' when unknown
    (also for a name or country longer than MAX_NAME_CHARS: no work is done on those).

    '' also for addresses outside China (routing then falls back to its default), except that
    Hong Kong, Macao and Taiwan given as a country map to their own code.
    """
    if not isinstance(country, str) or len(country) > MAX_NAME_CHARS:
        return ""
    folded_country = _fold(country or "CN")
    if folded_country in _SAR_COUNTRIES:
        return _SAR_COUNTRIES[folded_country]
    if folded_country not in _CN_COUNTRIES:
        return ""
    if not isinstance(name_or_code, str) or len(name_or_code) > MAX_NAME_CHARS:
        return ""
    return _lookup(name_or_code)


def region_of(code: str) -> str:
    """Macro-region of a province code; '' for unknown codes."""
    return REGION.get(code, "")

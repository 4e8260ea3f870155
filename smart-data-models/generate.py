#!/usr/bin/env python3
"""Generate smart-data-models/contexts.json from the pysmartdatamodels package.

The output is one JSON object mapping every Smart Data Models (SDM) @context URL
to the JSON-LD context document that URL serves:

    {"<url>": {"@context": {"<term>": <IRI or expanded term definition>, ...}}, ...}

Covered URLs (see README.md):
  * https://raw.githubusercontent.com/smart-data-models/<subject>/master/context.jsonld
    (the spelling used in the package's datamodels_metadata.json "@context" field)
  * https://smart-data-models.github.io/<subject>/context.jsonld
    (the spelling built by the package's own create_context() helper)
  * https://smartdatamodels.org/context.jsonld (union of all subjects)

Per-subject documents are built the way the upstream SDM tooling builds a
subject's context.jsonld, but from the package data instead of the network:
  * every attribute (top-level and nested sub-property) recorded for the subject in
    model-assets/smartdatamodels.json.gz maps to the IRI stored in that record's
    "context" field (https://smartdatamodels.org/<subject>/<attr> for
    subject-local attributes, https://smartdatamodels.org/<attr> for SDM common
    attributes, the NGSI-LD core IRI for core terms such as id, type, location);
  * every data model (entity type) of the subject, from
    model-assets/official_list_data_models.json, maps to
    https://smartdatamodels.org/<subject>/<Type> unless the package data already
    gives that name another IRI;
  * terms that are NGSI-LD core terms get the core term definition with every
    compact IRI expanded (e.g. "coordinates" -> {"@container": "@list", "@id":
    "https://purl.org/geojson/vocab#coordinates"}), as the published files do;
  * the "ngsi-ld" prefix is added, as the published files do.

The union document merges the subjects in the order of the official list; when
two subjects define the same term differently the first definition is kept
(or, with --union-conflicts drop, the term is left out, which is what the
upstream merge tool does). Terms that a JSON-LD 1.1 processor rejects (a term
containing ':' or '/' whose IRI is not the term itself) are left out of the
union so that one bad term cannot break the most widely used URL; they stay in
their own subject's document, as published.

Usage:
    python3 smart-data-models/generate.py                 # downloads the pinned wheel with pip
    python3 smart-data-models/generate.py --wheel path/to/pysmartdatamodels-X-py3-none-any.whl

The same run writes rules.json.gz, the rules twinlink checks entities against
(see README.md, "Rules"): per model <subject>/<model>, its version, the expanded
type IRI, the expanded IRIs of its required attributes and, per top-level
attribute (keyed by the IRI the subject's context expands it to), the NGSI-LD
kind, JSON type, format, enum and unit text of the package's record, with the
UN/CEFACT codes that units.json (written by hand) gives that unit text.

Only the Python standard library is used (plus pip, to download the wheel).
"""

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile

from wheels import checked as checked_wheel

PACKAGE = "pysmartdatamodels"
# The sha256 of the pinned wheel (as PyPI lists it): a wheel with another digest is refused,
# downloaded or given with --wheel, so that the output depends on these bytes only.
PINNED_SHA256 = "0778b4d667ce22bee63f15630bd87755e86b4b391e009a93079cb55b86468da0"
PINNED_VERSION = "0.8.2.0"

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "contexts.json")
DEFAULT_CORE = os.path.join(HERE, "..", "context", "ngsi-ld-core-context-v1.9.jsonld")
DEFAULT_RULES = os.path.join(HERE, "rules.json.gz")
DEFAULT_UNITS = os.path.join(HERE, "units.json")

# Record members copied into an attribute rule, and the names they get there.
RULE_MEMBERS = (("typeNGSI", "kind"), ("type", "json"), ("format", "format"), ("enum", "enum"),
                ("units", "units"))
# Records of GeoJSON members (the oneOf branches of location) are not attributes.
GEOJSON_VOCAB = "https://purl.org/geojson/vocab#"

NGSI_LD_PREFIX = "https://uri.etsi.org/ngsi-ld/"
SDM_BASE = "https://smartdatamodels.org/"
UNION_URL = "https://smartdatamodels.org/context.jsonld"


def raw_github_url(subject):
    return "https://raw.githubusercontent.com/smart-data-models/%s/master/context.jsonld" % subject


def github_pages_url(subject):
    return "https://smart-data-models.github.io/%s/context.jsonld" % subject


def log(msg):
    print(msg, file=sys.stderr)


def download_wheel(version, dest):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", dest, "%s==%s" % (PACKAGE, version)]
    log("running: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    wheels = [f for f in os.listdir(dest) if f.startswith(PACKAGE + "-") and f.endswith(".whl")]
    if len(wheels) != 1:
        raise SystemExit("expected exactly one %s wheel in %s, found %r" % (PACKAGE, dest, wheels))
    return os.path.join(dest, wheels[0])


def read_wheel(path):
    """Return (version, official_list, metadata, property_records) from the wheel."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()

        def find(suffix):
            hits = [n for n in names if n.endswith(suffix)]
            if len(hits) != 1:
                raise SystemExit("expected one %s in %s, found %r" % (suffix, path, hits))
            return hits[0]

        version = None
        for line in zf.read(find(".dist-info/METADATA")).decode("utf-8").splitlines():
            if line.startswith("Version:"):
                version = line.split(":", 1)[1].strip()
                break
        official = json.loads(zf.read(find("model-assets/official_list_data_models.json")))
        metadata = json.loads(zf.read(find("model-assets/datamodels_metadata.json")))
        with gzip.GzipFile(fileobj=io.BytesIO(zf.read(find("model-assets/smartdatamodels.json.gz")))) as gz:
            records = json.loads(gz.read())
    return version, official, metadata, records


def load_core(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["@context"]


def expand_iri(value, core, seen=()):
    """Expand a compact IRI or core term name against the core context."""
    if not isinstance(value, str) or value.startswith("@"):
        return value
    if ":" in value:
        prefix, suffix = value.split(":", 1)
        if not suffix.startswith("//") and isinstance(core.get(prefix), str):
            return core[prefix] + suffix
        return value
    if value in core and value not in seen:
        definition = core[value]
        target = definition if isinstance(definition, str) else definition.get("@id")
        return expand_iri(target, core, seen + (value,))
    return value


def expand_definition(definition, core):
    if isinstance(definition, str):
        return expand_iri(definition, core)
    out = {}
    for key, val in definition.items():
        out[key] = expand_iri(val, core) if key in ("@id", "@type") else val
    return out


def definition_iri(definition):
    return definition if isinstance(definition, str) else definition.get("@id")


def jsonld11_rejects(term, definition):
    """True when a JSON-LD 1.1 processor raises 'invalid IRI mapping' for the term:
    a term containing ':' (not first/last char) or '/' must expand to itself."""
    has_colon = ":" in term[1:-1]
    if not (has_colon or "/" in term):
        return False
    if term.startswith("@"):
        return False
    return definition_iri(definition) != term


def build(official, metadata, records, core):
    subjects = [entry["repoName"] for entry in official["officialList"]]
    types_by_subject = {entry["repoName"]: list(entry["dataModels"]) for entry in official["officialList"]}

    # Attribute -> IRI per subject, straight from the package's property records.
    props = {s: {} for s in subjects}
    disagreements = 0
    for rec in records:
        subject = rec.get("repoName")
        term = rec.get("property")
        iri = rec.get("context")
        if subject not in props or not term or not isinstance(iri, str):
            continue
        known = props[subject].get(term)
        if known is None:
            props[subject][term] = iri
        elif known != iri:
            disagreements += 1  # first record wins

    core_terms = {t: expand_definition(d, core) for t, d in core.items() if not t.startswith("@")}

    stats = {"core_definitions": 0, "core_name_other_iri": 0, "type_terms": 0,
             "record_disagreements": disagreements}
    docs = {}
    for subject in subjects:
        ctx = dict(props[subject])
        for type_name in types_by_subject[subject]:
            if type_name not in ctx:
                ctx[type_name] = SDM_BASE + subject + "/" + type_name
                stats["type_terms"] += 1
        for term, iri in list(ctx.items()):
            core_def = core_terms.get(term)
            if core_def is None:
                continue
            if definition_iri(core_def) == iri:
                ctx[term] = core_def
                stats["core_definitions"] += 1
            else:
                stats["core_name_other_iri"] += 1
        ctx["ngsi-ld"] = NGSI_LD_PREFIX
        docs[subject] = {"@context": ctx}

    # Every URL spelling the package uses for a subject context.
    urls = {}
    for subject in subjects:
        urls.setdefault(raw_github_url(subject), subject)
        urls.setdefault(github_pages_url(subject), subject)
    for m in metadata:
        url = m.get("@context")
        subject = m.get("subject")
        if isinstance(url, str) and subject in docs:
            if urls.setdefault(url, subject) != subject:
                raise SystemExit("URL %s claimed by two subjects" % url)

    return subjects, docs, urls, stats


def unit_key(text):
    """The form of a unit text that units.json is keyed by."""
    return " ".join(text.lower().split())


def build_rules(metadata, records, docs, units):
    """The rules of every model: {"<subject>/<model>": {"version", "type", "required",
    "attributes": {"<IRI>": {"term", "kind", "json", "format", "enum", "units", "unitCodes"}}}},
    members without a value left out."""
    attributes = {}
    for rec in records:
        iri = rec.get("context")
        if rec.get("parentId") or not isinstance(iri, str) or iri.startswith("@") \
                or iri.startswith(GEOJSON_VOCAB):
            continue
        subject, term = rec["repoName"], rec["property"]
        if subject not in docs:
            continue
        # The IRI a client's entity carries: the subject context's expansion of the term.
        iri = definition_iri(docs[subject]["@context"].get(term, iri))
        attrs = attributes.setdefault((subject, rec["dataModel"]), {})
        if iri in attrs:
            continue  # first record wins, as in the contexts
        rule = {"term": term}
        for member, name in RULE_MEMBERS:
            if rec.get(member) is not None:
                rule[name] = rec[member]
        codes = units.get(unit_key(rec["units"])) if isinstance(rec.get("units"), str) else None
        if codes:
            rule["unitCodes"] = codes
        attrs[iri] = rule

    rules, stats = {}, {"required_unknown": 0, "unit_texts_mapped": 0}
    for m in metadata:
        subject, name = m.get("subject"), m.get("dataModel")
        attrs = attributes.get((subject, name))
        if attrs is None:
            continue  # the package has no attribute records for it
        by_term = {rule["term"]: iri for iri, rule in attrs.items()}
        ctx = docs[subject]["@context"]
        required = []
        for term in m.get("required") or []:
            if term in ("id", "type"):
                continue
            iri = by_term.get(term) or definition_iri(ctx.get(term))
            if iri:
                required.append(iri)
            else:
                stats["required_unknown"] += 1
        rules["%s/%s" % (subject, name)] = {
            "version": m.get("version"),
            "type": definition_iri(ctx.get(name, SDM_BASE + subject + "/" + name)),
            "required": sorted(required),
            "attributes": attrs,
        }
    stats["unit_texts_mapped"] = sum(1 for a in attributes.values() for r in a.values() if "unitCodes" in r)
    return rules, stats


def write_gzip_json(path, value):
    """Compact, key-sorted JSON, gzipped without a name or time in the header, so that the same
    input gives the same bytes (with the same zlib). Returns (json bytes, file bytes)."""
    text = (json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
            gz.write(text)
    return len(text), os.path.getsize(path)


def build_union(subjects, docs, mode):
    first = {}          # term -> definition from the first subject defining it
    conflicting = set()
    conflicts = 0       # later definitions that differ from the first one
    invalid = []
    for subject in subjects:
        for term, definition in sorted(docs[subject]["@context"].items()):
            if jsonld11_rejects(term, definition):
                invalid.append((subject, term))
                continue
            if term not in first:
                first[term] = definition
            elif first[term] != definition:  # identical re-definitions are not conflicts
                conflicts += 1
                conflicting.add(term)
    if mode == "drop":
        union = {t: d for t, d in first.items() if t not in conflicting}
    else:
        union = first
    return {"@context": union}, conflicts, len(conflicting), invalid


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help="path to a %s wheel (default: pip download %s==%s)"
                    % (PACKAGE, PACKAGE, PINNED_VERSION))
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="output file (default: contexts.json beside this script)")
    ap.add_argument("--core-context", default=DEFAULT_CORE,
                    help="NGSI-LD core context used for core term definitions "
                         "(default: context/ngsi-ld-core-context-v1.9.jsonld in this repository)")
    ap.add_argument("--rules-output", default=DEFAULT_RULES,
                    help="rules file (default: rules.json.gz beside this script)")
    ap.add_argument("--units", default=DEFAULT_UNITS,
                    help="unit texts of the package mapped to UN/CEFACT codes (default: units.json "
                         "beside this script)")
    ap.add_argument("--union-conflicts", choices=("first", "drop"), default="first",
                    help="union context: keep the first subject's definition of a conflicting term "
                         "(default) or leave the term out like the upstream merge tool")
    args = ap.parse_args()

    core = load_core(args.core_context)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = checked_wheel(args.wheel or download_wheel(PINNED_VERSION, tmp),
                              PACKAGE, PINNED_VERSION, PINNED_SHA256)
        version, official, metadata, records = read_wheel(wheel)
    if version != PINNED_VERSION:
        log("warning: wheel is %s %s, pinned version is %s" % (PACKAGE, version, PINNED_VERSION))

    subjects, docs, urls, stats = build(official, metadata, records, core)
    union, conflicts, conflicting_terms, invalid = build_union(subjects, docs, args.union_conflicts)

    out = {url: docs[subject] for url, subject in urls.items()}
    out[UNION_URL] = union

    text = json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)

    n_terms = sum(len(d["@context"]) for d in docs.values())
    log("%s %s: %d subjects, %d data models, %d property records"
        % (PACKAGE, version, len(subjects), sum(len(e["dataModels"]) for e in official["officialList"]),
           len(records)))
    log("per-subject terms: %d (entity-type terms added: %d, core term definitions: %d, "
        "core names with another IRI: %d, disagreeing records: %d)"
        % (n_terms, stats["type_terms"], stats["core_definitions"], stats["core_name_other_iri"],
           stats["record_disagreements"]))
    log("union: %d terms, %d conflicting definitions over %d terms (mode: %s), "
        "%d JSON-LD-1.1-invalid terms left out: %s"
        % (len(union["@context"]), conflicts, conflicting_terms, args.union_conflicts, len(invalid),
           ", ".join("%s (%s)" % (t, s) for s, t in invalid) or "none"))
    log("wrote %d URLs, %d bytes to %s" % (len(out), len(text.encode("utf-8")), os.path.relpath(args.output)))

    with open(args.units, encoding="utf-8") as f:
        units = {unit_key(k): v for k, v in json.load(f).items() if not k.startswith("_")}
    rules, rule_stats = build_rules(metadata, records, docs, units)
    plain, packed = write_gzip_json(args.rules_output, rules)
    log("rules: %d models, %d attributes (%d with unit codes), %d required terms without an IRI; "
        "wrote %d bytes (%d uncompressed) to %s"
        % (len(rules), sum(len(r["attributes"]) for r in rules.values()),
           rule_stats["unit_texts_mapped"], rule_stats["required_unknown"], packed, plain,
           os.path.relpath(args.rules_output)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks manifests/schema/*.schema.json (dev-time only; needs the `jsonschema` package).

1. The three schemas are valid draft 2020-12 schemas.
2. Every shipped manifest (manifests/default, components, catalog and templates, or the files given
   as arguments) validates against the schema its "schema" field names.
3. A few hand-made manifests that the Swift decoder refuses (see Tests/ChimeraTests/ManifestTests.swift)
   are refused by the schemas too, and a few that it accepts are accepted.

Usage: python3 Scripts/check_schemas.py [manifest.json ...]
Exits non-zero on the first kind of failure it finds, after listing all of them.
"""
import copy
import json
import pathlib
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "manifests" / "schema"


def load_validators():
    names = (("component", "chimera.component/v1"), ("assembly", "chimera.assembly/v1"), ("template", "chimera.template/v1"))
    schemas = {version: json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text()) for name, version in names}
    # The schemas refer to each other by their $id (the component's generation defaults are the assembly's).
    registry = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in schemas.values())
    validators = {}
    for version, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        validators[version] = Draft202012Validator(schema, registry=registry)
    return validators


def errors_of(validators, manifest):
    validator = validators.get(manifest.get("schema") if isinstance(manifest, dict) else None)
    if validator is None:
        return [f"schema: not one of {sorted(validators)}"]
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
            for e in validator.iter_errors(manifest)]


def mutated(base, path, value, delete=False):
    """A copy of `base` with the field at `path` (a list of keys/indices) set or deleted."""
    out = copy.deepcopy(base)
    target = out
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


def self_checks(validators, shipped):
    """(description, manifest, should_validate) cases the Swift decoder decides the same way."""
    by_kind = {m.get("kind", "assembly"): m for m in shipped.values()}
    enc, con, llm, asm = (by_kind.get(k) for k in ("encoder", "connector", "language_model", "assembly"))
    if not all((enc, con, llm, asm)):
        return [("the shipped manifests include one of each kind", None, True)]
    return [
        ("missing schema", mutated(llm, ["schema"], None, delete=True), False),
        ("wrong schema version", mutated(llm, ["schema"], "chimera.component/v2"), False),
        ("unknown top-level field", mutated(llm, ["contxt_length"], 512), False),
        ("unknown nested field", mutated(asm, ["inputs", 0, "conector"], "x"), False),
        ("unknown weights field", mutated(llm, ["weights", "prefx"], ""), False),
        ("unknown tokenizer field", mutated(llm, ["tokenizer", "eos"], [2]), False),
        ("unknown preprocess field", mutated(enc, ["preprocess", "resample"], "bicubic"), False),
        ("context_length as a string", mutated(llm, ["context_length"], "big"), False),
        ("encoder without output", mutated(enc, ["output"], None, delete=True), False),
        ("encoder without modality", mutated(enc, ["modality"], None, delete=True), False),
        ("LM without tokenizer", mutated(llm, ["tokenizer"], None, delete=True), False),
        ("LM without weights", mutated(llm, ["weights"], None, delete=True), False),
        ("negative input_width", mutated(con, ["input_width"], -3), False),
        ("width as another string", mutated(con, ["input_width"], "automatic"), False),
        ("connector without output_width", mutated(con, ["output_width"], None, delete=True), False),
        ("id with a space", mutated(llm, ["id"], "my llm"), False),
        ("empty weights.files", mutated(llm, ["weights", "files"], []), False),
        ("unknown kind", mutated(llm, ["kind"], "decoder"), False),
        ("config not an object", mutated(llm, ["config"], [1, 2]), False),
        ("unknown llama config field", mutated(llm, ["config", "kv_head"], 4), False),
        ("llama kv_heads 0", mutated(llm, ["config", "kv_heads"], 0), False),
        ("unknown activation", mutated(enc, ["config", "hidden_act"], "swiglu"), False),
        ("mlp depth 0", mutated(con, ["config", "depth"], 0), False),
        ("bad select", mutated(asm, ["inputs", 0, "select"], "cls"), False),
        ("unknown generation field", mutated(asm, ["generation"], {"max_token": 5}), False),
        ("preprocess std with a zero", mutated(enc, ["preprocess", "std"], [0.5, 0, 0.5]), False),
        ("auto connector without weights",
         mutated(mutated(mutated(con, ["input_width"], "auto"), ["output_width"], "auto"), ["weights"], None, delete=True), True),
        ("select default", mutated(asm, ["inputs", 0, "select"], "default"), True),
        ("generation defaults", mutated(asm, ["generation"], {"max_tokens": 5, "temperature": 0}), True),
        ("generation top_k 0", mutated(asm, ["generation"], {"top_k": 0}), False),
        ("generation top_p 1.5", mutated(asm, ["generation"], {"top_p": 1.5}), False),
        ("LM generation defaults", mutated(llm, ["generation"], {"temperature": 0.7, "top_k": 50, "repetition_penalty": 1.1}), True),
        ("LM generation with an unknown field", mutated(llm, ["generation"], {"do_sample": True}), False),
        ("encoder with generation defaults", mutated(enc, ["generation"], {"temperature": 0}), False),
        ("optional field null", mutated(llm, ["description"], None), True),
        ("mlp config absent", mutated(con, ["config"], None, delete=True), True),
        ("unknown family with any config", mutated(mutated(con, ["family"], "qformer"), ["config"], {"q": 64}), True),
        ("LM chat_template", mutated(llm, ["chat_template"], "my-chat"), True),
        ("encoder with a chat_template", mutated(enc, ["chat_template"], "my-chat"), False),
        ("jinja template", JINJA, True),
        ("jinja template with content parts", mutated(JINJA, ["content_parts"], {"<image>": "image"}), True),
        ("jinja template with a user slot", mutated(JINJA, ["user"], "{{content}}"), False),
        ("jinja template with an empty file", mutated(JINJA, ["jinja_file"], ""), False),
        ("content parts without jinja", mutated(mutated(JINJA, ["jinja_file"], None, delete=True), ["content_parts"], {"<image>": "image"}), False),
    ]


# A Jinja chat template manifest (import writes one for a checkpoint's own template).
JINJA = {"schema": "chimera.template/v1", "id": "my-chat", "jinja_file": "my.chat_template.jinja", "stop": []}


def main(argv):
    validators = load_validators()
    defaults = sorted((ROOT / "manifests" / "default").glob("*.json"))
    paths = [pathlib.Path(p) for p in argv] or defaults + sorted(
        p for folder in ("components", "catalog", "templates") for p in (ROOT / "manifests" / folder).glob("*.json"))
    failures = 0
    shipped = {}
    for path in paths:
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            print(f"FAIL {path}: not JSON: {error}")
            failures += 1
            continue
        if argv or path in defaults:
            shipped[path] = manifest  # the self-checks start from the embedded default's manifests
        errors = errors_of(validators, manifest)
        if errors:
            failures += 1
            print(f"FAIL {path}:" + "".join(f"\n  {e}" for e in errors))
        else:
            print(f"ok   {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    if not argv:
        for description, manifest, should_validate in self_checks(validators, shipped):
            errors = errors_of(validators, manifest) if manifest is not None else ["missing"]
            if bool(errors) == should_validate:
                failures += 1
                verdict = "refused" if errors else "accepted"
                print(f"FAIL self-check '{description}': the schema {verdict} it" + "".join(f"\n  {e}" for e in errors))
        print(f"self-checks done ({len(self_checks(validators, shipped))} cases)")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

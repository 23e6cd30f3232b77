#!/usr/bin/env python3
"""Golden fixtures for the ChimeraJinja tests: templates written for this project (in the style of
Hugging Face chat templates, none copied from a model) rendered by transformers' own chat-template
environment (jinja2 with trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`, `namespace` and its `tojson`), dev-time only.

Writes Tests/ChimeraJinjaTests/Fixtures/cases.json: a list of
{"name", "template", "context", "output"} or {..., "error"} (the exception's message), the context
with its values' types (see `typed`). strftime_now
sees 2026-12-02 (the date only: times depend on the zone the tests run in).

Usage: python3 Scripts/make_jinja_fixtures.py [output_file]
"""
import datetime as real_datetime
import json
import os
import sys

import transformers.utils.chat_template_utils as ctu

FIXED_NOW = real_datetime.datetime(2026, 12, 2, 12, 0, 0)


class FixedDatetime(real_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


ctu.datetime = FixedDatetime

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "  Hello there \n"},
    {"role": "assistant", "content": "Hi! {{ not a tag }} {% neither %}"},
    {"role": "user", "content": "Café ☕ and 🙂?\nSecond line"},
]
NO_SYSTEM = CONVERSATION[1:]
TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}

# (name, template, extra context). Each runs with CONVERSATION and NO_SYSTEM, with and without
# the generation prompt, unless its context gives `messages` itself.
TEMPLATES = [
    ("chatml", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}", {}),
    ("chatml_default_system", """{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
""", {}),
    ("zephyr_like", """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}""", {}),
    ("turns_trimmed", """{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}""", {}),
    ("headers_dated", """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
""", {}),
    ("namespace_last_user", """{%- set ns = namespace(last_user=-1, count=0) %}
{%- for m in messages %}{% if m.role == 'user' %}{% set ns.last_user = loop.index0 %}{% set ns.count = ns.count + 1 %}{% endif %}{% endfor %}
users={{ ns.count }} last={{ ns.last_user }}
{% for m in messages -%}
  [{{ loop.index }}/{{ loop.length }}{% if loop.first %} first{% endif %}{% if loop.last %} last{% endif %}] {{ m.role | upper }}: {{ m.content | replace('\\n', ' / ') }}
{% endfor -%}
{% if add_generation_prompt %}ASSISTANT:{% endif %}""", {}),
    ("whitespace_control", """A
  {% if true %}
    B {{- ' C ' -}} D
  {%- endif %}
  {# a comment #}
E {%+ if true %}F{% endif %}
{%- for i in range(3) %} {{ i }}{% endfor %}
   {% if true +%}
G
{% endif %}
{% raw %}{{ raw }} {% stays %}{% endraw %}
""", {}),
    ("expressions", """{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 10 / 4 * 2 }}
{{ 'a' ~ 1 ~ none ~ true }} {{ 'ab' * 3 }} {{ [1, 2] + [3] }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'x' in 'xyz' }} {{ 2 not in [1, 2] }}
{{ 1.5 }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 3.0 * 2 }} {{ 1e16 }} {{ 0.0001 }} {{ 0.00001 }} {{ -2.5e-7 }} {{ 123456789.0 * 1000 }}
{{ none }} {{ [1, 'a', none, true, 1.5, {'k': "it's"}] }} {{ {'a': 1, 'b': [2]} }} {{ 'q"' }} {{ ['\\n\\t\\\\'] }}
{{ 'yes' if 3 > 2 else 'no' }} {{ 'a' if false }}| {{ not 0 }} {{ 0 or 'b' }} {{ 1 and 'c' }} {{ '' or [] or 'd' }}
{{ 'abc'[1] }} {{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ [1,2,3,4,5][-2:] }} {{ [1,2,3,4,5][::2] }} {{ 'abc'[-1] }} {{ [1,2,3][5] }}|
{{ "adjacent" 'strings' }} {{ 'é😀'[1] }} {{ 'é😀' | length }} {{ 3 > 2 > 1 }} {{ 1 < 2 == 2 }} {{ -3 | abs }} {{ - 2 ** 2 }}""", {}),
    ("filters", """{{ '  pad  ' | trim }}|{{ 'xxhixx' | trim('x') }}|{{ [3, 1, 2] | sort }}|{{ [3, 1, 2] | sort(reverse=true) }}|{{ ['b', 'A', 'c'] | sort }}
{{ items | map(attribute='name') | join(', ') }}|{{ items | selectattr('on') | map(attribute='name') | list }}|{{ items | rejectattr('on') | list | length }}
{{ items | selectattr('name', 'equalto', 'b') | first }}|{{ items | map(attribute='missing', default='?') | list }}|{{ items | sum(attribute='n') }}
{{ [1, 2, 2, 3, 1] | unique | list }}|{{ [1, 2, 3] | reverse | list }}|{{ 'abc' | reverse }}|{{ [4, 9, 2] | max }} {{ [4, 9, 2] | min }}
{{ 'hello world' | title }} {{ 'hELLO' | capitalize }} {{ 'x' | upper }}{{ 'Y' | lower }} {{ 3.14159 | round(2) }} {{ 2.5 | round }} {{ 7 | float }} {{ '12' | int + 1 }} {{ '3.9' | int }} {{ 'x' | int(5) }}
{{ undefined_thing | default('dflt') }} {{ '' | default('empty', true) }} {{ none | d('n') }}|{% for k, v in {'b': 2, 'a': 1} | dictsort %}{{ k }}{{ v }}{% endfor %}|{{ {'a': 1} | items | list | length }}
{{ data | tojson }}
{{ data | tojson(indent=2) }}
{{ data | tojson(sort_keys=true) }} {{ 'é' | tojson(ensure_ascii=true) }} {{ "<&>'" | tojson }}
{{ 'line1\\nline2\\n\\nline4' | indent(2) }}|{{ 'a\\nb' | indent(4, true) }}|{{ 'a b  c' | wordcount }}|{{ '<a href="x">&' | e }}|{{ [1, 2, 3] | select('odd') | list }}|{{ [1, 2, 3] | reject('odd') | list }}
{{ ['a', 'b'] | join }}|{{ [1, 2] | join('-') }}|{{ items | length }} {{ 'abc' | count }} {{ {'x': 1} | length }} {{ [] | first }}|{{ 'hello' | replace('l', 'L', 1) }}|{{ items | map('string') | list | length }}""",
     {"items": [{"name": "a", "on": True, "n": 1}, {"name": "b", "on": False, "n": 2}, {"name": "c", "on": True, "n": 3.5}],
      "data": {"name": "tool", "é": "ü\n\"q\"", "n": [1, 2.5, None, True, False], "empty": {}, "list": []}}),
    ("methods_and_tests", """{{ 'Hello'.startswith('He') }} {{ 'Hello'.endswith(('x', 'lo')) }} {{ ' a b '.strip() }}|{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'a b c'.rsplit(' ', 1) }}
{{ 'x-y'.replace('-', '+') }} {{ 'abc'.upper() }} {{ 'ABC'.lower() }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.rfind('c') }} {{ 'abcabc'.count('bc') }} {{ ', '.join(['p', 'q']) }} {{ 'l1\\nl2\\r\\nl3'.splitlines() }}
{{ d.get('k') }} {{ d.get('zz', 'none here') }} {{ d.keys() | list }} {{ d.values() | list }} {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.k }} {{ d['k'] }} {{ d.nope }}|
{{ x is defined }} {{ nope is defined }} {{ nope is undefined }} {{ none is none }} {{ 1 is number }} {{ 'a' is string }} {{ d is mapping }} {{ [1] is iterable }} {{ 'a' is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }}
{{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }} {{ true is true }} {{ 0 is false }} {{ 'a' is in 'abc' }} {{ 2 is eq 2 }} {{ 2 is ne 3 }} {{ 2 is lt 3 }} {{ 2 is ge 3 }} {{ none is sameas none }} {{ raise_exception is callable }} {{ 'abc' is lower }} {{ 'x' is not string }}
{{ 'ab12'.isdigit() }} {{ '12'.isdigit() }} {{ 'hello world'.title() }} {{ '  '.isspace() }}""",
     {"x": 1, "d": {"k": "v", "n": 2}}),
    ("loops", """{% for m in messages if m.role != 'system' %}{{ loop.index0 }}:{{ m.role }}{% if not loop.last %},{% endif %}{% endfor %}
{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}
{% for i in [] %}never{% else %}empty-else{% endfor %}
{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}
{% for i in range(3) %}{{ loop.cycle('odd', 'even') }}{{ loop.revindex }}{{ loop.previtem }}{{ loop.nextitem }} {% endfor %}
{% set count = 0 %}{% for i in range(3) %}{% set count = count + 1 %}{{ count }}{% endfor %}{{ count }}
{% for i in range(2) %}{% for j in range(2) %}{{ loop.index }}{% endfor %}{{ loop.index }}{% endfor %}
{% for c in 'ab' %}{{ c }}.{% endfor %} {% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %} {{ range(2, 10, 3) | list }} {{ range(3, 0, -1) | list }}""", {}),
    ("macros_and_sets", """{% macro render(m, prefix='> ') %}{{ prefix }}{{ m.role }}: {{ m.content | trim }}{% endmacro %}
{% for m in messages %}{{ render(m) }}
{% endfor %}{{ render(messages[-1], prefix='* ') }}
{% set a, b = [1, 2] %}{{ a }}{{ b }}
{% set block %}captured {{ messages | length }}{% endset %}[{{ block }}]
{% macro pair(a, b, c='-') %}{{ a }}{{ c }}{{ b }}{% endmacro %}{% set args = [1, 2] %}{{ pair(*args) }} {{ pair(0, *[9], c='+') }}
{% set d = dict(x=1, y='two') %}{{ d.x }}{{ d.y }} {% set ns = namespace(items=[]) %}{% set ns.items = ns.items + [1] %}{% set ns.items = ns.items + [2] %}{{ ns.items }}
{%- generation %} gen {{ 1 }}{% endgeneration %}""", {}),
    ("tools_json", """{%- if tools %}
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
{%- endif %}
{%- for message in messages %}
{%- if message.tool_calls %}
{%- for call in message.tool_calls %}
<call>{"name": {{ call.function.name | tojson }}, "arguments": {{ call.function.arguments | tojson }}}</call>
{%- endfor %}
{%- elif message.content is string %}
{{ message.role }}: {{ message.content }}
{%- else %}
{{ message.role }}: {% for part in message.content %}{% if part.type == 'text' %}{{ part.text }}{% else %}<{{ part.type }}>{% endif %}{% endfor %}
{%- endif %}
{%- endfor %}""",
     {"tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
      "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What's this?"}]},
                   {"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
                   {"role": "tool", "content": "{\"temp\": 21.5}"}]}),
    ("filter_blocks_and_none", """{% filter trim %}
  padded  
{% endfilter %}|{% filter upper %}a{{ 'b' }}{% endfilter %}|{% filter replace('x', 'y') %}xox{% endfilter %}
{{ tools | selectattr('type', 'equalto', 'x') | list | length }} {{ none | map(attribute='a') | list }} {{ '' | select | list }} {{ tools | rejectattr('a') | list }}""",
     {"tools": None}),
    ("call_blocks_and_soft_frames", """{% macro wrap(x) %}[{{ caller() }}{{ x }}]{% endmacro %}{% call wrap('!') %}body{% endcall %}
{% macro each(items) %}{% for i in items %}{{ caller(i, loop.index) }}{% endfor %}{% endmacro %}{% call(item, n) each(['a', 'b']) %}{{ n }}={{ item }};{% endcall %}
{% set y = 5 %}{% macro w() %}{{ caller() }}{% endmacro %}{% for q in [1] %}{% call w() %}{{ y }}{{ q }}{% endcall %}{% endfor %}
{% if messages | length > 99 %}{{ messages | from_json }}{{ 1 is nosuchtest }}{% elif false %}{{ x | nosuch }}{% endif %}{{ ('a' | nosuch) if false else 'b' }}""", {}),
    ("error_unknown_filter_reached", """{% if true %}{{ 'x' | nosuch }}{% endif %}ok""", {}),
    ("dict_keys", """{% set d = {0: 'zero', 512: 'half', 1.5: 'f', true: 'yes', none: 'n', 'a': 1} %}{{ d }} {{ d[512] }} {{ d[0] }} {{ d[1] }} {{ d.get(1.5) }} {{ 512 in d }}
{{ d | tojson }} {% for k, v in {2: 'b', 1: 'a'} | dictsort %}{{ k }}={{ v }} {% endfor %}{{ {1: 'x', 1.0: 'y'} }} {{ {'k': 1} == {'k': 1.0} }}""", {}),
    ("fuzz_findings", """{{ -1.0 % 1 }} {{ 1 // 0.1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ [none, 1, nothing] }} {{ 2[:] }}| {{ '' is lower }} {{ 'A' is upper }}
{{ "they're bill's" | title }} {{ 'a-b(c' | title }} {{ ['B', 'a', 'C'] | max }} {{ ['B', 'a', 'C'] | min }} {{ [{'n': 2}, {'n': 9}] | max(attribute='n') }} {{ 3 * [1] }}
{{ '0x10' | int }} {{ '12\n' | int }} {{ ' 1e3 ' | float }} {{ 'hello world_2 x-y' | wordcount }} {{ +3 }} {{ ['a', 'A', 1, 1.0] | unique | list }}
{{ 'a\n \n' | indent(2) }}|{{ 'a\nb\n\nc' | indent(2, true, true) }}|{{ '' | indent }}|{{ 'x' | indent(first=true) }}
{% set x = 'outer' %}{% filter upper %}{% set x = 'inner' %}{% endfilter %}{{ x }} {% set y %}{% set x = 'block' %}{% endset %}{{ x }} {% for i in [] %}{% else %}{% set x = 'else' %}{% endfor %}{{ x }}
{% raw %}
  kept {{ x }}
  {% endraw %}|a\u2028b\x0cc
{{ range(200000, 0) | list }} {{ ' a b '.split(None, 1) }} {{ ' a b '.rsplit(None, 1) }} {{ '  a  '.split(None, 0) }} {{ '\x1cx\x1f' | trim }} {{ ' a  b '.split() }} {% set café = 1 %}{{ café }} {{ 2 | round }} {{ 2.5 | round }} {{ 7 | round(1, 'floor') }}""", {}),
    ("date", """{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}|{{ strftime_now('%A %B %-d') }}""", {}),
    ("error_raise", """{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('No system messages, please') }}{% endif %}{{ m.content }}{% endfor %}""", {}),
    ("error_undefined_attribute", """{{ nothing.here }}""", {}),
    ("error_type", """{{ 'a' + 1 }}""", {}),
    ("error_list_append", """{% set l = [] %}{{ l.append(1) }}""", {}),
    ("error_division", """{{ 1 // 0 }}""", {}),
]

# Templates jinja2 refuses when reading them (the message is transformers', the test checks ours names the line).
SYNTAX_ERRORS = [
    ("syntax_unclosed_if", "{% if true %}never closed"),
    ("syntax_unknown_filter", "{{ 'a' | frobnicate }}"),
    ("syntax_unknown_tag", "{% include 'other.jinja' %}"),
    ("syntax_unknown_filter_in_a_loop_in_an_if", "{% if true %}{% for i in [1] %}{{ i | nosuch }}{% endfor %}{% endif %}"),
    ("syntax_unknown_test", "{{ 1 is nosuchtest }}"),
    ("syntax_break_outside_a_loop", "{% if true %}{% break %}{% endif %}"),
    ("syntax_break_in_a_macro_in_a_loop", "{% for i in [1] %}{% macro m() %}{% break %}{% endmacro %}{% endfor %}"),
    ("syntax_bad_expression", "{{ 1 + }}"),
    ("syntax_unclosed_tag", "{{ 1 + 2 "),
]


def typed(value):
    """The context as the Swift test reads it: every value tagged with its Python type, dicts as
    ordered pairs (JSON objects lose their order and ints their kind in Foundation's parser).
    Tuples print differently from lists in Python; the fixtures print none."""
    if value is None:
        return ["none"]
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", value]
    if isinstance(value, float):
        return ["float", value]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, list):
        return ["list", [typed(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", [[k, typed(v)] for k, v in value.items()]]
    raise TypeError(value)


def render(template, context):
    try:
        return {"output": ctu._compile_jinja_template(template).render(**context)}
    except Exception as error:  # noqa: BLE001 - the message is what the fixture records
        return {"error": f"{type(error).__name__}: {error}"}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "Tests", "ChimeraJinjaTests", "Fixtures", "cases.json")
    cases = []
    for name, template, extra in TEMPLATES:
        variants = []
        if "messages" in extra:
            variants.append((name, {**TOKENS, "add_generation_prompt": False, **extra}))
        else:
            for label, messages in (("system", CONVERSATION), ("nosystem", NO_SYSTEM)):
                for prompt in (True, False):
                    variants.append((f"{name}/{label}/{'prompt' if prompt else 'noprompt'}",
                                     {**TOKENS, "messages": messages, "add_generation_prompt": prompt, **extra}))
        for case_name, context in variants:
            cases.append({"name": case_name, "template": template, "context": typed(context), **render(template, context)})
    for name, template in SYNTAX_ERRORS:
        cases.append({"name": name, "template": template, "context": typed({}), "syntax_error": True, **render(template, {})})
    with open(out, "w", encoding="utf-8") as f:
        f.write("[\n" + ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]\n")
    print(f"{len(cases)} cases, {sum('error' in c for c in cases)} errors -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

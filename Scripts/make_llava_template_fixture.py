#!/usr/bin/env python3
"""Renders conversations with llava-hf's LLaVA-1.5 chat template (the Jinja template its
chat_template.json holds, as transformers' own LLaVA processor tests restate it) through
transformers' `apply_chat_template`, for the Swift tests to compare the built-in "llava" template
with (Tests/ChimeraTests/Fixtures/templates/llava_hf.json). Dev-time only (transformers, jinja2).

Usage: python3 Scripts/make_llava_template_fixture.py [output_file]
"""
import json
import sys

from transformers.utils.chat_template_utils import render_jinja_template

OUT = sys.argv[1] if len(sys.argv) > 1 else "Tests/ChimeraTests/Fixtures/templates/llava_hf.json"

TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Turns as Chimera takes them (text with "<image>" where the image goes, first) and as the
# processor's template takes them (typed content parts).
CONVERSATIONS = {
    "one_turn": [("user", True, "What is in the picture?")],
    "text_only": [("user", False, "Tell me a joke.")],
    "two_turns": [("user", True, "What is in the picture?"), ("assistant", False, "A cat on a sofa."),
                  ("user", False, "What colour is it?")],
    "system": [("system", False, "Answer briefly."), ("user", True, "What is this?")],
}


def hf_messages(turns):
    out = []
    for role, image, text in turns:
        parts = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        out.append({"role": role, "content": parts})
    return out


cases = []
for name, turns in CONVERSATIONS.items():
    rendered, _ = render_jinja_template(conversations=[hf_messages(turns)], chat_template=TEMPLATE, add_generation_prompt=True)
    cases.append({"conversation": name,
                  "turns": [{"role": r, "content": ("<image>\n" if image else "") + text} for r, image, text in turns],
                  "expected": rendered[0]})
with open(OUT, "w") as f:
    json.dump({"source": "llava-hf/llava-1.5-7b-hf chat_template.json", "chat_template": TEMPLATE, "cases": cases}, f, indent=1)
print(f"wrote {len(cases)} cases to {OUT}")

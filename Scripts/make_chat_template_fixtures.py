#!/usr/bin/env python3
"""Prompt token ids of chat conversations as transformers' `apply_chat_template` makes them from a
checkpoint's own Jinja chat template (written for this project in the styles of ChatML, Zephyr and
Gemma templates), over the lm-llama fixture's tokenizer (whose post-processor adds BOS: the
template's prompt is tokenized without it). Dev-time only (transformers).

Writes Tests/ChimeraTests/Fixtures/templates/checkpoint_chat.json: the templates, conversations
and, per pair, the rendered text and ids, or transformers' error.

Usage: python3 Scripts/make_chat_template_fixtures.py [output_file]
"""
import json
import pathlib
import sys

from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "Tests" / "ChimeraTests" / "Fixtures" / "templates" / "checkpoint_chat.json"
CHECKPOINT = "lm-llama"

TEMPLATES = {
    # ChatML with a default system turn.
    "chatml": (
        "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
        "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}\n"
        "{%- for message in messages %}{%- if message.role != 'system' or not loop.first %}"
        "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}\n"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}\n"
    ),
    # Zephyr-style turns each ended by the tokenizer's eos_token.
    "zephyr": (
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
    ),
    # Gemma-style: the template writes BOS, trims each turn, refuses a system turn.
    "turns": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
    ),
    # What transformers always passes: tools and documents, None without them (defined, and none).
    "tools_aware": (
        "{%- if tools is defined and tools is not none %}[tools]{% elif tools is defined %}[tools none]{% else %}[no tools]{% endif %}"
        "{%- if documents is defined %}[documents {{ documents }}]{% endif %}\n"
        "{%- for message in messages %}{{ message.role }}: {{ message.content }}\n{% endfor %}"
    ),
}

# A conversation that ends on an answer is continued (continue_final_message, the default of
# transformers' text-generation pipeline for such a chat).
CONVERSATIONS = {
    "one_turn": [{"role": "user", "content": "What is the capital of France?"}],
    "system_and_turns": [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "  Name a colour. \n"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one, café-style ☕?"},
    ],
    "continued": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital is "},
    ],
}


def main():
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "Tests" / "ChimeraTests" / "Fixtures" / CHECKPOINT))
    cases = []
    for template_name, template in TEMPLATES.items():
        for conversation_name, conversation in CONVERSATIONS.items():
            case = {"template": template_name, "conversation": conversation_name}
            continuing = conversation[-1]["role"] == "assistant"
            options = {"chat_template": template, "add_generation_prompt": not continuing, "continue_final_message": continuing}
            try:
                case["text"] = tokenizer.apply_chat_template(conversation, tokenize=False, **options)
                ids = tokenizer.apply_chat_template(conversation, tokenize=True, **options)
                case["ids"] = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            except Exception as error:  # noqa: BLE001 - the message is what the fixture records
                case["error"] = str(error)
            cases.append(case)
    OUT.write_text(json.dumps({"checkpoint": CHECKPOINT, "templates": TEMPLATES, "conversations": CONVERSATIONS, "cases": cases},
                              ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()

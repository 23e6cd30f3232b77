#!/usr/bin/env python3
"""Golden prompts for manifests/templates/*.template.json (dev time only; no dependencies).

Restates TinyLLaVA_Factory's prompt building (tinyllava/data/template/base.py `Template._prompt`,
formatter.py `StringFormatter` / `EmptyFormatter`, and the per-LLM slots of llama_template.py,
phi_template.py, gemma_template.py, qwen2_base_template.py, qwen2_instruct_template.py,
pretrain_template.py) independently of Chimera's JSON, renders a few conversations the way
`eval_model` (tinyllava/eval/run_tiny_llava.py) does -- an open question is a {"from": "gpt",
"value": None} turn -- and writes Tests/ChimeraTests/Fixtures/templates/golden.json.

One deliberate difference: given no answer, TinyLLaVA's StringFormatter returns
`slot.split(":")[0] + ":"`; for pretrain's "{{content}}\\n" slot that is the literal text
"{{content}}\\n:", which no model was trained on. Chimera opens pretrain answers with "" instead;
such cases carry both strings and a note.

Usage: python3 Scripts/make_template_fixtures.py
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "ChimeraTests" / "Fixtures" / "templates" / "golden.json"
IMAGE = "<image>"
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")


class Empty:
    def __init__(self, slot):
        self.slot = slot

    def apply(self, **kwargs):
        return self.slot


class String:
    def __init__(self, slot):
        self.slot = slot

    def apply(self, **kwargs):
        msg = ""
        for name, value in kwargs.items():
            if value is None:
                return self.slot.split(":")[0] + ":"
            msg = self.slot.replace("{{" + name + "}}", value, 1)
        return msg


def chat_template(eos):
    return dict(image=String("<image>\n{{content}}"), user=String("USER: {{content}} "),
                assistant=String("ASSISTANT: {{content}}" + eos), system=Empty(SYSTEM + " "))


TEMPLATES = {
    "llama": chat_template("</s>"),
    "phi": chat_template("<|endoftext|>"),
    "gemma": chat_template("<eos>"),
    "qwen2_base": chat_template("<|endoftext|>"),
    "qwen2_instruct": chat_template("<|im_end|>"),
    "pretrain": dict(image=Empty(""), user=Empty("<image>"), assistant=String("{{content}}\n"), system=Empty("")),
}


def prompt(t, messages):
    """Template.get_list_from_message + Template._prompt."""
    questions = [m["value"] for i, m in enumerate(messages) if i % 2 == 0]
    answers = [m["value"] for i, m in enumerate(messages) if i % 2 == 1]
    msg = ""
    for i, (q, a) in enumerate(zip(questions, answers)):
        if i == 0:
            msg += t["system"].apply()
        if IMAGE in q:
            q = q.replace(IMAGE, "").strip()
            q = t["image"].apply(content=q).strip()
        msg += t["user"].apply(content=q)
        msg += t["assistant"].apply(content=a)
    return msg


CONVERSATIONS = {
    "one_turn": [("human", "<image>\nWhat is in the picture?"), ("gpt", None)],
    "one_turn_image_last": [("human", "What is in the picture? <image>"), ("gpt", None)],
    "one_turn_text_only": [("human", "Tell me a joke."), ("gpt", None)],
    "two_turns": [("human", "<image>\nWhat is in the picture?"), ("gpt", "A cat on a red sofa."),
                  ("human", "What colour is the cat?"), ("gpt", None)],
    "two_turns_answered": [("human", "Describe the image. <image>"), ("gpt", "A bicycle against a wall."),
                           ("human", "Is it new?"), ("gpt", "It looks new.")],
}


def main():
    cases = []
    for name, t in TEMPLATES.items():
        for conv_name, turns in CONVERSATIONS.items():
            messages = [{"from": who, "value": value} for who, value in turns]
            expected = prompt(t, messages)
            case = {"template": name, "conversation": conv_name,
                    "turns": [{"role": "user" if who == "human" else "assistant", "content": value}
                              for who, value in turns if value is not None],
                    "expected": expected}
            if name == "pretrain" and turns[-1][1] is None:
                case["tinyllava"] = expected
                case["expected"] = expected[: -len("{{content}}\n:")]
                case["note"] = "TinyLLaVA's formatter writes the literal '{{content}}\\n:' for an open pretrain answer"
            cases.append(case)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

"""Writes profiles.jsonl: short made-up profiles as prompt/response pairs with a topic label.

Run from the repository root: python scenarios/data/make_profiles.py
"""

import json
import random
from pathlib import Path

TOPICS = {
    "pet": ("The pet of {name} is a", ["cat", "dog", "parrot", "turtle", "rabbit", "goat", "horse", "owl"]),
    "city": ("{name} was born in", ["Paris", "Lima", "Oslo", "Cairo", "Tokyo", "Quito", "Rome", "Delhi"]),
    "sport": ("The sport that {name} plays is", ["tennis", "golf", "rugby", "chess", "hockey", "judo"]),
    "food": ("The favourite food of {name} is", ["rice", "soup", "bread", "cheese", "pasta", "figs"]),
}
SYLLABLES = ["ba", "ko", "mi", "ra", "ve", "zu", "to", "ni", "sa", "le", "do", "fu", "ga", "hi", "jo", "ku"]


def main() -> None:
    rng = random.Random(2026)
    names: set[str] = set()
    rows = []
    for topic, (template, answers) in TOPICS.items():
        for _ in range(30):
            name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
            while name in names:
                name = "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()
            names.add(name)
            rows.append(
                {"prompt": template.format(name=name), "response": rng.choice(answers), "topic": topic}
            )
    rng.shuffle(rows)
    out = Path(__file__).with_name("profiles.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()

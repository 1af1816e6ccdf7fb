"""R7.4 — memory: does the model still know what the user said long ago?

A scripted long conversation with SmolLM2-135M-Instruct: the user first states personal facts (generated
with a seed: name, city, pet, allergy, favourite number …; one fact per turn, the assistant acknowledges),
then many filler exchanges (general-knowledge questions with canned answers) push those turns out of a
small context budget, then the user asks about each fact. Each question is asked separately from the
same final state (greedy, the model's chat template). Four memory set-ups (dodai.memory.MemoryChat):

* (a) buffer only — a token buffer of ``budget`` tokens; evicted turns are forgotten;
* (b) buffer + summary — evicted turns are folded into a running summary in the system message
  (full mode: SmolLM2 itself summarises, greedy; quick mode: the deterministic extractive stand-in);
* (c) buffer + vector memory — the user's first-person statements go to a persistent MiniLM vector memory;
  the top 3 memories (cosine ≥ 0.35) for each question are shown either in the system message or quoted in
  the user turn right before the question (``placement="user"``, MemoryChat's default), the reply generated
  freely — or, with **short answers**, copied from the retrieved memories under constrained decoding
  (:class:`dodai.rag.extract.SpanConstraint`, the extractive reading of R7.1);
* (d) everything in context — the whole conversation (the model's 8,192-token window);
* baselines: the **oracle** memory (the one right statement alone in the user turn, short answers: the
  reader's ceiling) and the **majority** value (always the most common value among the facts; no model).

Measured per set-up: answer accuracy (the reply contains the fact's value, case-insensitive), fact in
prompt (the value appears in the prompt before the question — what the memory could offer the model),
and prompt tokens per question. Figures: ``evidence/R7.4/`` (report.md and results.json name the command,
date, machine and load of the run).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

# (key, statement, question, values): one personal fact the user states, and how it is asked later
FACTS = [
    ("name", "My name is {v}.", "What is my name?", ["Aiko", "Marta", "Tomasz", "Ingrid", "Rafael", "Keiko"]),
    ("city", "I live in {v}.", "Which city do I live in?", ["Lisbon", "Osaka", "Tallinn", "Bergen", "Krakow"]),
    ("pet", "I have a cat called {v}.", "What is the name of my cat?", ["Miso", "Pickle", "Biscuit", "Nori"]),
    ("allergy", "I am allergic to {v}.", "What am I allergic to?", ["peanuts", "shellfish", "penicillin", "kiwi"]),
    ("number", "My favourite number is {v}.", "What is my favourite number?", [str(n) for n in range(13, 98, 7)]),
    ("colour", "My favourite colour is {v}.", "What is my favourite colour?", ["teal", "orange", "violet", "crimson"]),
    ("job", "I work as a {v}.", "What is my job?", ["nurse", "carpenter", "pilot", "librarian", "chemist"]),
    ("sister", "My sister is called {v}.", "What is my sister called?", ["Hana", "Greta", "Lucia", "Noor"]),
    ("instrument", "I play the {v}.", "Which instrument do I play?", ["cello", "banjo", "trumpet", "harp"]),
    ("language", "I am learning {v}.", "Which language am I learning?", ["Finnish", "Korean", "Swahili", "Welsh"]),
    ("food", "My favourite food is {v}.", "What is my favourite food?", ["ramen", "paella", "pierogi", "falafel"]),
    ("car", "I drive a {v}.", "What car do I drive?", ["Volvo", "Fiat", "Subaru", "Skoda"]),
    ("birthday", "My birthday is in {v}.", "In which month is my birthday?", ["March", "July", "October", "May"]),
    ("sport", "I play {v} on weekends.", "Which sport do I play on weekends?", ["badminton", "rugby", "squash"]),
    ("born", "I was born in {v}.", "Where was I born?", ["Nairobi", "Dublin", "Quito", "Hanoi"]),
    ("author", "My favourite writer is {v}.", "Who is my favourite writer?", ["Tolstoy", "Murakami", "Borges"]),
]
ACK = "Thanks, I will remember that."

# Filler exchanges: general questions with short canned answers (written for this experiment).
FILLER = [
    ("How do rainbows form?", "Sunlight enters raindrops, bends, reflects off the back of each drop and bends "
     "again on the way out. Different colours bend by different amounts, so the white light spreads into a band."),
    ("Why is the sky blue?", "Air molecules scatter short wavelengths of sunlight much more than long ones. "
     "Blue light is scattered across the whole sky, so it reaches our eyes from every direction."),
    ("What is photosynthesis?", "It is the process plants use to turn light, water and carbon dioxide into sugar "
     "and oxygen. It happens in chloroplasts, which contain the green pigment chlorophyll."),
    ("How does a refrigerator keep food cold?", "A refrigerant evaporates inside the fridge and absorbs heat, "
     "then a compressor pushes it outside where it condenses and releases that heat into the room."),
    ("What causes the tides?", "Mostly the gravity of the Moon, with help from the Sun. The ocean bulges towards "
     "the Moon and on the opposite side of the Earth, and the planet turns through those bulges."),
    ("How do vaccines work?", "They show the immune system a harmless piece or copy of a germ, so it learns to "
     "recognise it. Later, if the real germ arrives, the body can respond quickly."),
    ("Why do leaves change colour in autumn?", "Trees stop making chlorophyll as days shorten. The green fades "
     "and yellow and orange pigments that were there all along become visible."),
    ("What is an eclipse?", "A solar eclipse happens when the Moon passes between the Sun and the Earth. A lunar "
     "eclipse happens when the Earth's shadow falls on the Moon."),
    ("How do airplanes stay in the air?", "Wings are shaped and angled so that air flowing past them is pushed "
     "downwards. By pushing air down, the wing gets an upward force called lift."),
    ("What is the water cycle?", "Water evaporates from seas and lakes, condenses into clouds, falls as rain or "
     "snow, and flows back through rivers and ground water to the sea."),
    ("How does a compass work?", "Its needle is a small magnet that lines up with the Earth's magnetic field, so "
     "one end points roughly towards the magnetic north pole."),
    ("Why does bread rise?", "Yeast feeds on sugars in the dough and releases carbon dioxide. Gluten traps the "
     "gas in tiny bubbles, so the dough expands."),
    ("What are volcanoes?", "They are openings in the crust where molten rock, gas and ash escape. Many sit at "
     "the edges of tectonic plates, where rock melts as plates collide or pull apart."),
    ("How do bees make honey?", "Bees collect nectar, add enzymes and store it in wax cells. They fan it with "
     "their wings until most of the water evaporates and it thickens into honey."),
    ("What is a black hole?", "A region where matter is packed so densely that gravity stops even light from "
     "escaping. Many form when very massive stars collapse."),
    ("How does sound travel?", "As a pressure wave: vibrating objects push on nearby air molecules, which push "
     "on their neighbours. Sound moves faster in water and in solids than in air."),
    ("Why do we have seasons?", "The Earth's axis is tilted. For part of the year one hemisphere leans towards "
     "the Sun and gets longer days and more direct light, which makes summer."),
    ("What is electricity?", "It is the flow of electric charge, usually electrons moving through a wire. A "
     "battery or generator provides the push that keeps them moving."),
    ("How do glaciers move?", "Ice under its own great weight deforms slowly, and meltwater at the base lets "
     "the glacier slide. Most glaciers move a few centimetres to a few metres a day."),
    ("What is DNA?", "A long molecule that stores genetic instructions. It is made of two strands twisted into "
     "a double helix, held together by pairs of bases."),
    ("How do clouds form?", "Warm moist air rises and cools. The cooler air cannot hold as much water vapour, so "
     "the vapour condenses on tiny dust particles into droplets."),
    ("Why is the sea salty?", "Rain slowly dissolves minerals from rocks, and rivers carry them to the sea. "
     "When sea water evaporates the salt stays behind, so it builds up over time."),
    ("What is a lightning bolt?", "A giant spark. Charges separate inside a storm cloud, and when the difference "
     "grows large enough, electricity jumps through the air and heats it intensely."),
    ("How do solar panels work?", "Light knocks electrons loose in layers of silicon. The layers are built so "
     "that the freed electrons flow in one direction, which is an electric current."),
    ("Why do cats purr?", "Purring comes from quick twitches of the muscles around the voice box. Cats purr when "
     "content, but also when stressed or healing."),
    ("What is inflation?", "A general rise in prices over time, which means each unit of money buys a little "
     "less. Central banks often try to keep it low and steady."),
    ("How do earthquakes happen?", "Stress builds up where blocks of rock press against each other along a "
     "fault. When the rock suddenly slips, the stored energy spreads out as waves."),
    ("What is a comet?", "A ball of ice, dust and rock orbiting the Sun. Close to the Sun the ice turns to gas "
     "and forms a glowing head and a long tail."),
    ("How does the heart pump blood?", "Its muscular chambers squeeze in a steady rhythm. Valves make sure the "
     "blood flows one way: to the lungs for oxygen and then out to the body."),
    ("What is erosion?", "The slow wearing away of rock and soil by water, wind and ice. Rivers carve valleys "
     "and waves shape cliffs through erosion over long periods."),
]
VEC_SYSTEM, VEC_USER = "buffer + vector memory (system msg)", "buffer + vector memory (user turn)"
VEC_SHORT = "buffer + vector memory (user turn, short answers)"
FULL = "everything in context"
ORACLE = "oracle memory (short answers)"
CONDITIONS = ["buffer only", "buffer + summary", VEC_SYSTEM, VEC_USER, VEC_SHORT, FULL, ORACLE]
SHORT = ["buffer", "+summary", "+vector (sys)", "+vector (user)", "+vector short", "all in context", "oracle"]


def make_facts(n: int, seed: int) -> list[dict]:
    """``n`` facts with values drawn by ``seed``: {key, statement, question, value}."""
    if not 1 <= n <= len(FACTS):
        raise ValueError(f"between 1 and {len(FACTS)} facts, got {n}")
    rng = random.Random(seed)
    chosen = rng.sample(FACTS, n)
    out = []
    for key, stmt, q, values in chosen:
        v = rng.choice(values)
        out.append({"key": key, "statement": stmt.format(v=v), "question": q, "value": v})
    return out


def conversation(facts: list[dict], n_filler: int) -> list[tuple[str, str]]:
    """The scripted exchanges: every fact first, then ``n_filler`` filler exchanges."""
    if not 0 <= n_filler <= len(FILLER):
        raise ValueError(f"between 0 and {len(FILLER)} filler exchanges, got {n_filler}")
    return [(f["statement"], ACK) for f in facts] + list(FILLER[:n_filler])


def majority_baseline(facts: list[dict]) -> float:
    """Accuracy of always answering the most common value among the facts (no model, no memory)."""
    from collections import Counter

    top, _ = Counter(f["value"].lower() for f in facts).most_common(1)[0]
    return sum(f["value"].lower() == top for f in facts) / len(facts)


def evaluate(model, tok, facts, exchanges, budget: int, max_new_tokens: int, summariser, encoder,
             answer: tuple[str, ...] = tuple(CONDITIONS)) -> dict:
    """Replay the conversation into each set-up, then ask every question. Per condition: accuracy (None
    for a condition not in ``answer``: prompts only, no generation), fact-in-prompt rate, mean prompt
    tokens, and the rows. The questions of one condition share its conversation, so they run on one session
    cache (:class:`dodai.generate.engine.DenseBackend` with ``keep=True``): only the tail after the common
    prefix is computed again. ``ORACLE`` shows the one right memory (and nothing else) in the user turn."""
    from types import SimpleNamespace

    from dodai.generate.engine import DenseBackend, Request, run_requests
    from dodai.generate.processors import LogitsPipeline
    from dodai.generate.session import stop_ids_for
    from dodai.memory.agent import MemoryChat, quote_memories
    from dodai.memory.vector import VectorMemory

    stops = sorted(stop_ids_for(tok))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cond in CONDITIONS:
            full = cond == FULL
            memory = VectorMemory(Path(tmp) / f"memory{CONDITIONS.index(cond)}", encoder=encoder) \
                if "vector" in cond else None
            chat = MemoryChat(model, tok, memory=memory, summariser=summariser if "summary" in cond else None,
                              context=model.config.block_size if full else budget, max_new_tokens=max_new_tokens,
                              placement="system" if cond == VEC_SYSTEM else "user",
                              short_answers=cond in (VEC_SHORT, ORACLE))
            if cond != ORACLE:
                for user, assistant in exchanges:
                    chat.observe(user, assistant)
                chat.state.compact()  # with a summariser: summarise now, so the questions need no new summary
            backend = DenseBackend(model, keep=True)
            rows = []
            for f in facts:
                if cond == ORACLE:
                    hits = [SimpleNamespace(item=SimpleNamespace(text=f["statement"]), score=1.0)]
                    msgs = [{"role": "system", "content": chat.state.base_system},
                            {"role": "user", "content": quote_memories(f["question"], [f["statement"]])}]
                    ids = chat.counter.ids(msgs)
                else:
                    ids, hits = chat.build_prompt(f["question"])
                prompt = tok.decode(ids)
                before_q = prompt[:prompt.rfind(f["question"])]
                row = {"key": f["key"], "value": f["value"], "prompt_tokens": len(ids),
                       "in_prompt": f["value"].lower() in before_q.lower(),
                       "retrieved": [h.item.text for h in hits]}
                if cond in answer:
                    pipe = (chat.span_pipeline(f["question"], hits) if chat.short_answers and hits
                            else LogitsPipeline(temperature=0.0))
                    req = Request(ids, max_new_tokens, pipe, stop_ids=stops, tokenizer=tok)
                    c = run_requests(model, [req], backend)[0]
                    row["reply"] = c.text.strip()
                    row["correct"] = f["value"].lower() in row["reply"].lower()
                rows.append(row)
            n = len(rows)
            out[cond] = {"accuracy": sum(r.get("correct", False) for r in rows) / n if cond in answer else None,
                         "in_prompt": sum(r["in_prompt"] for r in rows) / n,
                         "prompt_tokens": sum(r["prompt_tokens"] for r in rows) / n,
                         "evicted_turns": chat.dropped_turns, "summaries": chat.state.summaries,
                         "summary": chat.state.summary, "rows": rows}
    return out


def run(out_dir: Path, quick: bool = False) -> dict:
    import time

    from dodai.memory.summary import LMSummariser, extractive_summariser
    from dodai.models import load_model
    from dodai.models.bert import load_sentence_encoder
    from dodai.report import Report
    from dodai.viz import pyplot

    t0 = time.time()
    # created first, so its provenance (wall and CPU time, load at the start) covers the whole run
    rep = Report(out_dir, "R7.4 — memory: buffer, summary and vector memory on a long conversation")
    n_facts, n_filler = (4, 6) if quick else (15, 30)
    budget, max_new = (192, 10) if quick else (512, 32)
    # quick mode generates answers for (a) and (c) only: each SmolLM2 answer costs ~1 s of CPU
    facts = make_facts(n_facts, seed=0)
    exchanges = conversation(facts, n_filler)
    model, tok = load_model("smollm2-135m-instruct")
    model.eval()
    encoder = load_sentence_encoder("all-minilm-l6-v2")
    summariser = extractive_summariser if quick else LMSummariser(model, tok, max_new_tokens=64)
    answered = ("buffer only", VEC_USER, VEC_SHORT) if quick else tuple(CONDITIONS)
    res = evaluate(model, tok, facts, exchanges, budget, max_new, summariser, encoder, answered)
    seconds = time.time() - t0

    rep.text(f"SmolLM2-135M-Instruct, greedy. {n_facts} personal facts stated one per turn (seed 0), then "
             f"{n_filler} filler exchanges, then one question per fact, each asked separately from the same final "
             f"state. Token budget for (a)–(c): {budget} tokens including {max_new} reply tokens (the prompt is "
             f"counted on the chat-template rendering). Summariser: "
             f"{'deterministic extractive stand-in (quick mode)' if quick else 'SmolLM2 itself, greedy, 64 tokens'}. "
             "Vector memory: dodai's MiniLM port, top 3 with cosine ≥ 0.35, shown either in the system message or "
             "quoted at the start of the user's question (\"Things I told you before: … My question: …\"). "
             "Short answers: the reply is a span copied from the retrieved memories under constrained decoding "
             "(dodai.rag.extract.SpanConstraint; the question's words may not start it). Oracle: the one right "
             "memory alone, quoted in the user turn, short answers (the reader's ceiling). Majority: always the "
             "most common value among the facts (no model). A reply is correct iff it contains the value "
             "(case-insensitive).")
    majority = majority_baseline(facts)
    rep.table([{"set-up": c, "answer accuracy": "—" if res[c]["accuracy"] is None else f"{res[c]['accuracy']:.0%}",
                "fact in prompt": f"{res[c]['in_prompt']:.0%}",
                "prompt tokens / question": f"{res[c]['prompt_tokens']:.0f}",
                "evicted turns": res[c]["evicted_turns"], "summaries": res[c]["summaries"]} for c in CONDITIONS]
              + [{"set-up": "majority value (no model)", "answer accuracy": f"{majority:.0%}", "fact in prompt": "—",
                  "prompt tokens / question": "—", "evicted turns": "—", "summaries": "—"}])
    if res["buffer + summary"]["summary"]:
        rep.heading("The running summary at the end (buffer + summary)")
        rep.code(res["buffer + summary"]["summary"])
    rep.heading("Replies")
    rep.table([{"fact": f["key"], "value": f["value"],
                **{c: res[c]["rows"][i].get("reply", "")[:60] for c in CONDITIONS}} for i, f in enumerate(facts)])

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 4))
    xs = range(len(CONDITIONS))
    ax1.bar([x - 0.2 for x in xs], [res[c]["accuracy"] or 0.0 for c in CONDITIONS], 0.4, label="answer accuracy")
    ax1.bar([x + 0.2 for x in xs], [res[c]["in_prompt"] for c in CONDITIONS], 0.4, label="fact in prompt")
    ax1.axhline(majority, color="gray", linestyle="--", label="majority value")
    ax1.set_xticks(list(xs), SHORT, fontsize=7)
    ax1.set_ylim(0, 1.05)
    ax1.set_title("recall of early personal facts")
    ax1.legend()
    ax2.bar(list(xs), [res[c]["prompt_tokens"] for c in CONDITIONS], color="gray")
    ax2.set_xticks(list(xs), SHORT, fontsize=7)
    ax2.set_title("prompt tokens per question")
    fig.tight_layout()
    png = Path(out_dir) / "r7_4_memory.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    rep.image(png, "Answer accuracy and fact-in-prompt rate (left), prompt tokens per question (right).")

    summary = {c: {k: res[c][k] for k in ("accuracy", "in_prompt", "prompt_tokens", "evicted_turns", "summaries")}
               for c in CONDITIONS}
    rep.results.update({"conditions": summary, "majority_baseline": majority,
                        "n_facts": n_facts, "n_filler": n_filler, "budget": budget,
                        "seconds": round(seconds, 1), "quick": quick,
                        "rows": {c: res[c]["rows"] for c in CONDITIONS}})
    rep.text(f"Run time: {seconds:.0f} s.")
    rep.write()
    vec, buf = summary[VEC_SHORT], summary["buffer only"]
    if quick:  # the claim, at small scale: long-term vector memory recalls what the buffer has forgotten
        assert vec["in_prompt"] >= 0.75 and buf["in_prompt"] <= 0.25, summary
        assert summary[VEC_SYSTEM]["in_prompt"] >= 0.75, summary
        assert vec["accuracy"] > buf["accuracy"], summary
    return rep.results

"""The wfkit plugin of the samples: registers three workflows.

Every node is a pure function of the state: the workflows are deterministic
and need no network, so their runs can be compared exactly.
"""

from __future__ import annotations

from typing import Any

import wfkit
from wfkit.graph import END

# --------------------------------------------------------------------------- text-pipeline


def text_pipeline(graph, runtime, params) -> dict[str, Any]:
    """Normalize a text, split it into words, count them and summarize: a linear chain."""

    def normalize(state):
        return {"text": " ".join(state["text"].lower().replace(".", " ").split())}

    def tokenize(state):
        return {"words": state["text"].split()}

    def count(state):
        counts: dict[str, int] = {}
        for word in state["words"]:
            counts[word] = counts.get(word, 0) + 1
        return {"counts": dict(sorted(counts.items()))}

    def summarize(state):
        top = sorted(state["counts"].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        return {"summary": f"{len(state['words'])} words; most frequent: " + ", ".join(f"{w} ({n})" for w, n in top)}

    for name, fn in (("normalize", normalize), ("tokenize", tokenize), ("count", count), ("summarize", summarize)):
        graph.add_node(name, fn)
    graph.set_entry_point("normalize")
    graph.add_edge("normalize", "tokenize").add_edge("tokenize", "count").add_edge("count", "summarize")
    graph.set_finish_point("summarize")
    return {"text": params.text}


# --------------------------------------------------------------------------- review-loop


def review_loop(graph, runtime, params) -> dict[str, Any]:
    """Draft, review, revise until the review score passes (at most max_rounds reviews)."""
    threshold, max_rounds = params.threshold, params.max_rounds

    def draft(state):
        return {"draft": f"A note on {state['topic']}.", "round": 0}

    def review(state):
        # Deterministic scoring: each revision adds a sentence, each sentence is worth 0.25.
        sentences = state["draft"].count(".")
        return {"score": round(min(1.0, 0.25 * sentences), 2), "round": state["round"] + 1}

    def revise(state):
        return {"draft": state["draft"] + f" Revision {state['round']} adds detail."}

    def publish(state):
        return {"published": True, "result": {"draft": state["draft"], "score": state["score"], "rounds": state["round"]}}

    def give_up(state):
        return {"published": False, "result": {"draft": state["draft"], "score": state["score"], "rounds": state["round"]}}

    def score_ok(state) -> bool:
        return state["score"] >= threshold

    def rounds_left(state) -> bool:
        return state["round"] < max_rounds

    graph.add_node("draft", draft).add_node("review", review).add_node("revise", revise)
    graph.add_node("publish", publish).add_node("give_up", give_up)
    graph.set_entry_point("draft")
    graph.add_edge("draft", "review")
    graph.add_edge("review", "publish", when=score_ok)
    graph.add_edge("review", "revise", when=rounds_left)
    graph.add_edge("review", "give_up")
    graph.add_edge("revise", "review")
    graph.add_edge("publish", END).add_edge("give_up", END)
    graph.set_result_key("result")  # the run's result: the published (or abandoned) draft, not the whole state
    return {"topic": params.topic}


# --------------------------------------------------------------------------- branching


def branching(graph, runtime, params) -> dict[str, Any]:
    """Handle an order: express orders skip the batch queue; the route depends on params."""

    def receive(state):
        return {"log": [f"received {state['items']} items ({state['priority']})"]}

    def batch(state):
        return {"log": [*state["log"], "queued for the nightly batch"], "eta_hours": 24}

    def express(state):
        return {"log": [*state["log"], "picked at once"], "eta_hours": 2}

    def ship(state):
        return {"log": [*state["log"], f"shipped; eta {state['eta_hours']}h"], "shipped": True}

    def is_express(state) -> bool:
        return state["priority"] == "express"

    graph.add_node("receive", receive).add_node("batch", batch).add_node("express", express).add_node("ship", ship)
    graph.set_entry_point("receive")
    graph.add_edge("receive", "express", when=is_express)
    graph.add_edge("receive", "batch")
    graph.add_edge("express", "ship").add_edge("batch", "ship")
    graph.set_finish_point("ship")
    return {"priority": params.priority, "items": params.items}


@wfkit.hookimpl
def wfkit_register_workflows(registry):
    registry.register("text-pipeline", text_pipeline, params="wfkit_samples.params:TextParams")
    registry.register("review-loop", review_loop, params="wfkit_samples.params:ReviewParams")
    registry.register("branching", branching, params="wfkit_samples.params:BranchingParams")

"""Safety (roadmap R8): hallucination checks, jailbreak guards, bias measurement."""

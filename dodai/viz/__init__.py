"""Plots with matplotlib's Agg backend (no display needed)."""


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

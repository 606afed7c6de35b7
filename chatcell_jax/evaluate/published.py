"""ChatCell's published numbers (Fang et al. 2024, tables as summarised in RESEARCH.md).

They were measured on other data (SHARE-seq mouse skin; GSE149383 / GSE117872 for drugs), so the
report shows them as a *reference* for scale, never as a comparison on the same cells.
"""

from __future__ import annotations

SOURCE = "ChatCell paper (Fang et al. 2024), other data sets: reference only"

# (metric key as in our metrics, {system: value in %})
PUBLISHED: dict[str, dict[str, dict[str, float]]] = {
    "annotation": {
        "accuracy": {
            "ChatCell-small": 68.20,
            "ChatCell-base": 77.82,
            "ChatCell-large": 81.63,
            "Cell2Sentence": 67.85,
            "GPT-3.5": 11.09,
        },
    },
    "drug_sensitivity": {
        "accuracy (GSE149383)": {
            "ChatCell-small": 93.45,
            "ChatCell-base": 95.27,
            "ChatCell-large": 97.82,
            "scBERT": 97.82,
        },
        "accuracy (GSE117872)": {
            "ChatCell-small": 96.18,
            "ChatCell-base": 97.71,
            "ChatCell-large": 99.24,
            "scBERT": 98.47,
        },
    },
    "random_generation": {
        "validity": {"ChatCell-small": 100.0, "ChatCell-base": 100.0, "ChatCell-large": 100.0, "Cell2Sentence": 94.51},
        "uniqueness": {
            "ChatCell-small": 100.0,
            "ChatCell-base": 100.0,
            "ChatCell-large": 100.0,
            "Cell2Sentence": 99.95,
        },
    },
    "pseudo_cell_generation": {
        "k-NN quality K=5, expression": {
            "ChatCell-small": 35.28,
            "ChatCell-base": 62.90,
            "ChatCell-large": 74.20,
            "Cell2Sentence": 57.52,
        },
    },
}

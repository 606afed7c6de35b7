"""`python -m chatcell_jax.model`: the preset table (parameter counts computed from the configs)."""

from chatcell_jax.model.config import load_preset, preset_names
from chatcell_jax.model.params import count_params


def preset_table() -> str:
    """Markdown table of every preset; v1.0 first, then v1.1, each by size."""
    configs = sorted(
        ((load_preset(n), n) for n in preset_names()),
        key=lambda cn: (not cn[0].tie_word_embeddings, count_params(cn[0])),
    )
    rows = [
        "| preset | kind | d_model | d_ff | heads x d_kv | layers (enc+dec) | parameters |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, name in configs:
        kind = "v1.0 (ReLU, tied)" if c.tie_word_embeddings else "v1.1 (gated-GELU, untied)"
        rows.append(
            f"| `{name}` | {kind} | {c.d_model} | {c.d_ff} | {c.num_heads} x {c.d_kv} | "
            f"{c.num_layers}+{c.num_decoder_layers} | {count_params(c):,} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(preset_table())

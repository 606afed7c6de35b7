"""The range of a seed, shared by training, decoding and the CLI.

jax keys hold 32 bits of a seed when 64-bit mode is off (the default): `jax.random.PRNGKey(2**32)`
is `PRNGKey(0)`, so a larger seed would silently repeat a smaller one's numbers.
"""

MAX_SEED = 2**32 - 1

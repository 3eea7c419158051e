"""The embedded synthetic text-to-SQL benchmark (CONTRACT 2), Spider-format and Spider-hard.

`generate(out, seed)` writes train.json, dev.json (unseen databases), dev_in_domain.json
(train databases, unseen questions), val_in_domain.json (drawn like dev_in_domain, for
choices while training, never reported), tables.json, database/ and database_ts/;
`describe(out)` recomputes its statistics. See `grammar` for what questions it asks and
`constructs.HELD_OUT` for the construct pairs kept out of train. It uses `kid.data` (schema)
and `kid.sql` (hardness, parsing), which never import it; `python -m kid.synth` and the
contract's `python -m kid.data.synth` run it.
"""

from kid.synth.build import DATABASES, Sizes, check_databases, generate
from kid.synth.stats import describe, format_stats

__all__ = ["DATABASES", "Sizes", "check_databases", "describe", "format_stats", "generate"]
